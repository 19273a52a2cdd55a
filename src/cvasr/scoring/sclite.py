"""WER/CER scoring whose numbers are identical to NIST sclite's.

Why: ESPnet recipes report sclite's numbers, but sclite is a C binary that
is not always installed (Debian package ``sctk``).  This module scores the
same trn files exactly as sclite does, so ``result.txt`` holds the numbers
sclite would print with or without the binary; ``engine="sclite"`` runs the
real binary instead, and the tests check one against the other.

sclite's behaviour, found by running sclite 2.10 (SCTK 2.4.10, Debian):

* Alignment: Levenshtein DP, match 0, substitution 4, insertion 3, deletion
  3.  Ties are settled by tracing back from the end, preferring at each cell
  the diagonal, then an insertion, then a deletion (ref ``a b`` / hyp
  ``b a`` -> D C I; ref ``a x y`` / hyp ``p q a`` -> S S S, not I I C D D).
* Tokens are split on ASCII white space and compared case-insensitively for
  A-Z only; the dump prints correct words lower case, errors upper case.
* The speaker is the trn id up to its first ``-`` (if it has none, up to
  its first ``_``), lower-cased; speakers and utterances keep file order.
* Percentages are ``n / d * 100`` rounded half up to one decimal.  The
  Mean/S.D./Median rows mishandle speakers without reference words; that
  is reproduced (see ``_sclite_drop_empty``).
* Table columns widen to fit their widest cell; dump columns are measured
  in UTF-8 bytes and dump lines wrap before 1000 bytes.

We write trn ids as ``(SPK-UTTID)`` like ESPnet's ``asr.sh``; SPK comes from
utt2spk, else from the uttid by sclite's rule above (else the whole uttid).
The speaker we report is what sclite derives from that id.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from cvasr.data.kaldi import iter_table, read_table

__all__ = [
    "SUB_COST",
    "INS_COST",
    "DEL_COST",
    "SPACE_TOKEN",
    "SCLITE_DEFAULT_PATH",
    "SCliteNotFoundError",
    "AlignOp",
    "Counts",
    "UttScore",
    "Summary",
    "align",
    "count_errors",
    "ascii_lower",
    "ascii_upper",
    "sclite_speaker",
    "read_text",
    "read_utt2spk",
    "tokenize",
    "write_trn",
    "format_result",
    "find_sclite",
    "run_sclite",
    "parse_sclite_counts",
    "score",
]

SUB_COST = 4
INS_COST = 3
DEL_COST = 3
SPACE_TOKEN = "<space>"
SCLITE_DEFAULT_PATH = "/usr/lib/sctk/bin/sclite"
#: how many entries each section of the confusion report lists
TOP_CONFUSIONS = 50

_ASCII_WS = re.compile(r"[ \t\n\r\f\v]+")
_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
# tokens that sclite's trn reader does not take literally (optional deletion,
# alternations, comments, the null word); scoring them is not guaranteed equal
_SPECIAL = re.compile(r"[(){}]|^@$|^;")


class SCliteNotFoundError(RuntimeError):
    """The sclite binary is not installed."""


def ascii_lower(s: str) -> str:
    """Lower-case A-Z only, as sclite does."""
    return s.translate(_LOWER)


def ascii_upper(s: str) -> str:
    """Upper-case a-z only, as sclite does."""
    return s.translate(_UPPER)


def _blen(s: str) -> int:
    return len(s.encode("utf-8"))


# --------------------------------------------------------------------------
# alignment


@dataclass(frozen=True, slots=True)
class AlignOp:
    """One column of an alignment: op is C, S, D or I."""

    op: str
    ref: str | None
    hyp: str | None


def align(ref: Sequence[str], hyp: Sequence[str]) -> list[AlignOp]:
    """Align like sclite: costs sub 4, ins 3, del 3; ties go diagonal, insertion, deletion
    (choosing from the end backwards).  Tokens are compared ASCII-case-insensitively."""
    r = [ascii_lower(t) for t in ref]
    h = [ascii_lower(t) for t in hyp]
    n, m = len(r), len(h)
    # back pointers: 0 diagonal, 1 insertion (hyp token), 2 deletion (ref token)
    back: list[bytearray] = []
    prev = [INS_COST * j for j in range(m + 1)]
    back.append(bytearray([1]) * (m + 1))
    for i in range(1, n + 1):
        ri = r[i - 1]
        cur = [DEL_COST * i] + [0] * m
        bp = bytearray(m + 1)
        bp[0] = 2
        left = cur[0]
        for j in range(1, m + 1):
            diag = prev[j - 1] + (0 if ri == h[j - 1] else SUB_COST)
            ins = left + INS_COST
            dele = prev[j] + DEL_COST
            if diag <= ins and diag <= dele:
                left = diag
            elif ins <= dele:
                left = ins
                bp[j] = 1
            else:
                left = dele
                bp[j] = 2
            cur[j] = left
        back.append(bp)
        prev = cur
    ops: list[AlignOp] = []
    i, j = n, m
    while i > 0 or j > 0:
        b = back[i][j] if i > 0 else 1
        if b == 0:
            ops.append(AlignOp("C" if r[i - 1] == h[j - 1] else "S", ref[i - 1], hyp[j - 1]))
            i -= 1
            j -= 1
        elif b == 1:
            ops.append(AlignOp("I", None, hyp[j - 1]))
            j -= 1
        else:
            ops.append(AlignOp("D", ref[i - 1], None))
            i -= 1
    ops.reverse()
    return ops


# --------------------------------------------------------------------------
# counts


@dataclass(frozen=True, slots=True)
class Counts:
    """sclite's row: sentences, reference words, C/S/D/I and sentences with an error."""

    snt: int = 0
    wrd: int = 0
    corr: int = 0
    sub: int = 0
    dele: int = 0
    ins: int = 0
    serr: int = 0

    @property
    def err(self) -> int:
        return self.sub + self.dele + self.ins

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.snt + other.snt,
            self.wrd + other.wrd,
            self.corr + other.corr,
            self.sub + other.sub,
            self.dele + other.dele,
            self.ins + other.ins,
            self.serr + other.serr,
        )

    def pct(self, name: str) -> float:
        """Percent of reference words (of sentences for ``serr``); 0.0 when there are none."""
        if name == "serr":
            return self.serr / self.snt * 100.0 if self.snt else 0.0
        value = self.err if name == "err" else getattr(self, name)
        # (n / d) * 100, not 100 * n / d: the two differ in the last bit, and that
        # decides sclite's rounding of e.g. 51/80 (63.7) against 29/80 (36.3)
        return value / self.wrd * 100.0 if self.wrd else 0.0

    def as_dict(self) -> dict[str, int]:
        return {
            "snt": self.snt,
            "wrd": self.wrd,
            "corr": self.corr,
            "sub": self.sub,
            "del": self.dele,
            "ins": self.ins,
            "err": self.err,
            "serr": self.serr,
        }


