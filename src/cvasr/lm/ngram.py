"""Stage 3's word n-gram language model, estimated by KenLM.

The text is the training transcripts, plus any extra text the user gives (normalised with the
language's normaliser, so it spells words as the transcripts do), minus every dev and test
sentence: a line equal to one, or holding one as a run of whole words, is removed and counted,
since an LM that has seen the evaluation sentences would report accuracy no user gets.
KenLM's `lmplz` estimates a modified Kneser-Ney model (`--discount_fallback` for texts too small
for the closed-form discounts), `build_binary` makes the binary the decoder loads quickly.

Outputs in the LM dir: `text` (the LM text), `lm.arpa`, `lm.bin`, `unigrams.txt` (the LM's
words, which the decoder needs to tell in-vocabulary from new words), `report.json`, `lmplz.log`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cvasr.data.kaldi import iter_table

#: the files of an LM dir
TEXT, ARPA, BINARY, UNIGRAMS, REPORT = "text", "lm.arpa", "lm.bin", "unigrams.txt", "report.json"
TOOLS = ("lmplz", "build_binary")


class LMError(RuntimeError):
    """The LM cannot be built: the message says what is missing."""


def find_tool(name: str) -> str:
    """A KenLM program: on PATH, or beside this Python (make setup puts them in .venv/bin)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        raise LMError(f"KenLM's {name} not found on PATH or in {Path(sys.executable).parent}: "
                      "run `make setup` (it builds lmplz and build_binary from PyPI's kenlm "
                      "source package), or pass --use_lm false")
    return found


class EvalSentences:
    """The dev and test sentences, to find LM text lines that are or contain one."""

    def __init__(self, sentences: Iterable[str]) -> None:
        self.exact: set[str] = set()
        self._by_first_word: dict[str, list[tuple[str, ...]]] = {}
        for sentence in sentences:
            words = tuple(sentence.split())
            if not words:
                continue
            self.exact.add(" ".join(words))
            self._by_first_word.setdefault(words[0], []).append(words)

    def __len__(self) -> int:
        return len(self.exact)

    def match(self, line: str) -> str | None:
        """"exact" if the line is an evaluation sentence, "contains" if it holds one as a run of
        whole words, else None."""
        if line in self.exact:
            return "exact"
        words = line.split()
        for i, word in enumerate(words):
            for candidate in self._by_first_word.get(word, ()):
                if tuple(words[i:i + len(candidate)]) == candidate:
                    return "contains"
        return None


@dataclass
class LMTextReport:
    train_lines: int = 0
    extra_lines: int = 0
    extra_empty: int = 0  # extra lines that normalise to nothing
    removed_exact: int = 0  # lines equal to a dev or test sentence
    removed_containing: int = 0  # lines holding a dev or test sentence
    kept_lines: int = 0
    words: int = 0
    eval_sentences: int = 0

    @property
    def removed(self) -> int:
        return self.removed_exact + self.removed_containing


def write_lm_text(out: Path, train_texts: Iterable[Path], eval_texts: Iterable[Path],
                  extra_texts: Iterable[Path] = (),
                  normalize: Callable[[str], str] | None = None) -> LMTextReport:
    """Write the LM text (one sentence a line) to `out`. Train and eval texts are Kaldi text
    files (already normalised); extra texts are plain text, one sentence or paragraph a line,
    normalised with `normalize` here."""
    evals = EvalSentences(entry.value for path in eval_texts for entry in iter_table(path))
    report = LMTextReport(eval_sentences=len(evals))

    def lines() -> Iterator[tuple[str, str]]:
        for path in train_texts:
            for entry in iter_table(path):
                yield "train", entry.value
        for path in extra_texts:
            with open(path, encoding="utf-8", errors="replace") as handle:
                for raw in handle:
                    yield "extra", normalize(raw) if normalize else " ".join(raw.split())

    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    with open(partial, "w", encoding="utf-8") as handle:
        for source, line in lines():
            line = " ".join(line.split())
            if source == "train":
                report.train_lines += 1
            else:
                report.extra_lines += 1
                if not line:
                    report.extra_empty += 1
                    continue
            if not line:
                continue
            found = evals.match(line)
            if found == "exact":
                report.removed_exact += 1
                continue
            if found == "contains":
                report.removed_containing += 1
                continue
            handle.write(line + "\n")
            report.kept_lines += 1
            report.words += len(line.split())
    os.replace(partial, out)
    return report


def _memory_for(text: Path) -> str:
    """lmplz's -S: it takes 80% of the machine's memory by default, and zeroing that much took
    9.5 s for a 3-line text here. Enough for the text's n-grams (it spills to disk beyond)."""
    size = Path(text).stat().st_size
    return f"{max(256, min(32_768, 40 * size // 2**20))}M"


