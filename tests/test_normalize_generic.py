"""The generic normaliser, for every language without rules of its own: a table over several
scripts, and the registry's choice between it and a language's own rules.

Invisible or look-alike characters are written as escapes so each row says exactly which code
points go in and which come out.
"""

from __future__ import annotations

import unicodedata

import pytest

from cvasr.text import generic
from cvasr.text.normalize import get_normalizer

BENGALI_RA = "\u09b0"
ASSAMESE_RA = "\u09f0"

TABLE = [
    # Latin, Welsh: circumflexes stay (NFC composes a typed combining one), case folds,
    # an in-word apostrophe typed ' or ’ is kept as ', quotes go
    ("Mae'r ddafad yn y cae.", "mae'r ddafad yn y cae"),
    ("Mae\u2019r Ŵyn yn TŶ", "mae'r ŵyn yn tŷ"),
    ("Mae'r w\u0302yn", "mae'r ŵyn"),
    ("\u201cPaid!\u201d meddai hi \u2014 \u2018na\u2019", "paid meddai hi na"),
    ("'Dyma'r' lle", "dyma'r lle"),
    ("rock \u2018n\u2019 roll", "rock n roll"),
    ("Qu'est-ce que c'est ?", "qu'est ce que c'est"),
    ("«Bonjour», dit-il…", "bonjour dit il"),
    ("¿Qué? ¡Sí!", "qué sí"),
    ("Straße", "straße"),  # lower-cased, not case-folded to "strasse"
    # Bengali: danda and quotes go, র stays র (no Assamese rule), nukta letters NFC
    ("আমি \u201cবাংলায়\u201d গান গাই।", "আমি বাংলায় গান গাই"),
    (f"{BENGALI_RA}াম, শ্যাম॥", f"{BENGALI_RA}াম শ্যাম"),
    ("\u09a1\u09bc", unicodedata.normalize("NFC", "\u09dc")),
    # Devanagari, Arabic, CJK punctuation of their own scripts
    ("नमस्ते। आप कैसे हैं?", "नमस्ते आप कैसे हैं"),
    ("مرحبا، كيف حالك؟", "مرحبا كيف حالك"),
    ("你好，世界。「引号」", "你好 世界 引号"),
    # invisibles and BOM removed; whitespace of every kind collapsed; digits and symbols stay
    ("\ufeffab\u200bc d\u200de\u00ad", "abc de"),
    ("a\u00a0\u00a0b\t\u3000c", "a b c"),
    ("C++ costs $5 + 10%", "c++ costs $5 + 10"),
    ("১২৩ 456", "১২৩ 456"),
    ("", ""),
    ("।?!…", ""),
]


@pytest.mark.parametrize(("text", "expected"), TABLE, ids=[f"row{i}" for i in range(len(TABLE))])
def test_generic_table(text: str, expected: str) -> None:
    out = generic.normalize(text)
    assert out == expected
    assert generic.normalize(out) == out  # idempotent
    assert unicodedata.is_normalized("NFC", out)


def test_every_punctuation_character_goes() -> None:
    """Every code point of category P* but the apostrophes disappears between two letters."""
    kept = []
    for cp in range(0x110000):
        ch = chr(cp)
        if not unicodedata.category(ch).startswith("P") or ch in generic.APOSTROPHES:
            continue
        if generic.normalize(f"a{ch}b") != "a b":
            kept.append(f"U+{cp:04X}")
    assert kept == []


@pytest.mark.parametrize("code", ["bn", "cy", "hi", "pt-BR", "xx", "AS-x"])
def test_languages_without_rules_get_the_generic_normaliser(code: str) -> None:
    normalizer = get_normalizer(code)
    assert normalizer.apply is generic.normalize and not normalizer.dedicated
    assert (normalizer.name, normalizer.version) == ("generic", generic.NORMALIZER_VERSION)
    assert "has no rules of its own" in normalizer.describe()
    assert f"'{code}'" in normalizer.describe()


def test_assamese_rules_touch_no_other_language() -> None:
    sentence = f"{BENGALI_RA}াম\u2018s ঘ{BENGALI_RA}।"
    assert get_normalizer("as")(sentence).count(ASSAMESE_RA) == 2
    assert get_normalizer("bn")(sentence) == f"{BENGALI_RA}াম s ঘ{BENGALI_RA}"
    assert ASSAMESE_RA not in get_normalizer("bn")(sentence)


def test_empty_code_is_an_error() -> None:
    with pytest.raises(ValueError, match="empty language code"):
        get_normalizer(" ")