@dataclass(slots=True)
class UttScore:
    """One utterance: its ids, tokens, alignment and counts."""

    uttid: str
    trn_id: str
    speaker: str
    ref: list[str]
    hyp: list[str]
    ops: list[AlignOp]

    @property
    def counts(self) -> Counts:
        c = Counter(o.op for o in self.ops)
        err = c["S"] + c["D"] + c["I"]
        return Counts(1, len(self.ref), c["C"], c["S"], c["D"], c["I"], 1 if err else 0)


@dataclass
class Summary:
    """Result of :func:`score`: Sum counts, per-speaker counts, per-utterance scores."""

    total: Counts
    speakers: dict[str, Counts]
    utterances: list[UttScore]
    unit: str = "word"
    engine: str = "python"
    out_dir: Path | None = None
    err: float = field(init=False)
    wer: float = field(init=False)

    def __post_init__(self) -> None:
        self.err = self.total.pct("err")
        # the error rate of the chosen unit: WER for words, CER for characters
        self.wer = self.err

    @property
    def sum_avg_line(self) -> str:
        """The Sum/Avg row of sclite's percent table, e.g.
        ``| Sum/Avg|   40   1037 | 64.1    4.9   31.0   11.2   47.1   70.0 |``."""
        for line in _speaker_table("hyp.trn", self.speakers, self.total, percent=True):
            if line.lstrip().startswith("| Sum/Avg"):
                return line.strip()
        raise AssertionError("no Sum/Avg row")

    def line(self, label: str = "") -> str:
        """One line for people, the unit and the set named (the Sum/Avg row carries a speaker
        column as wide as the longest speaker id, 128 characters for Common Voice), e.g.
        ``test  WER  81.9  (Corr 21.8 Sub 58.0 Del 20.1 Ins 3.8, 120 utterances, 586 words)``."""
        t = self.total
        name, unit = ("CER", "characters") if self.unit == "char" else ("WER", "words")
        counts = " ".join(f"{title} {t.pct(key):.1f}" for title, key in
                          (("Corr", "corr"), ("Sub", "sub"), ("Del", "dele"), ("Ins", "ins")))
        return (f"{label + '  ' if label else ''}{name} {t.pct('err'):5.1f}  ({counts}, "
                f"{t.snt} utterances, {t.wrd} {unit})")


