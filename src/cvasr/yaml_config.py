"""Reading a YAML config file (training, decoding): a mapping, or one line saying what is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def read_mapping(path: Path, what: str = "config", error: type[Exception] = ValueError
                 ) -> dict[str, Any]:
    """The mapping a YAML file holds (empty file: {}); `error` names the file and the problem
    when it is missing, not YAML, or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path} does not exist")
    try:
        conf = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise error(f"{path}: not valid YAML: {err}".replace("\n", " ")) from err
    if not isinstance(conf, dict):
        raise error(f"{path}: expected a mapping of options, got {type(conf).__name__}")
    return conf
