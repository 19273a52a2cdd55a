"""Read and check a Common Voice release (any version from 5.1 on) for one language.

Common Voice ships one folder a language: `clips/*.mp3` and tab-separated files, one row a clip.
Columns are found by header name (releases add columns over time), the files are read with
quoting off (sentences hold unbalanced quote characters) and with a UTF-8 BOM or CRLF line ends
tolerated, since hand-edited releases have both.
"""

from __future__ import annotations

import csv
import os
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from cvasr.progress import progress

#: The header of every tsv in Common Voice 7.0 (later releases add columns after these).
CV7_HEADER = ("client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender",
              "accent", "locale", "segment")
REQUIRED_COLUMNS = ("client_id", "path", "sentence")
SPLIT_FILES = {
    "train": "train.tsv",
    "dev": "dev.tsv",
    "test": "test.tsv",
    "validated": "validated.tsv",
    "invalidated": "invalidated.tsv",
    "other": "other.tsv",
}
#: Files the recipe cannot work without; invalidated/other are optional.
REQUIRED_FILES = ("train", "dev", "test", "validated")

#: Published sizes of releases the recipe has anchors for: (language, version) -> rows per tsv.
KNOWN_RELEASES = {
    ("as", "7.0"): {"train": 508, "dev": 116, "test": 281, "validated": 905, "invalidated": 45},
    ("as", "8.0"): {"train": 508, "dev": 116, "test": 294},
}
#: The release a language's published results refer to, named in the download hint when the
#: user's own release cannot be told.
REFERENCE_RELEASES = {"as": ("7.0", "2021-07-21")}
DATASETS_URL = "https://commonvoice.mozilla.org/en/datasets"

#: `cv-corpus-<version>-<date>` as Common Voice names its release folders and tarballs, e.g.
#: cv-corpus-7.0-2021-07-21, cv-corpus-5.1-2020-06-22, cv-corpus-19.0-delta-2024-09-13.
_RELEASE_NAME = re.compile(
    r"^cv-corpus-(?P<version>\d+\.\d+(?:-delta)?)-(?P<date>\d{4}-\d{2}-\d{2})(?:-(?P<lang>[A-Za-z0-9-]+?))?"
    r"(?:\.tar(?:\.gz)?|\.tgz)?$")


def release_version(root: Path) -> str | None:
    """The Common Voice version of a release, read from its folder names
    (`cv-corpus-<version>-<date>/<lang>`, or a folder named like the tarball); None if they do
    not say."""
    for part in (Path(root).name, Path(root).parent.name):
        match = _RELEASE_NAME.match(part)
        if match:
            return match.group("version")
    return None


def download_hint(lang: str | None = None, version: str | None = None) -> str:
    """Where to get a release for `lang`, and how to pass it to the recipe."""
    where = f"from {DATASETS_URL} (free with an e-mail address)"
    how = ("and pass the tarball with --cv_tarball FILE, or the extracted folder that holds "
           "clips/ and train.tsv with --cv_root DIR.")
    if lang and not version and lang in REFERENCE_RELEASES:
        version, date = REFERENCE_RELEASES[lang]
        return (f"Download 'Common Voice Corpus {version}', language '{lang}', {where} "
                f"(cv-corpus-{version}-{date}-{lang}.tar.gz) {how}")
    corpus = f"'Common Voice Corpus {version}'" if version else "a 'Common Voice Corpus' release (5.1 or later)"
    language = f"language '{lang}'" if lang else "your language"
    return f"Download {corpus}, {language}, {where} {how}"


class ReleaseError(Exception):
    """A release is unusable: the message says what is missing and where."""


@dataclass
class Table:
    path: Path
    header: list[str]
    rows: list[dict[str, str]]
    line_numbers: list[int] = field(default_factory=list)  # the file line of each row
    problems: list[tuple[int, str]] = field(default_factory=list)  # (line, what), line skipped


def read_tsv(path: Path) -> Table:
    """Read a Common Voice tsv by its header; malformed lines are reported, not dropped silently."""
    path = Path(path)
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise ReleaseError(f"{path} is empty: it has no header line") from None
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise ReleaseError(
                f"{path}:1: header lacks column(s) {', '.join(missing)}; "
                f"a Common Voice tsv starts with: {' '.join(CV7_HEADER)}")
        table = Table(path, header, [], [])
        for line_no, fields in enumerate(reader, start=2):
            if fields and fields[-1].endswith("\r"):
                fields[-1] = fields[-1][:-1]
            if not fields or fields == [""]:
                continue
            if len(fields) < len(header):
                # Trailing empty optional columns are sometimes trimmed; pad them.
                fields = fields + [""] * (len(header) - len(fields))
            if len(fields) > len(header):
                table.problems.append((line_no, f"{len(fields)} fields for {len(header)} columns"))
                continue
            table.rows.append(dict(zip(header, fields)))
            table.line_numbers.append(line_no)
    return table


