"""Kaldi table files (`key value...` a line: `text`, `utt2spk`, `wav.scp`, `spk2utt`, ...): the one
reader and writer every stage uses.

A line's key is its first field, up to the first run of ASCII white space; the value is the rest
of the line with its own spacing kept and trailing white space removed, as espnet2's
`read_2columns_text` and Kaldi's readers take it. Blank lines are skipped. Non-ASCII white space
(e.g. a no-break space inside an Assamese sentence) is part of the value, never a separator.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

_SEPARATOR = re.compile(r"[ \t\n\r\f\v]+")
_TRAILING = " \t\n\r\f\v"


class TableError(ValueError):
    """A table line that cannot be read as asked; the message names the file and line."""


@dataclass(frozen=True)
class TableLine:
    line_no: int
    key: str
    value: str
    raw: str  # the line as written, without its line end


def iter_table(path: str | os.PathLike[str], keep_blank: bool = False) -> Iterator[TableLine]:
    """Every non-blank line of a table, in file order; with `keep_blank` blank lines too (key ""),
    for the validator: espnet2's reader fails on them."""
    with open(path, encoding="utf-8", newline="") as handle:
        for line_no, line in enumerate(handle, start=1):
            raw = line.rstrip("\r\n")
            stripped = raw.rstrip(_TRAILING)
            if not stripped:
                if keep_blank:
                    yield TableLine(line_no, "", "", raw)
                continue
            parts = _SEPARATOR.split(stripped, maxsplit=1)
            yield TableLine(line_no, parts[0], parts[1] if len(parts) > 1 else "", raw)


def read_table(path: str | os.PathLike[str]) -> dict[str, str]:
    """A table as {key: value} in file order; a key given twice is an error naming both lines."""
    table: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for entry in iter_table(path):
        if entry.key in table:
            raise TableError(f"{path}:{entry.line_no}: duplicate key {entry.key!r} "
                             f"(first on line {first_line[entry.key]})")
        table[entry.key] = entry.value
        first_line[entry.key] = entry.line_no
    return table


def write_table(path: str | os.PathLike[str], rows: Mapping[str, str]) -> None:
    """A table sorted by key (as Kaldi and espnet2 want it), written whole under a temporary name
    and renamed, so a reader never sees half of one."""
    lines = [f"{key} {value}".rstrip() for key, value in sorted(rows.items())]
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    partial.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(partial, path)
