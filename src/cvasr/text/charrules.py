"""Character rules every normaliser shares: invisible characters, punctuation of every script,
and the in-word apostrophe.

Each normaliser (`generic`, `assamese`, ...) is a short sequence of these steps plus its own
tables; keeping the steps here means a fix to, say, apostrophe handling reaches every language.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping

__all__ = ["INVISIBLES", "TranslationTable", "char_mapping", "drop_invisible_rule",
           "punctuation_rule", "resolve_in_word_apostrophes"]

# Invisible characters deleted outright. Every other format character (Unicode category Cf) and
# every non-whitespace control character (Cc) is deleted too, by category (`drop_invisible_rule`),
# so unlisted bidi marks and the like go as well.
INVISIBLES = (
    "\u200b"  # ZERO WIDTH SPACE
    "\u200c"  # ZERO WIDTH NON-JOINER
    "\u200d"  # ZERO WIDTH JOINER
    "\u2060"  # WORD JOINER
    "\u00ad"  # SOFT HYPHEN
    "\ufeff"  # BYTE ORDER MARK / ZERO WIDTH NO-BREAK SPACE
    "\u200e\u200f"  # LEFT-TO-RIGHT / RIGHT-TO-LEFT MARK
)

_APOSTROPHE_RE = re.compile("'")


class TranslationTable(dict[int, "int | str | None"]):
    """A `str.translate` table: explicit entries, then a rule on the character.

    The rule answers for code points not listed, once each; answers are cached, so the table only
    ever grows to the characters actually seen.
    """

    def __init__(self, explicit: Mapping[int, int | str | None],
                 rule: Callable[[str], int | str | None]):
        super().__init__(explicit)
        self._rule = rule

    def __missing__(self, codepoint: int) -> int | str | None:
        value = self._rule(chr(codepoint))
        self[codepoint] = value
        return value


def char_mapping(chars: Iterable[str], value: str | None) -> dict[int, str | None]:
    """Translation entries mapping each of `chars` to `value` (None deletes)."""
    return {ord(ch): value for ch in chars}


def drop_invisible_rule(ch: str) -> int | str | None:
    """For unlisted characters: drop format and non-space control characters, keep the rest."""
    category = unicodedata.category(ch)
    if category == "Cf" or (category == "Cc" and not ch.isspace()):
        return None
    return ord(ch)


def punctuation_rule(ch: str) -> int | str | None:
    """For unlisted characters: any Unicode punctuation (category P*) becomes a space."""
    return " " if unicodedata.category(ch).startswith("P") else ord(ch)


def _is_word_char(ch: str) -> bool:
    """Letters and combining marks (vowel signs, virama, accents) make up a word."""
    return unicodedata.category(ch)[0] in "LM"


def _resolve_apostrophe(match: re.Match[str]) -> str:
    text, i = match.string, match.start()
    if 0 < i < len(text) - 1 and _is_word_char(text[i - 1]) and _is_word_char(text[i + 1]):
        return "'"
    return " "


def resolve_in_word_apostrophes(text: str) -> str:
    """Keep each ASCII "'" that stands between two letters or marks of a word; make the others
    (quotes, a leading or trailing apostrophe) spaces."""
    return _APOSTROPHE_RE.sub(_resolve_apostrophe, text) if "'" in text else text