@dataclass
class SplitSummary:
    name: str
    rows: int
    speakers: int
    missing_clips: list[str]


@dataclass
class ReleaseCheck:
    root: Path
    splits: list[SplitSummary]
    problems: list[str]
    version: str | None = None  # from the folder names, when they say

    def format(self, lang: str | None = None, version: str | None = None) -> str:
        """The table of files and counts; with the published sizes where the recipe knows them
        (`version` defaults to the one read from the folder names)."""
        version = version or self.version
        about = f" (Common Voice {version}" + (f", '{lang}')" if lang else ")") if version else ""
        lines = [f"Common Voice release at {self.root}{about}",
                 f"  {'file':<16}{'clips':>8}{'speakers':>10}{'missing audio':>15}"]
        for s in self.splits:
            lines.append(f"  {SPLIT_FILES[s.name]:<16}{s.rows:>8}{s.speakers:>10}"
                         f"{len(s.missing_clips):>15}")
        known = KNOWN_RELEASES.get((lang or "", version or ""))
        if known:
            lines.append(f"  published CV {version} '{lang}' sizes: "
                         + ", ".join(f"{k} {v}" for k, v in known.items()))
            rows = {s.name: s.rows for s in self.splits}
            differ = [f"{k} {rows[k]} (published {v})" for k, v in known.items()
                      if k in rows and rows[k] != v]
            if differ:
                lines.append("  note: this release differs from the published sizes: "
                             + ", ".join(differ))
        for s in self.splits:
            for clip in s.missing_clips[:5]:
                lines.append(f"  warning: {SPLIT_FILES[s.name]} lists {clip}, not found in clips/")
            if len(s.missing_clips) > 5:
                lines.append(f"  warning: ... and {len(s.missing_clips) - 5} more missing in "
                             f"{SPLIT_FILES[s.name]}")
        lines += [f"  warning: {p}" for p in self.problems]
        return "\n".join(lines)


def check_release(root: Path, lang: str | None = None) -> ReleaseCheck:
    """Check files, headers and counts of an extracted release; raise ReleaseError if unusable
    (the message says where to get a release for `lang`)."""
    root = Path(root)
    version = release_version(root)
    if not root.is_dir():
        raise ReleaseError(f"Common Voice release folder {root} does not exist. "
                           f"{download_hint(lang, version)}")
    absent = [SPLIT_FILES[n] for n in REQUIRED_FILES if not (root / SPLIT_FILES[n]).is_file()]
    if not (root / "clips").is_dir():
        absent.insert(0, "clips/")
    if absent:
        raise ReleaseError(
            f"{root} is not a Common Voice release folder: missing {', '.join(absent)}. "
            f"{download_hint(lang, version)}")
    present = {p.name for p in (root / "clips").iterdir()}
    splits, problems = [], []
    for name, filename in SPLIT_FILES.items():
        if not (root / filename).is_file():
            continue
        table = read_tsv(root / filename)
        problems += [f"{filename}:{line}: {what}" for line, what in table.problems]
        if name in ("train", "dev", "test") and not table.rows:
            raise ReleaseError(f"{root / filename} has a header but no clips")
        splits.append(SplitSummary(
            name=name, rows=len(table.rows),
            speakers=len({r["client_id"] for r in table.rows}),
            missing_clips=[r["path"] for r in table.rows if r["path"] not in present]))
    return ReleaseCheck(root=root, splits=splits, problems=problems, version=version)


def find_release_root(top: Path, lang: str) -> Path:
    """The folder holding clips/ and train.tsv: `top` itself, `top/lang`, or `top/*/lang`."""
    top = Path(top)
    candidates = [top, top / lang, *sorted(top.glob(f"*/{lang}"))]
    for candidate in candidates:
        if (candidate / "clips").is_dir() and (candidate / "train.tsv").is_file():
            return candidate
    raise ReleaseError(f"no Common Voice '{lang}' release (clips/ and train.tsv) under {top}. "
                       f"{download_hint(lang)}")


