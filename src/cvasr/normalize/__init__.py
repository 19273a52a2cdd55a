"""Text normalisers, one module a language; `get_normalizer(lang)` picks one by language code.

Every text that is trained on or scored goes through the same normaliser, so the
choice is made in one place. An unknown language is an error unless the caller
asks for the generic fallback explicitly: silently scoring a new language with
rules written for another would hide spelling variants in the WER.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

from cvasr.normalize import assamese

__all__ = [
    "GENERIC_NORMALIZER_VERSION",
    "generic_normalize",
    "get_normalizer",
    "known_languages",
    "normalizer_version",
]

Normalizer = Callable[[str], str]

GENERIC_NORMALIZER_VERSION = "generic-1"

# language code -> (normaliser, version of its rules)
_REGISTRY: dict[str, tuple[Normalizer, str]] = {
    "as": (assamese.normalize, assamese.NORMALIZER_VERSION),
}


def generic_normalize(text: str) -> str:
    """Language-agnostic normaliser: case-fold, NFC, punctuation (category P*) to spaces, collapse whitespace."""
    text = unicodedata.normalize("NFC", text.casefold())
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    return " ".join(text.split())


def known_languages() -> tuple[str, ...]:
    """Language codes that have a dedicated normaliser, sorted."""
    return tuple(sorted(_REGISTRY))


def _lookup(lang: str, fallback: bool) -> tuple[Normalizer, str]:
    entry = _REGISTRY.get(lang.strip().lower())
    if entry is not None:
        return entry
    if fallback:
        return generic_normalize, GENERIC_NORMALIZER_VERSION
    raise ValueError(
        f"no text normaliser for language code {lang!r}; known codes: {', '.join(known_languages())} "
        "(pass fallback=True to use the generic Unicode normaliser)"
    )


def get_normalizer(lang: str, *, fallback: bool = False) -> Normalizer:
    """Return the normaliser for language code `lang` (e.g. "as" for Assamese).

    Raises ValueError for an unknown code, unless `fallback` is true, in which
    case `generic_normalize` is returned.
    """
    return _lookup(lang, fallback)[0]


def normalizer_version(lang: str, *, fallback: bool = False) -> str:
    """Version string of the rules `get_normalizer(lang, fallback=fallback)` applies, for data-dir records."""
    return _lookup(lang, fallback)[1]
