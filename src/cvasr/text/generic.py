"""The generic normaliser: for every language without rules of its own.

Rules, in order: delete zero-width characters, BOMs and other invisibles; unify the apostrophes
people type (' and ’) to "'"; Unicode NFC; lower-case (only cased scripts change); keep an
apostrophe between two letters of a word ("a'r", "don't"), make every other one a space; every
punctuation character of every script (Unicode category P*: danda, quotes of every kind, dashes,
?!,.:; ...) becomes a space; collapse white space. Letters, marks, digits and symbols stay as
they are: no letter of one language is mapped to another's (Bengali র stays র).

Bump `NORMALIZER_VERSION` whenever a rule changes, so data dirs that record it can tell which
rules produced them.
"""

from __future__ import annotations

import unicodedata

from cvasr.text.charrules import (INVISIBLES, TranslationTable, char_mapping, drop_invisible_rule,
                                  punctuation_rule, resolve_in_word_apostrophes)

__all__ = ["APOSTROPHES", "NORMALIZER_VERSION", "normalize"]

NORMALIZER_VERSION = "generic-2"

#: what people type for an apostrophe: ASCII ' and the right single quotation mark
APOSTROPHES = "'\u2019"

_CLEAN = TranslationTable({**char_mapping(INVISIBLES, None), **char_mapping(APOSTROPHES, "'")},
                          drop_invisible_rule)
_PUNCTUATION = TranslationTable({ord("'"): "'"}, punctuation_rule)


def normalize(text: str) -> str:
    """The canonical, punctuation-free, lower-case spelling of a sentence in any language.

    Pure and idempotent: normalize(normalize(x)) == normalize(x).
    """
    text = unicodedata.normalize("NFC", text.translate(_CLEAN)).lower()
    # lower() can decompose (İ -> i + combining dot): compose again
    text = unicodedata.normalize("NFC", text)
    text = resolve_in_word_apostrophes(text)
    return " ".join(text.translate(_PUNCTUATION).split())
