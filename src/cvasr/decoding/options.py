"""How to decode: beam, batch, and the word LM with its weights; read from decode YAML files.

Three places say it, later ones winning: the decode config (`conf/decode_ctc.yaml`), the choice
stage 5 records in the experiment dir (`EXP/decoding.yaml`: the beam, the LM and the weights
tuned on dev), and options on the command line. `cvasr transcribe` and `cvasr decode` start from
the experiment's record, so they decode as stage 5 did unless told otherwise.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cvasr import defaults
from cvasr.yaml_config import read_mapping

#: the file in an experiment dir that records stage 5's choice (and in each decode dir, how it
#: was decoded)
RECORD = "decoding.yaml"


@dataclass
class DecodingOptions:
    beam_size: int = 1  # 1: greedy; more: CTC prefix beam search (without an LM)
    batch_size: int = defaults.DECODE_BATCH_SIZE  # utterances a forward pass
    # long inputs (cvasr.decoding.chunks): the model's windows and their overlap, seconds
    window: float = defaults.DECODE_WINDOW
    window_overlap: float = defaults.DECODE_WINDOW_OVERLAP
    lm: str | None = None  # word n-gram LM dir (stage 3's data/lm); None: CTC alone
    lm_weight: float = defaults.LM_WEIGHT  # the LM's log-probability weight (alpha)
    word_bonus: float = defaults.WORD_BONUS  # added for every word (beta)
    lm_beam_size: int = defaults.LM_BEAM_SIZE  # beams of the search with the LM
    unk_offset: float = defaults.LM_UNK_OFFSET  # added for a word the LM has never seen
    # the grid stage 5 tunes lm_weight x word_bonus on (cvasr tune-lm)
    lm_weights: list[float] = field(default_factory=lambda: list(defaults.LM_WEIGHTS))
    word_bonuses: list[float] = field(default_factory=lambda: list(defaults.WORD_BONUSES))

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def updated(self, values: dict[str, Any], source: str) -> "DecodingOptions":
        """A copy with `values` applied (None values skipped); unknown keys and wrong types are
        errors naming `source` and the key."""
        unknown = sorted(set(values) - set(self.keys()))
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {', '.join(unknown)}; a decode config "
                             f"has {', '.join(self.keys())}")
        out = dataclasses.replace(self)
        for key, value in values.items():
            if value is None and key != "lm":
                continue
            setattr(out, key, _checked(key, value, getattr(DecodingOptions(), key), source))
        return out

    def check(self) -> None:
        if self.beam_size < 1 or self.lm_beam_size < 1 or self.batch_size < 1:
            raise ValueError("beam_size, lm_beam_size and batch_size must be at least 1")
        if not 0 < self.window_overlap < self.window:
            raise ValueError(f"window_overlap ({self.window_overlap:g} s) must be more than 0 and "
                             f"less than the window ({self.window:g} s)")

    def describe(self, lm_shown_as: str | None = None) -> str:
        """For logs and RESULTS.md (which shows the LM path relative to itself)."""
        if self.lm is None:
            search = "greedy CTC" if self.beam_size <= 1 else f"CTC prefix beam {self.beam_size}"
            return f"{search}, batch {self.batch_size}"
        return (f"CTC prefix beam {self.lm_beam_size} with the word LM {lm_shown_as or self.lm} (weight "
                f"{self.lm_weight:g}, word bonus {self.word_bonus:g}, unknown-word offset "
                f"{self.unk_offset:g}), batch {self.batch_size}")


def _checked(key: str, value: Any, default: Any, source: str) -> Any:
    if key == "lm":
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise ValueError(f"{source}: {key} must be a path, got {value!r}")
        return None if value is None else str(value)
    if isinstance(default, list):
        if not isinstance(value, list) or not value or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise ValueError(f"{source}: {key} must be a non-empty list of numbers, got {value!r}")
        return [float(v) for v in value]
    if isinstance(default, bool) or isinstance(value, bool):
        raise ValueError(f"{source}: {key} must be a number, got {value!r}")
    if isinstance(default, int):
        if not isinstance(value, int):
            raise ValueError(f"{source}: {key} must be a whole number, got {value!r}")
        return value
    if not isinstance(value, (int, float)):
        raise ValueError(f"{source}: {key} must be a number, got {value!r}")
    return float(value)


def read_yaml(path: Path) -> dict[str, Any]:
    """A decode config's options."""
    return read_mapping(path, "decode config")


def recorded(exp_dir: Path) -> DecodingOptions:
    """The decoding recorded in `exp_dir` (an experiment or a decode dir; its LM path made
    absolute), else the defaults."""
    record = Path(exp_dir) / RECORD
    if not record.is_file():
        return DecodingOptions()
    values = read_yaml(record)
    if values.get("lm"):
        values["lm"] = str((Path(exp_dir) / values["lm"]).resolve())
    return DecodingOptions().updated(values, str(record))


def write_record(exp_dir: Path, options: DecodingOptions) -> Path:
    """Record `options` as the experiment's decoding (the LM path relative to the experiment,
    so a work dir moved as a whole keeps working)."""
    values = dataclasses.asdict(options)
    if options.lm is not None:
        values["lm"] = os.path.relpath(Path(options.lm).resolve(), Path(exp_dir).resolve())
    for key in ("lm_weights", "word_bonuses"):
        values.pop(key)
    record = Path(exp_dir) / RECORD
    partial = record.with_name(RECORD + ".partial")
    partial.write_text("# how to decode: cvasr decode and cvasr transcribe start from an "
                       "experiment's (stage 5 writes it)\n"
                       + yaml.safe_dump(values, sort_keys=False), encoding="utf-8")
    os.replace(partial, record)
    return record
