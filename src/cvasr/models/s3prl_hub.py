"""s3prl's upstream hub, importing only the upstream that is asked for.

espnet2's s3prl frontend finds its upstream by name in `s3prl.hub`, a module that star-imports
the `hubconf` of every upstream s3prl has (37 of them): transformers' HuBERT and wav2vec 2.0,
espnet2's HuBERT task with the whole espnet2 task stack behind it (g2p_en, inflect, ...). On 2
cores that costs about 10 s, for a model that needs only `mel` or `wav2vec2_custom`.

`install()` puts a lazy stand-in under the name `s3prl.hub` (only if the real one is not
imported yet). It reads s3prl's own hub.py to know which hubconf modules it imports and in what
order, indexes the public functions each defines without importing it (later ones shadow earlier
ones, as with the star imports), and imports a hubconf when one of its names is first asked
for. A name the index does not hold is looked up in the real hub, imported then (slow, but the
same answer). `options()` lists the indexed names, which is what `S3PRLUpstream.available_names`
is asked for.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
import types
from functools import lru_cache
from pathlib import Path
from typing import Any

_NAME = "s3prl.hub"
#: the real hub, imported under another name when the index cannot answer
_FULL_NAME = "s3prl._full_hub"


def _hub_path() -> Path:
    """s3prl/hub.py (found from the package, since `s3prl.hub` may be the stand-in by now)."""
    spec = importlib.util.find_spec("s3prl")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("s3prl")
    return Path(spec.origin).parent / "hub.py"


def _source(module: str) -> str:
    if module == _NAME:
        return _hub_path().read_text(encoding="utf-8")
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(module)
    return Path(spec.origin).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def index() -> dict[str, str]:
    """Every upstream name s3prl's hub exports through its hubconf functions: name -> module."""
    names: dict[str, str] = {}
    for node in ast.parse(_source(_NAME)).body:
        if not (isinstance(node, ast.ImportFrom) and node.module and node.level == 0):
            continue
        if [a.name for a in node.names] == ["*"]:
            for item in ast.parse(_source(node.module)).body:
                if isinstance(item, ast.FunctionDef) and not item.name.startswith("_"):
                    names[item.name] = node.module
        else:
            for alias in node.names:
                names[alias.asname or alias.name] = node.module
    return names


def _full_hub() -> types.ModuleType:
    if _FULL_NAME not in sys.modules:
        spec = importlib.util.spec_from_file_location(_FULL_NAME, _hub_path())
        module = importlib.util.module_from_spec(spec)
        sys.modules[_FULL_NAME] = module
        spec.loader.exec_module(module)
    return sys.modules[_FULL_NAME]


class LazyHub(types.ModuleType):
    """Stands in for `s3prl.hub`: attributes resolved by name, one hubconf at a time."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        module = index().get(name)
        value = getattr(importlib.import_module(module) if module else _full_hub(), name)
        setattr(self, name, value)
        return value

    def options(self, only_registered_ckpt: bool = False) -> list[str]:
        """As s3prl.hub.options: the upstream names (without the local/url/custom variants),
        and the entries added to the hub at run time (cvasr.models.inline_upstream's)."""
        suffixes = ("_local", "_url", "_gdriveid", "_custom")
        added = [name for name, value in vars(self).items()
                 if not name.startswith("_") and callable(value) and name not in index()]
        return [name for name in [*index(), *added]
                if not (only_registered_ckpt and name.endswith(suffixes))]


def install() -> bool:
    """Make `s3prl.hub` the lazy hub unless the real one is already imported; whether it is."""
    current = sys.modules.get(_NAME)
    if current is not None:
        return isinstance(current, LazyHub)
    import s3prl

    hub = LazyHub(_NAME, __doc__)
    hub.__file__ = str(_hub_path())
    sys.modules[_NAME] = hub
    s3prl.hub = hub  # type: ignore[attr-defined]
    return True
