"""Read and check a Common Voice release (any version from 5.1 on) for one language.

Common Voice ships one folder a language: `clips/*.mp3` and tab-separated files, one row a clip.
Columns are found by header name (releases add columns over time), the files are read with
quoting off (sentences hold unbalanced quote characters) and with a UTF-8 BOM or CRLF line ends
tolerated, since hand-edited releases have both.
"""

from __future__ import annotations

import csv
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
}

DOWNLOAD_HINT = (
    "Download 'Common Voice Corpus 7.0', language Assamese, from "
    "https://commonvoice.mozilla.org/en/datasets (cv-corpus-7.0-2021-07-21-as.tar.gz, "
    "free with an e-mail address) and pass the tarball with --cv_tarball FILE, or the extracted "
    "folder that holds clips/ and train.tsv with --cv_root DIR.")


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

    def format(self, lang: str | None = None, version: str | None = None) -> str:
        lines = [f"Common Voice release at {self.root}",
                 f"  {'file':<16}{'clips':>8}{'speakers':>10}{'missing audio':>15}"]
        for s in self.splits:
            lines.append(f"  {SPLIT_FILES[s.name]:<16}{s.rows:>8}{s.speakers:>10}"
                         f"{len(s.missing_clips):>15}")
        known = KNOWN_RELEASES.get((lang or "", version or ""))
        if known:
            lines.append(f"  published CV {version} '{lang}' sizes: "
                         + ", ".join(f"{k} {v}" for k, v in known.items()))
        for s in self.splits:
            for clip in s.missing_clips[:5]:
                lines.append(f"  warning: {SPLIT_FILES[s.name]} lists {clip}, not found in clips/")
            if len(s.missing_clips) > 5:
                lines.append(f"  warning: ... and {len(s.missing_clips) - 5} more missing in "
                             f"{SPLIT_FILES[s.name]}")
        lines += [f"  warning: {p}" for p in self.problems]
        return "\n".join(lines)


def check_release(root: Path) -> ReleaseCheck:
    """Check files, headers and counts of an extracted release; raise ReleaseError if unusable."""
    root = Path(root)
    if not root.is_dir():
        raise ReleaseError(f"Common Voice release folder {root} does not exist. {DOWNLOAD_HINT}")
    absent = [SPLIT_FILES[n] for n in REQUIRED_FILES if not (root / SPLIT_FILES[n]).is_file()]
    if not (root / "clips").is_dir():
        absent.insert(0, "clips/")
    if absent:
        raise ReleaseError(
            f"{root} is not a Common Voice release folder: missing {', '.join(absent)}. "
            f"{DOWNLOAD_HINT}")
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
    return ReleaseCheck(root=root, splits=splits, problems=problems)


def find_release_root(top: Path, lang: str) -> Path:
    """The folder holding clips/ and train.tsv: `top` itself, `top/lang`, or `top/*/lang`."""
    top = Path(top)
    candidates = [top, top / lang, *sorted(top.glob(f"*/{lang}"))]
    for candidate in candidates:
        if (candidate / "clips").is_dir() and (candidate / "train.tsv").is_file():
            return candidate
    raise ReleaseError(f"no Common Voice '{lang}' release (clips/ and train.tsv) under {top}. "
                       f"{DOWNLOAD_HINT}")


def extract_release(tarball: Path, dest: Path, lang: str) -> Path:
    """Unpack a release tarball into `dest` once (a marker records completion); return its root."""
    tarball, dest = Path(tarball), Path(dest)
    if not tarball.is_file():
        raise ReleaseError(f"Common Voice tarball {tarball} does not exist. {DOWNLOAD_HINT}")
    marker = dest / f".extracted-{tarball.name}"
    if not marker.is_file():
        dest.mkdir(parents=True, exist_ok=True)
        try:
            with tarfile.open(tarball) as archive:
                members = archive.getmembers()
                for member in progress(members, desc=f"extracting {tarball.name}", unit="file"):
                    # The 'data' filter refuses absolute paths, '..', links out of dest and devices.
                    archive.extract(member, dest, filter="data")
        except (tarfile.TarError, EOFError, OSError) as err:
            raise ReleaseError(f"cannot extract {tarball}: {err}. Is the download complete?") from err
        marker.write_text(f"{tarball.resolve()}\n")
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
