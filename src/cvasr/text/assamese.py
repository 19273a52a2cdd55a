"""Assamese transcript normaliser.

Common Voice sentences reach us typed on many keyboards, so one Assamese word
can arrive as several code-point sequences (precomposed or nukta-decomposed
letters, Bengali RA for Assamese RA, stray zero-width joiners, curly or straight
apostrophes). A CTC model trained on one spelling and scored against another
loses accuracy for nothing, so training text, the tokenizer corpus and the
references and hypotheses used for WER/CER all go through `normalize`, which
maps every variant to one spelling and drops what is not spoken (punctuation).

The rules are data (the tables below); `normalize` only applies them in order.
Bump `NORMALIZER_VERSION` whenever a table or a step changes, so data
directories that record it can tell which rules produced them.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Mapping

from cvasr.text.charrules import (INVISIBLES, TranslationTable, char_mapping, drop_invisible_rule,
                                  punctuation_rule, resolve_in_word_apostrophes)

__all__ = ["NORMALIZER_VERSION", "normalize"]

NORMALIZER_VERSION = "as-1"

# --- Rule tables -------------------------------------------------------------

# Characters typed for the Assamese in-word apostrophe (ল'ৰা, হ'ব, ক'ত);
# all become ASCII "'" before deciding whether each one is in-word (rule 5).
APOSTROPHES = (
    "'"  # APOSTROPHE
    "\u2018"  # LEFT SINGLE QUOTATION MARK
    "\u2019"  # RIGHT SINGLE QUOTATION MARK
    "\u02bc"  # MODIFIER LETTER APOSTROPHE (a letter, not punctuation, by category)
    "\u2032"  # PRIME
)

# Letter substitutions (rule 3): Bengali RA -> Assamese RA. Assamese WA (U+09F1) stays.
LETTER_MAP: Mapping[str, str] = {"\u09b0": "\u09f0"}

# Nukta letters and their canonical (precomposed) form (rule 1). NFC cannot be
# used for these: U+09DC, U+09DD and U+09DF are composition exclusions, so NFC
# *decomposes* them to base + U+09BC. We keep the precomposed code points as the
# canonical output because they are single letters to readers and to espeak-ng,
# and because one code point per letter keeps character-level units (CER,
# character tokenizers) aligned with what a person counts as a letter.
NUKTA_COMPOSE: Mapping[str, str] = {
    "\u09af\u09bc": "\u09df",  # য + ় -> য়
    "\u09a1\u09bc": "\u09dc",  # ড + ় -> ড়
    "\u09a2\u09bc": "\u09dd",  # ঢ + ় -> ঢ়
}

# Characters removed as punctuation (rule 4) on top of Unicode category P*,
# which already covers danda, double danda, quotes, dashes, ellipsis and most of
# ASCII. Listed here: the ASCII punctuation that Unicode files under symbols
# ($ + < = > ^ ` | ~), the minus sign and the acute accent used as a quote.
# Each is replaced by a space, then whitespace is collapsed, so punctuation
# between words splits them ("কিতাপ,কলম" -> "কিতাপ কলম"). A hyphen inside a word
# therefore splits it too ("উত্তৰ-পূব" -> "উত্তৰ পূব"): Assamese writes most such
# compounds both ways, and scoring the parts as separate words is the usual
# choice. The same holds between digits ("১,২০০" -> "১ ২০০").
EXTRA_PUNCTUATION = string.punctuation.replace("'", "") + "\u2212\u00b4"

# --- Machinery ---------------------------------------------------------------


# Stage 1: delete invisibles, unify apostrophes, map letters.
_CLEAN = TranslationTable(
    {
        **char_mapping(INVISIBLES, None),
        **char_mapping(APOSTROPHES, "'"),
        **{ord(src): dst for src, dst in LETTER_MAP.items()},
    },
    drop_invisible_rule,
)

# Stage 2: punctuation to spaces; the apostrophes still present are in-word, keep them.
_PUNCTUATION = TranslationTable(
    {**char_mapping(EXTRA_PUNCTUATION, " "), ord("'"): "'"},
    punctuation_rule,
)

_NUKTA_RE = re.compile("|".join(map(re.escape, NUKTA_COMPOSE)))


def normalize(text: str) -> str:
    """Return the canonical, punctuation-free spelling of an Assamese sentence.

    Pure and idempotent: normalize(normalize(x)) == normalize(x).
    Steps, in order:
      1. case-fold (only cased scripts change; Assamese has no case);
      2. delete invisibles, unify apostrophe characters to "'", map র -> ৰ;
      3. NFC, then recompose য়, ড়, ঢ় to their precomposed code points;
      4. keep "'" only between two letters/marks of a word, else make it a space;
      5. punctuation to spaces; collapse all whitespace to single spaces; strip.
    Digits (Assamese and ASCII) are left as they are.
    """
    # Case-fold first: folding can produce characters the later steps handle
    # (e.g. U+0149 -> U+02BC + n), and NFC afterwards recomposes what it splits.
    text = text.casefold().translate(_CLEAN)
    text = unicodedata.normalize("NFC", text)
    if "\u09bc" in text:
        text = _NUKTA_RE.sub(lambda m: NUKTA_COMPOSE[m.group()], text)
    text = resolve_in_word_apostrophes(text)
    return " ".join(text.translate(_PUNCTUATION).split())