def count_errors(pairs: Iterable[tuple[Sequence[str], Sequence[str]]], unit: str = "word") -> Counts:
    """sclite's summed counts over (reference words, hypothesis words) pairs, without files:
    for choosing between decodings (the LM weights), where writing reports would be waste."""
    total = Counts()
    for ref_words, hyp_words in pairs:
        ref, hyp = tokenize(ref_words, unit), tokenize(hyp_words, unit)
        total = total + UttScore("", "", "", ref, hyp, align(ref, hyp)).counts
    return total


def _summarise(utts: Sequence[UttScore], unit: str, engine: str, out_dir: Path | None) -> Summary:
    speakers: dict[str, Counts] = {}
    total = Counts()
    for u in utts:
        c = u.counts
        speakers[u.speaker] = speakers.get(u.speaker, Counts()) + c
        total = total + c
    return Summary(total, speakers, list(utts), unit, engine, out_dir)


# --------------------------------------------------------------------------
# input


def sclite_speaker(trn_id: str) -> str:
    """The speaker sclite derives from a trn id: before the first '-', else before the
    first '_', lower-cased.  (sclite fails on ids with neither; we return the id.)"""
    for sep in ("-", "_"):
        if sep in trn_id:
            return ascii_lower(trn_id.split(sep, 1)[0])
    return ascii_lower(trn_id)


def _split(s: str) -> list[str]:
    return [t for t in _ASCII_WS.split(s) if t]


