"""Text normalisers by language code: `get_normalizer(lang)` picks one.

Every text that is trained on, put in the LM or scored goes through the same normaliser, so the
choice is made here only. A language with rules of its own (today: Assamese, `as`) gets them;
every other code gets the generic normaliser (`cvasr.text.generic`), and the returned
normaliser says so (`dedicated`, `describe()`), so stage 1 can tell the user and record it.
Rules of one language never touch another: the registry is keyed by exact language code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cvasr.text import assamese, generic

__all__ = ["TextNormalizer", "get_normalizer", "known_languages"]


@dataclass(frozen=True)
class TextNormalizer:
    """A language's normaliser: call it on a sentence."""

    name: str  # "assamese", "generic", ...
    version: str  # bumped whenever its rules change
    lang: str  # the code it was asked for
    dedicated: bool  # False: the generic rules, for a language without its own
    apply: Callable[[str], str]

    def __call__(self, text: str) -> str:
        return self.apply(text)

    def describe(self) -> str:
        """One line for stage 1's output."""
        if self.dedicated:
            return f"text normaliser for '{self.lang}': {self.name} ({self.version})"
        return (f"text normaliser for '{self.lang}': {self.name} ({self.version}); this language "
                "has no rules of its own (Unicode NFC, punctuation removed, lower case)")


# language code -> (name, version, function)
_REGISTRY: dict[str, tuple[str, str, Callable[[str], str]]] = {
    "as": ("assamese", assamese.NORMALIZER_VERSION, assamese.normalize),
}


def known_languages() -> tuple[str, ...]:
    """Language codes that have a normaliser of their own, sorted."""
    return tuple(sorted(_REGISTRY))


def get_normalizer(lang: str) -> TextNormalizer:
    """The normaliser for Common Voice language code `lang` (e.g. "as", "bn", "cy", "pt-BR")."""
    code = lang.strip()
    if not code:
        raise ValueError("empty language code")
    entry = _REGISTRY.get(code) or _REGISTRY.get(code.lower())
    if entry is not None:
        return TextNormalizer(entry[0], entry[1], code, True, entry[2])
    return TextNormalizer("generic", generic.NORMALIZER_VERSION, code, False, generic.normalize)