def _tarball_identity(tarball: Path) -> str:
    """What the extraction marker records: the file, its size and modification time, so another
    tarball of the same name is unpacked again."""
    st = tarball.stat()
    return f"{tarball.resolve()}\nsize {st.st_size} mtime_ns {st.st_mtime_ns}\n"


def extract_release(tarball: Path, dest: Path, lang: str) -> Path:
    """Unpack a release tarball into `dest` once (a marker records completion); return its root."""
    tarball, dest = Path(tarball), Path(dest)
    if not tarball.is_file():
        raise ReleaseError(f"Common Voice tarball {tarball} does not exist. "
                           f"{download_hint(lang, release_version(Path(tarball.name)))}")
    marker = dest / f".extracted-{tarball.name}"
    identity = _tarball_identity(tarball)
    if not (marker.is_file() and marker.read_text() == identity):
        marker.unlink(missing_ok=True)
        dest.mkdir(parents=True, exist_ok=True)
        try:
            with tarfile.open(tarball) as archive:
                members = archive.getmembers()
                for member in progress(members, desc=f"extracting {tarball.name}", unit="file"):
                    # The 'data' filter refuses absolute paths, '..', links out of dest and devices.
                    archive.extract(member, dest, filter="data")
        except tarfile.FilterError as err:
            raise ReleaseError(f"refusing to extract {tarball}: unsafe archive member "
                               f"({err}); a Common Voice release holds only plain files under "
                               "one folder") from err
        except (tarfile.TarError, EOFError) as err:
            raise ReleaseError(f"cannot extract {tarball}: {err}. Is the download complete?") from err
        except OSError as err:
            raise ReleaseError(f"cannot extract {tarball} into {dest}: "
                               f"{err.strerror or err}") from err
        partial = marker.with_name(marker.name + ".partial")
        partial.write_text(identity)
        os.replace(partial, marker)
    return find_release_root(dest, lang)


@dataclass(frozen=True)
class ClipRow:
    """One tsv row of a clip, with where it came from (for messages and the prep report)."""

    source: str  # "file:line"
    client_id: str
    path: str
    sentence: str
    gender: str


TRAIN_SETS = ("train", "validated")


def _clip_rows(root: Path, name: str) -> tuple[list[ClipRow], list[tuple[str, str]]]:
    """The rows of one tsv, and its malformed lines as (file:line, what)."""
    table = read_tsv(Path(root) / SPLIT_FILES[name])
    rows = [ClipRow(source=f"{SPLIT_FILES[name]}:{line}", client_id=r["client_id"], path=r["path"],
                    sentence=r["sentence"], gender=r.get("gender", ""))
            for line, r in zip(table.line_numbers, table.rows)]
    return rows, [(f"{SPLIT_FILES[name]}:{line}", what) for line, what in table.problems]


def load_splits(root: Path, train_set: str = "train", exclude_eval_speakers: bool = False,
                ) -> tuple[dict[str, list[ClipRow]], dict[str, list[tuple[str, str]]]]:
    """train/dev/test rows of a release, and per split the malformed lines (file:line, what).

    `train_set="train"` takes CV's own train.tsv (what published CV 7.0 results used);
    `"validated"` takes validated.tsv minus every dev and test clip (ESPnet's convention), and
    with `exclude_eval_speakers` also minus every clip of a dev or test speaker.
    """
    if train_set not in TRAIN_SETS:
        raise ValueError(f"unknown train set {train_set!r}; choose from {', '.join(TRAIN_SETS)}")
    splits: dict[str, list[ClipRow]] = {}
    malformed: dict[str, list[tuple[str, str]]] = {}
    for name in ("dev", "test"):
        splits[name], malformed[name] = _clip_rows(root, name)
    if train_set == "train":
        splits["train"], malformed["train"] = _clip_rows(root, "train")
    else:
        validated, malformed["train"] = _clip_rows(root, "validated")
        held_out = {r.path for name in ("dev", "test") for r in splits[name]}
        held_out_speakers = {r.client_id for name in ("dev", "test") for r in splits[name]}
        splits["train"] = [r for r in validated if r.path not in held_out
                           and not (exclude_eval_speakers and r.client_id in held_out_speakers)]
    order = ("train", "dev", "test")
    return {n: splits[n] for n in order}, {n: malformed[n] for n in order}