def read_text(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Read a Kaldi text file (``uttid w1 w2 ...``) in file order, words split as sclite splits."""
    out: dict[str, list[str]] = {}
    for uttid, words in read_table(path).items():
        out[uttid] = _split(words)
    return out


def read_utt2spk(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a Kaldi utt2spk file."""
    out: dict[str, str] = {}
    for entry in iter_table(path):
        if len(_split(entry.value)) != 1:
            raise ValueError(f"{path}:{entry.line_no}: expected 'uttid speaker', got {entry.raw!r}")
        out[entry.key] = entry.value
    return out


def tokenize(words: Sequence[str], unit: str = "word") -> list[str]:
    """Words as they are, or characters with ``<space>`` between words (ESPnet's char tokens)."""
    if unit == "word":
        return list(words)
    if unit == "char":
        out: list[str] = []
        for k, w in enumerate(words):
            if k:
                out.append(SPACE_TOKEN)
            out.extend(w)
        return out
    raise ValueError(f"unit must be 'word' or 'char', not {unit!r}")


def write_trn(path: str | os.PathLike[str], rows: Iterable[tuple[str, Sequence[str]]]) -> None:
    """Write ``w1 w2 ... (id)`` lines (ESPnet/sclite trn)."""
    with open(path, "w", encoding="utf-8") as f:
        for trn_id, toks in rows:
            f.write(" ".join(toks) + (" " if toks else "") + f"({trn_id})\n")


# --------------------------------------------------------------------------
# result.txt in sclite's -o all layout

_PCT_KEYS = ("corr", "sub", "dele", "ins", "err", "serr")
_PAGE_WIDTH = 80
_TITLE = "SYSTEM SUMMARY PERCENTAGES by SPEAKER"


def _round1(x: float) -> float:
    """sclite rounds half up to one decimal before printing (6.25 -> 6.3)."""
    return math.floor(x * 10.0 + 0.5) / 10.0


def _num(v: int | float) -> str:
    return f"{v:5d}" if isinstance(v, int) else f"{_round1(v):5.1f}"


def _median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    n = len(s)
    if not n:
        return 0.0
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2.0


def _mean_sd_median(xs: Sequence[float]) -> tuple[float, float, float]:
    n = len(xs)
    if not n:
        return 0.0, 0.0, 0.0
    mean = sum(xs) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return mean, sd, _median(xs)


def _count(c: Counts, key: str) -> int:
    return c.err if key == "err" else getattr(c, key)


def _sclite_drop_empty(cs: Sequence[Counts], key: str) -> list[float]:
    """The per-speaker values sclite's Mean/S.D./Median rows use for a percent column.

    sclite removes the speakers without reference words from the list by position,
    but with each one's index in the *original* list while the list shrinks, so from
    the second such speaker on it removes the wrong entry (or the last one); entries
    of speakers without reference words hold their raw count, as their row prints.
    Reproduced as is, so that the statistics rows print sclite's numbers."""
    vals = [c.pct(key) if c.wrd else float(_count(c, key)) for c in cs]
    for i, c in enumerate(cs):
        if not c.wrd and vals:
            del vals[min(i, len(vals) - 1)]
    return vals


def _center(text: str, width: int, ceil: bool = False) -> str:
    """Centre in width (bytes); the odd space goes right, or left with ceil."""
    pad = max(width - _blen(text), 0)
    left = (pad + 1) // 2 if ceil else pad // 2
    return " " * left + text + " " * (pad - left)


@dataclass
class _Row:
    """One table row: label, (#Snt, #Wrd), six (value, mark) cells; kind is
    'int' for speaker and Sum rows, 'float' for the statistics rows."""

    label: str
    snt_wrd: tuple[int | float, int | float]
    cells: list[tuple[int | float, str]]
    kind: str
    centre_label: bool = False
    label_pad: int = 2


# sclite's header texts (the three-letter ones carry a leading space), centred
_PCT_HEAD = ("Corr", " Sub", " Del", " Ins", " Err", "S.Err")


def _render_table(title: str, rows: list[_Row], separated: int) -> list[str]:
    """Lay rows out like sclite: each column is as wide as its widest cell (so the
    usual 5-character numbers give the familiar layout and bigger ones widen it).
    The first ``separated`` rows are speakers, with a rule between them."""
    w = max([_blen(r.label) + (0 if r.centre_label else r.label_pad) for r in rows] + [_blen(" SPKR ")])
    snt = [_num(r.snt_wrd[0]) for r in rows]
    wrd = [_num(r.snt_wrd[1]) for r in rows]
    wa = max(_blen(t) for t in snt)
    wb = max(_blen(t) for t in wrd)
    cells = [[_num(v) + mk for v, mk in r.cells] for r in rows]
    widths = [max([6] + [_blen(c[k]) for c in cells]) for k in range(6)]

    def sw(k: int) -> str:
        # sclite puts the odd space of a counts cell on the left, of a statistics cell on the right
        ceil = rows[k].kind == "int"
        return _center(snt[k], wa, ceil) + "  " + _center(wrd[k], wb, ceil) + " "

    def pct(cs: Sequence[str]) -> str:
        return " ".join(_center(c, widths[k]) for k, c in enumerate(cs))

    def label(r: _Row) -> str:
        if r.centre_label:
            return _center(r.label, w)
        return " " + r.label + " " * (w - 1 - _blen(r.label))

    head_sw = _center("# Snt", wa + 1, True) + " " + _center("# Wrd", wb, True) + " "
    sw_w = _blen(head_sw)
    pct_w = sum(widths) + 5
    inner = w + 1 + sw_w + 1 + pct_w
    rule = "|" + "-" * w + "+" + "-" * sw_w + "+" + "-" * pct_w + "|"
    dbl = "|" + "=" * inner + "|"
    out = [
        "," + "-" * inner + ".",
        "|" + _center(title, inner) + "|",
        "|" + "-" * inner + "|",
        "| SPKR" + " " * (w - 5) + "|" + head_sw + "|" + pct(_PCT_HEAD) + "|",
        rule,
    ]
    for k, r in enumerate(rows):
        if 0 < k < separated:
            out.append(rule)
        elif k == separated or k == separated + 1:
            out.append(dbl)
        out.append("|" + label(r) + "|" + sw(k) + "|" + pct(cells[k]) + "|")
    out.append("`" + "-" * inner + "'")
    width = inner + 2
    indent = " " * ((_PAGE_WIDTH - width) // 2 if width < _PAGE_WIDTH else 0)
    return [indent + ln for ln in out]


def _speaker_table(title: str, speakers: Mapping[str, Counts], total: Counts, percent: bool) -> list[str]:
    names = list(speakers)
    cs = [speakers[s] for s in names]
    rows: list[_Row] = []
    blank = [" "] * 6
    for s, c in zip(names, cs):
        if percent and c.wrd:
            vals: list[int | float] = [c.pct(k) for k in _PCT_KEYS]
            marks = blank
        elif percent:
            vals = [_count(c, k) for k in _PCT_KEYS[:5]] + [c.pct("serr")]
            marks = ["*"] * 5 + [" "]
        else:
            vals = [_count(c, k) for k in _PCT_KEYS]
            marks = blank
        rows.append(_Row(s, (c.snt, c.wrd), list(zip(vals, marks)), "int"))
    if percent:
        tv: list[int | float] = [total.pct(k) for k in _PCT_KEYS]
    else:
        tv = [_count(total, k) for k in _PCT_KEYS]
    rows.append(
        _Row("Sum/Avg" if percent else "Sum", (total.snt, total.wrd), list(zip(tv, blank)), "int", label_pad=1)
    )
    ignored = percent and any(not c.wrd for c in cs)
    stats = [_mean_sd_median([float(c.snt) for c in cs]), _mean_sd_median([float(c.wrd) for c in cs])]
    for k in _PCT_KEYS:
        if percent and k != "serr":
            stats.append(_mean_sd_median(_sclite_drop_empty(cs, k)))
        elif percent:
            stats.append(_mean_sd_median([c.pct(k) for c in cs]))
        else:
            stats.append(_mean_sd_median([float(_count(c, k)) for c in cs]))
    marks = (["+"] * 5 + [" "]) if ignored else blank
    for idx, name in enumerate(("Mean", "S.D.", "Median")):
        v = [st[idx] for st in stats]
        rows.append(_Row(name, (v[0], v[1]), list(zip(v[2:], marks)), "float", centre_label=True))
    out = _render_table(title, rows, len(names))
    if ignored:
        out += [
            "",
            "* No Reference words for this/these speaker(s).  Word counts supplied",
            "  rather than percents.",
            "# No Reference words for this/these speaker(s).  NCE not computable.",
            "+ Speaker(s) with no reference data is ignored",
        ]
    return out


_DUMP_WIDTH = 999


def _dump_chunk(cols: Sequence[tuple[str, str, str]], first: bool) -> list[str]:
    pre = "" if first else ">> "
    return [
        pre + "REF:  " + "".join(c[0] + " " for c in cols),
        pre + "HYP:  " + "".join(c[1] + " " for c in cols),
        pre + "Eval: " + "".join(c[2] + " " for c in cols),
        "",
    ]


def _dump(title: str, utts: Sequence[UttScore], speakers: Sequence[str]) -> list[str]:
    lines = ["\t\tDUMP OF SYSTEM ALIGNMENT STRUCTURE", "", f"System name:   {title}", "", "Speakers: "]
    lines += [f"   {k:2d}:  {s}" for k, s in enumerate(speakers)]
    lines.append("")
    by_spk: dict[str, list[UttScore]] = {s: [] for s in speakers}
    for u in utts:
        by_spk[u.speaker].append(u)
    for k, s in enumerate(speakers):
        lines.append(f"Speaker sentences {k:3d}:  {s}   #utts: {len(by_spk[s])}")
        for u in by_spk[s]:
            c = u.counts
            lines.append(f"id: ({ascii_lower(u.trn_id)})")
            lines.append(f"Scores: (#C #S #D #I) {c.corr} {c.sub} {c.dele} {c.ins}")
            if not u.ops:
                lines.append("")
            chunk: list[tuple[str, str, str]] = []
            first = True
            length = len("REF:  ")
            for o in u.ops:
                if o.op == "C":
                    rt = ht = ascii_lower(o.ref or "")
                else:
                    rt = ascii_upper(o.ref) if o.ref is not None else ""
                    ht = ascii_upper(o.hyp) if o.hyp is not None else ""
                wdt = max(_blen(rt), _blen(ht))
                rt = rt or "*" * wdt
                ht = ht or "*" * wdt
                col = (
                    rt + " " * (wdt - _blen(rt)),
                    ht + " " * (wdt - _blen(ht)),
                    (" " if o.op == "C" else o.op) + " " * (wdt - 1),
                )
                # sclite wraps the three lines before they would exceed 999 bytes
                if chunk and length + wdt + 1 > _DUMP_WIDTH:
                    lines += _dump_chunk(chunk, first)
                    chunk, first, length = [], False, len(">> REF:  ")
                chunk.append(col)
                length += wdt + 1
            if chunk:
                lines += _dump_chunk(chunk, first)
    lines.append("")
    return lines


def _confusions(utts: Sequence[UttScore], top: int = TOP_CONFUSIONS) -> list[str]:
    subs: Counter[tuple[str, str]] = Counter()
    ins: Counter[str] = Counter()
    dels: Counter[str] = Counter()
    for u in utts:
        for o in u.ops:
            if o.op == "S":
                subs[(ascii_lower(o.ref or ""), ascii_lower(o.hyp or ""))] += 1
            elif o.op == "I":
                ins[ascii_lower(o.hyp or "")] += 1
            elif o.op == "D":
                dels[ascii_lower(o.ref or "")] += 1

    out = ["", "", "\t\tMOST FREQUENT ERRORS (added by cvasr, not part of sclite's output)", ""]
    sections: list[tuple[str, Counter, Callable[[Any], str]]] = [
        ("CONFUSION PAIRS (ref ==> hyp)", subs, lambda k: f"{k[0]} ==> {k[1]}"),
        ("INSERTIONS", ins, str),
        ("DELETIONS", dels, str),
    ]
    for head, counter, fmt in sections:
        items = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        out.append(f"{head:<40s} Total ({sum(counter.values())})")
        out.append(f"{'':<40s} Distinct ({len(counter)}), top {len(items)} shown")
        out.append("")
        out += [f"{k:4d}: {n:4d}  ->  {fmt(key)}" for k, (key, n) in enumerate(items, 1)]
        out.append("")
    return out


def format_result(summary: Summary, title: str = "hyp.trn", confusions: bool = True) -> str:
    """result.txt: sclite's ``-o all`` (percent table, count table, alignment dump),
    then the most frequent substitutions, insertions and deletions."""
    lines = ["", "", "", _center(_TITLE, _PAGE_WIDTH), ""]
    lines += _speaker_table(title, summary.speakers, summary.total, percent=True)
    lines += ["", "", "", _center(_TITLE, _PAGE_WIDTH), ""]
    lines += _speaker_table(title, summary.speakers, summary.total, percent=False)
    lines += ["", ""]
    lines += _dump(title, summary.utterances, list(summary.speakers))
    text = "\n".join(lines) + "\n"
    if confusions:
        text += "\n".join(_confusions(summary.utterances)) + "\n"
    return text


# --------------------------------------------------------------------------
# the real sclite


def find_sclite() -> str:
    """Path of the sclite binary (PATH first, then Debian's location)."""
    found = shutil.which("sclite")
    if found:
        return found
    if os.access(SCLITE_DEFAULT_PATH, os.X_OK):
        return SCLITE_DEFAULT_PATH
    raise SCliteNotFoundError(
        "sclite not found on PATH nor at " + SCLITE_DEFAULT_PATH
        + "; install NIST SCTK (Debian/Ubuntu: apt-get install sctk) or use the python engine"
    )


def run_sclite(
    ref_trn: str | os.PathLike[str], hyp_trn: str | os.PathLike[str], out_path: str | os.PathLike[str]
) -> Path:
    """Run ``sclite -r REF trn -h HYP trn -i rm -o all stdout -e utf-8`` (ESPnet's call)
    and write its report to out_path.  sclite is run from HYP's directory with HYP's
    base name, so the report is titled ``hyp.trn`` rather than by a full path."""
    exe = find_sclite()
    hyp = Path(hyp_trn).resolve()
    ref = Path(ref_trn).resolve()
    proc = subprocess.run(
        [exe, "-r", str(ref), "trn", "-h", hyp.name, "trn", "-i", "rm", "-o", "all", "stdout", "-e", "utf-8"],
        cwd=hyp.parent,
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"sclite failed (exit {proc.returncode}): {proc.stderr.decode('utf-8', 'replace').strip()}"
        )
    if proc.stderr.strip():
        sys.stderr.write(proc.stderr.decode("utf-8", "replace"))
    out = Path(out_path)
    out.write_bytes(proc.stdout)
    return out


_ROW = re.compile(r"^\s*\|([^|]*)\|([^|]*)\|([^|]*)\|\s*$")
_ID = re.compile(r"^id: \((.*)\)\s*$")
_SCORES = re.compile(r"^Scores: \(#C #S #D #I\)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)")
_FIELDS = ("snt", "wrd", "corr", "sub", "del", "ins", "err", "serr")


def _gap(tok: str) -> bool:
    return bool(tok) and set(tok) == {"*"}


def parse_sclite_counts(result_txt: str | os.PathLike[str]) -> dict:
    """Counts from an sclite ``-o all`` report (or ours).

    Returns ``{"sum": {...}, "speakers": {spk: {...}}, "utterances": {id: {...}}}`` where
    the Sum and speaker dicts have keys snt, wrd, corr, sub, del, ins, err, serr (from the
    count table) and each utterance (keyed by its lower-cased trn id) has corr, sub, del,
    ins, speaker and ``ops``: the aligned (op, ref, hyp) columns of the dump, tokens in
    sclite's case (upper for errors)."""
    text = Path(result_txt).read_text(encoding="utf-8", errors="replace")
    sum_counts: dict[str, int] = {}
    speakers: dict[str, dict[str, int]] = {}
    utts: dict[str, dict] = {}
    current_spk = ""
    uid: str | None = None
    toks: dict[str, tuple[list[str], list[str]]] = {}
    for line in text.splitlines():
        m = _ROW.match(line)
        if m and uid is None:
            name = m.group(1).strip()
            try:
                nums = [int(x) for x in (m.group(2) + " " + m.group(3)).split()]
            except ValueError:
                continue  # header, percent or statistics row
            if len(nums) != 8:
                continue
            row = dict(zip(_FIELDS, nums))
            if name == "Sum":
                sum_counts = row
            else:
                speakers[name] = row
            continue
        if line.startswith("Speaker sentences"):
            current_spk = line.split(":", 1)[1].split("#utts:")[0].strip()
            continue
        m = _ID.match(line)
        if m:
            uid = m.group(1)
            utts[uid] = {"speaker": current_spk, "ops": []}
            toks[uid] = ([], [])
            continue
        m = _SCORES.match(line)
        if m and uid is not None:
            c, s, d, i = (int(x) for x in m.groups())
            utts[uid].update(corr=c, sub=s, **{"del": d}, ins=i)
            continue
        if uid is not None and line.startswith(("REF:", ">> REF:")):
            toks[uid][0].extend(line.split(":", 1)[1].split())
        elif uid is not None and line.startswith(("HYP:", ">> HYP:")):
            toks[uid][1].extend(line.split(":", 1)[1].split())
    for uid, (ref_toks, hyp_toks) in toks.items():
        ops: list[tuple[str, str | None, str | None]] = []
        for rt, ht in zip(ref_toks, hyp_toks):
            if _gap(rt):
                ops.append(("I", None, ht))
            elif _gap(ht):
                ops.append(("D", rt, None))
            else:
                ops.append(("C" if rt == ht else "S", rt, ht))
        utts[uid]["ops"] = ops
    return {"sum": sum_counts, "speakers": speakers, "utterances": utts}


# --------------------------------------------------------------------------
# entry point


def _warn(msg: str) -> None:
    print(f"cvasr score: warning: {msg}", file=sys.stderr)


def _prepare(
    ref_path: str | os.PathLike[str],
    hyp_path: str | os.PathLike[str],
    unit: str,
    utt2spk: str | os.PathLike[str] | Mapping[str, str] | None,
    normalize: Callable[[str], str] | None = None,
) -> list[tuple[str, str, list[str], list[str]]]:
    """(uttid, trn id, ref tokens, hyp tokens) in ref order, with the checks of the contract.

    `normalize`, when given, is applied to reference and hypothesis alike before tokenising.
    """
    if unit not in ("word", "char"):
        raise ValueError(f"unit must be 'word' or 'char', not {unit!r}")
    ref = read_text(ref_path)
    hyp = read_text(hyp_path)
    if not ref:
        raise ValueError(f"{ref_path}: no utterances")
    extra = [u for u in hyp if u not in ref]
    if extra:
        shown = ", ".join(extra[:10]) + (f" (and {len(extra) - 10} more)" if len(extra) > 10 else "")
        raise ValueError(f"{hyp_path}: utterance(s) not in the reference {ref_path}: {shown}")
    spk_map: Mapping[str, str] | None
    if utt2spk is None or isinstance(utt2spk, Mapping):
        spk_map = utt2spk
    else:
        spk_map = read_utt2spk(utt2spk)
    rows = []
    special: set[str] = set()
    for uttid, ref_words in ref.items():
        if uttid in hyp:
            hyp_words = hyp[uttid]
        else:
            _warn(f"utterance {uttid} missing from {hyp_path}; scored as an empty hypothesis")
            hyp_words = []
        if spk_map is not None:
            if uttid not in spk_map:
                raise ValueError(f"utterance {uttid} has no speaker in utt2spk")
            spk = spk_map[uttid]
        else:
            spk = uttid
            for sep in ("-", "_"):
                if sep in uttid:
                    spk = uttid.split(sep, 1)[0]
                    break
        if "-" in spk:
            _warn(f"speaker id {spk!r} contains '-'; sclite (and we) take the speaker as {spk.split('-')[0]!r}")
        if normalize is not None:
            ref_words = normalize(" ".join(ref_words)).split()
            hyp_words = normalize(" ".join(hyp_words)).split()
        r_toks, h_toks = tokenize(ref_words, unit), tokenize(hyp_words, unit)
        special.update(t for t in r_toks + h_toks if _SPECIAL.search(t))
        rows.append((uttid, f"{spk}-{uttid}", r_toks, h_toks))
    if special:
        _warn(
            "tokens that sclite treats specially (parentheses, braces, '@', ';'): "
            + " ".join(sorted(special)[:10]) + "; python and sclite engines may disagree on them"
        )
    return rows


def score(
    ref_path: str | os.PathLike[str],
    hyp_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    unit: str = "word",
    utt2spk: str | os.PathLike[str] | Mapping[str, str] | None = None,
    engine: str = "python",
    normalize: Callable[[str], str] | None = None,
) -> Summary:
    """Score Kaldi-style ref/hyp text files; write out_dir/ref.trn, hyp.trn, result.txt.

    `normalize` (e.g. `cvasr.normalize.get_normalizer("as")`) is applied to both sides.

    engine "python" aligns here; engine "sclite" runs the real binary on the same trn
    files and reads its counts back.  Both append the most frequent confusions to
    result.txt.  Missing hypotheses are scored as empty (with a warning); hypotheses
    for utterances not in the reference are an error.
    """
    if engine not in ("python", "sclite"):
        raise ValueError(f"engine must be 'python' or 'sclite', not {engine!r}")
    rows = _prepare(ref_path, hyp_path, unit, utt2spk, normalize)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_trn(out / "ref.trn", [(t, r) for _, t, r, _ in rows])
    write_trn(out / "hyp.trn", [(t, h) for _, t, _, h in rows])
    result = out / "result.txt"
    if engine == "python":
        utts = [UttScore(u, t, sclite_speaker(t), r, h, align(r, h)) for u, t, r, h in rows]
        summary = _summarise(utts, unit, engine, out)
        result.write_text(format_result(summary, "hyp.trn"), encoding="utf-8")
        return summary
    run_sclite(out / "ref.trn", out / "hyp.trn", result)
    parsed = parse_sclite_counts(result)
    utts = []
    for u, t, r, h in rows:
        got = parsed["utterances"].get(ascii_lower(t))
        if got is None:
            raise RuntimeError(f"sclite's report has no utterance {t!r}")
        ops = [AlignOp(op, rt, ht) for op, rt, ht in got["ops"]]
        utts.append(UttScore(u, t, got["speaker"], r, h, ops))
    summary = _summarise(utts, unit, engine, out)
    if summary.total.as_dict() != parsed["sum"]:
        raise RuntimeError(f"sclite's Sum row {parsed['sum']} disagrees with its alignments")
    with open(result, "a", encoding="utf-8") as f:
        f.write("\n".join(_confusions(utts)) + "\n")
    return summary