@dataclass
class LMReport:
    order: int
    text: LMTextReport
    vocabulary: int
    ngrams: dict[str, int] = field(default_factory=dict)
    discount_fallback_used: bool = False
    files: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        t = self.text
        extra = f" + {t.extra_lines - t.extra_empty} extra" if t.extra_lines else ""
        return (f"word {self.order}-gram LM: {t.kept_lines} lines ({t.train_lines} train"
                f"{extra}), {t.words} words, vocabulary {self.vocabulary}; removed {t.removed} "
                f"line(s) holding a dev/test sentence ({t.removed_exact} equal to one, "
                f"{t.removed_containing} containing one)"
                + ("; lmplz fell back to fixed discounts (text too small for Kneser-Ney's "
                   "closed-form ones)" if self.discount_fallback_used else ""))


def _arpa_counts(arpa: Path) -> dict[str, int]:
    counts = {}
    with open(arpa, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("ngram "):
                n, _, count = line[6:].strip().partition("=")
                counts[n] = int(count)
            elif line.startswith("\\1-grams:"):
                break
    return counts


def _unigrams(arpa: Path) -> list[str]:
    """The words of an ARPA model (without <s>, </s>, <unk>)."""
    words, inside = [], False
    with open(arpa, encoding="utf-8") as handle:
        for line in handle:
            line = line.rstrip("\n")
            if line == "\\1-grams:":
                inside = True
            elif inside and (line.startswith("\\") or not line):
                if words or line.startswith("\\"):
                    break
            elif inside:
                word = line.split("\t")[1]
                if word not in ("<s>", "</s>", "<unk>"):
                    words.append(word)
    return words


def _run_tool(cmd: list[str], out: Path, log: Path) -> None:
    """A KenLM program writing `out` (given as its last argument, under a temporary name,
    renamed when it succeeds), its output appended to `log`."""
    partial = out.with_name(out.name + ".partial")
    with open(log, "a", encoding="utf-8") as handle:
        handle.write("# " + " ".join([*cmd, str(partial)]) + "\n")
        handle.flush()
        status = subprocess.run([*cmd, str(partial)], stdout=handle,
                                stderr=subprocess.STDOUT).returncode
    if status != 0:
        raise LMError(f"{Path(cmd[0]).name} failed (exit {status}) writing {out}; see {log}")
    os.replace(partial, out)


def build_lm(lm_dir: Path, train_texts: Iterable[Path], eval_texts: Iterable[Path],
             extra_texts: Iterable[Path] = (), order: int = 4,
             normalize: Callable[[str], str] | None = None) -> LMReport:
    """The LM text, ARPA, binary and unigram list in `lm_dir`; see the module docstring."""
    if order < 1:
        raise ValueError(f"LM order must be at least 1, got {order}")
    lmplz, build_binary = find_tool("lmplz"), find_tool("build_binary")
    for path in [*train_texts, *eval_texts, *extra_texts]:
        if not Path(path).is_file():
            raise FileNotFoundError(f"LM text input {path} does not exist")
    lm_dir = Path(lm_dir)
    lm_dir.mkdir(parents=True, exist_ok=True)
    text_report = write_lm_text(lm_dir / TEXT, train_texts, eval_texts, extra_texts, normalize)
    if text_report.kept_lines == 0:
        raise LMError(f"no LM text left in {lm_dir / TEXT}: the training transcripts are empty "
                      "or every line holds a dev/test sentence")
    log = lm_dir / "lmplz.log"
    log.write_text("", encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="cvasr-lmplz-", dir=lm_dir) as tmp:
        _run_tool([lmplz, "-o", str(order), "--discount_fallback", "-S",
                   _memory_for(lm_dir / TEXT), "-T", tmp, "--text", str(lm_dir / TEXT),
                   "--arpa"], lm_dir / ARPA, log)
    _run_tool([build_binary, str(lm_dir / ARPA)], lm_dir / BINARY, log)
    unigrams = _unigrams(lm_dir / ARPA)
    (lm_dir / UNIGRAMS).write_text("".join(w + "\n" for w in unigrams), encoding="utf-8")
    report = LMReport(order=order, text=text_report, vocabulary=len(unigrams),
                      ngrams=_arpa_counts(lm_dir / ARPA),
                      discount_fallback_used="Substituting fallback discounts" in log.read_text(
                          encoding="utf-8", errors="replace"),
                      files={name: name for name in (TEXT, ARPA, BINARY, UNIGRAMS)})
    data = asdict(report)
    data["text"]["removed"] = text_report.removed
    (lm_dir / REPORT).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n",
                                 encoding="utf-8")
    return report


def read_unigrams(lm_dir: Path) -> list[str]:
    return (Path(lm_dir) / UNIGRAMS).read_text(encoding="utf-8").split()
