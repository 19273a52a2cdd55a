"""Table-driven tests for the Assamese normaliser and the normaliser registry.

Invisible or look-alike characters are written as escapes so each row says
exactly which code points go in and which come out.
"""

from __future__ import annotations

import pytest

from cvasr.text.assamese import NORMALIZER_VERSION, normalize
from cvasr.text.normalize import get_normalizer, known_languages

YA = "\u09df"  # YYA, one code point (canonical)
RRA = "\u09dc"  # RRA, one code point (canonical)
RHA = "\u09dd"  # RHA, one code point (canonical)
YA_DECOMPOSED = "\u09af\u09bc"
RRA_DECOMPOSED = "\u09a1\u09bc"
RHA_DECOMPOSED = "\u09a2\u09bc"
BENGALI_RA = "\u09b0"  # Bengali RA
ASSAMESE_RA = "\u09f0"  # Assamese RA

# (id, input, expected output)
PLAIN = [
    ("danda", "মই কালি গুৱাহাটীলৈ গৈছিলোঁ।", "মই কালি গুৱাহাটীলৈ গৈছিলোঁ"),
    ("double-danda", "ব্ৰহ্মপুত্ৰ এখন ডাঙৰ নদী॥", "ব্ৰহ্মপুত্ৰ এখন ডাঙৰ নদী"),
    ("question-mark", "তুমি কেনে আছা?", "তুমি কেনে আছা"),
    ("exclamation", "কি ধুনীয়া দৃশ্য!", f"কি ধুনী{YA}া দৃশ্য"),
    ("comma-between-words", "কিতাপ,কলম আৰু খাতা লৈ আহা।", "কিতাপ কলম আৰু খাতা লৈ আহা"),
    ("danda-mid-sentence", "আজি বতৰ ভাল।কাইলৈ বৰষুণ দিব।", "আজি বতৰ ভাল কাইলৈ বৰষুণ দিব"),
    ("plain-sentence", "আমাৰ গাঁৱত এখন বিদ্যালয় আছে", f"আমাৰ গাঁৱত এখন বিদ্যাল{YA} আছে"),
    ("signs-kept", "উৎসৱৰ দিনা দুঃখ নকৰিবা, আঁঠু কাঢ়ি নবহিবা।", f"উৎসৱৰ দিনা দুঃখ নকৰিবা আঁঠু কা{RHA}ি নবহিবা"),
]

NUKTA = [
    ("ya-decomposed", f"নি{YA_DECOMPOSED}ম মানি চলা।", f"নি{YA}ম মানি চলা"),
    ("ya-precomposed", f"নি{YA}ম মানি চলা।", f"নি{YA}ম মানি চলা"),
    ("rra-decomposed", f"ঘ{RRA_DECOMPOSED}ীটো বন্ধ হৈ গ'ল।", f"ঘ{RRA}ীটো বন্ধ হৈ গ'ল"),
    ("rra-precomposed", f"ঘ{RRA}ীটো বন্ধ হৈ গ'ল।", f"ঘ{RRA}ীটো বন্ধ হৈ গ'ল"),
    ("rha-decomposed", f"প{RHA_DECOMPOSED}াশালিলৈ যোৱা।", f"প{RHA}াশালিলৈ যোৱা"),
    ("rha-precomposed", f"প{RHA}াশালিলৈ যোৱা।", f"প{RHA}াশালিলৈ যোৱা"),
    ("mixed-forms-one-sentence", f"স{YA_DECOMPOSED}ম আৰু স{YA}ম", f"স{YA}ম আৰু স{YA}ম"),
    ("nukta-before-virama", "\u09af\u09cd\u09bc", f"{YA}\u09cd"),
]

INVISIBLE = [
    ("zwj", "বিদ্\u200dযাল\u09dfলৈ", f"বিদ্যাল{YA}লৈ"),
    ("zwnj", "বিদ্\u200cযাল\u09dfলৈ", f"বিদ্যাল{YA}লৈ"),
    ("zwsp", "ভাল\u200b কথা\u200b", "ভাল কথা"),
    ("word-joiner", "অসম\u2060বাসী", "অসমবাসী"),
    ("soft-hyphen", "অসম\u00adবাসী", "অসমবাসী"),
    ("bom", "\ufeffঅসম দেশ", "অসম দেশ"),
    ("zwj-between-base-and-nukta", "স\u09af\u200d\u09bcম", f"স{YA}ম"),
]

RA = [
    ("bengali-ra", f"{BENGALI_RA}াতি হ'ল", f"{ASSAMESE_RA}াতি হ'ল"),
    ("bengali-ra-in-word", f"আমা{BENGALI_RA} ঘ{BENGALI_RA}", f"আমা{ASSAMESE_RA} ঘ{ASSAMESE_RA}"),
    ("assamese-ra-kept", f"{ASSAMESE_RA}ং", f"{ASSAMESE_RA}ং"),
    ("assamese-wa-kept", "গু\u09f1াহাটী", "গু\u09f1াহাটী"),
]

QUOTES = [
    ("ascii-double", 'তেওঁ ক\'লে, "মই নাযাওঁ।"', "তেওঁ ক'লে মই নাযাওঁ"),
    ("curly-double", "“আমাৰ গাঁৱত এখন বিদ্যালয় আছে।”", f"আমাৰ গাঁৱত এখন বিদ্যাল{YA} আছে"),
    ("guillemets", "«নমস্কাৰ» বুলি ক'লে", "নমস্কাৰ বুলি ক'লে"),
    ("low-and-single-guillemets", "„ভাল‚ ‹বেয়া›", f"ভাল বে{YA}া"),
    ("single-quoted-word", "'ভাল' শব্দটো", "ভাল শব্দটো"),
    ("curly-single-quoted-word", "\u2018ভাল\u2019 শব্দটো", "ভাল শব্দটো"),
    ("apostrophe-before-digits", "'৯০ চনত", "৯০ চনত"),
]

APOSTROPHE = [
    ("ascii", "ল'ৰাটো", "ল'ৰাটো"),
    ("right-single", "ল\u2019ৰাটো", "ল'ৰাটো"),
    ("left-single", "ল\u2018ৰাটো", "ল'ৰাটো"),
    ("modifier-letter", "ল\u02bcৰাটো", "ল'ৰাটো"),
    ("prime", "ল\u2032ৰাটো", "ল'ৰাটো"),
    ("sentence", "সি কাইলৈ ঘৰলৈ যাব নে নাই, ক'ব নোৱাৰি।", "সি কাইলৈ ঘৰলৈ যাব নে নাই ক'ব নোৱাৰি"),
    ("question", "তুমি ক\u2019ত যাবা?", "তুমি ক'ত যাবা"),
    ("next-to-space-removed", "ল' ৰা", "ল ৰা"),
    ("doubled-removed", "ল''ৰা", "ল ৰা"),
]

DASHES_AND_ELLIPSIS = [
    ("hyphen-splits-word", "উত্তৰ-পূব অঞ্চল", "উত্তৰ পূব অঞ্চল"),
    ("hyphen-u2010", "মাজে\u2010সময়ে", f"মাজে সম{YA}ে"),
    ("non-breaking-hyphen", "মাজে\u2011সময়ে", f"মাজে সম{YA}ে"),
    ("em-dash", "জীৱন — এক যাত্ৰা", "জীৱন এক যাত্ৰা"),
    ("en-dash-between-years", "১৯৪৭–১৯৫০", "১৯৪৭ ১৯৫০"),
    ("figure-dash-and-bar", "ক\u2012খ\u2015গ", "ক খ গ"),
    ("minus-sign", "\u2212৫ ডিগ্ৰী", "৫ ডিগ্ৰী"),
    ("ellipsis-char", "আৰু\u2026", "আৰু"),
    ("ascii-ellipsis-joins-words", "কিন্তু...তাৰ পিছত", "কিন্তু তাৰ পিছত"),
]

OTHER_PUNCTUATION = [
    ("brackets", "(অসম) [২০২৪] {নতুন}", "অসম ২০২৪ নতুন"),
    ("percent-and-symbols", "১০০% সঁচা + মিছা = <শূন্য>", "১০০ সঁচা মিছা শূন্য"),
    ("email-like", "mail@asom.in", "mail asom in"),
    ("all-ascii-punctuation-splits", "ক!\"#$%&()*+,./:;<=>?@[\\]^_`{|}~খ", "ক খ"),
    ("unicode-punctuation", "¡ক¿ খ• গ· ঘ§ ঙ。চ、", "ক খ গ ঘ ঙ চ"),
    ("digit-grouping-splits", "১,২০০ টকা", "১ ২০০ টকা"),
]

LATIN = [
    ("latin-lowercased", "আমি Google Map চাই আহিলোঁ", "আমি google map চাই আহিলোঁ"),
    ("latin-hyphen-digits", "COVID-19 ৰ টীকা", "covid 19 ৰ টীকা"),
    ("casefold", "STRASSE Straße", "strasse strasse"),
    ("latin-apostrophe-kept", "Don\u2019t", "don't"),
]

WHITESPACE = [
    ("tab-newline", "মই\tভাত\nখালোঁ\r\n", "মই ভাত খালোঁ"),
    ("nbsp", "মই\u00a0ভাত\u00a0খালোঁ", "মই ভাত খালোঁ"),
    ("unicode-spaces", "ক\u2009খ\u202fগ\u3000ঘ\u2003ঙ", "ক খ গ ঘ ঙ"),
    ("leading-trailing-runs", "   মই   ভাত   খালোঁ   ", "মই ভাত খালোঁ"),
]

DIGITS = [
    ("assamese-digits", "মোৰ বয়স ২৫ বছৰ।", f"মোৰ ব{YA}স ২৫ বছৰ"),
    ("ascii-digits", "ৰেলখন 10 বজাত আহিব।", "ৰেলখন 10 বজাত আহিব"),
    ("all-digits", "০১২৩৪৫৬৭৮৯ 0123456789", "০১২৩৪৫৬৭৮৯ 0123456789"),
]

COMBINED = [
    (
        "quoted-sentence-with-in-word-apostrophes",
        "\u2018ল\u2019ৰাজন ক\u2019ত গ\u2019ল?\u2019 মাকে সুধিলে।",
        "ল'ৰাজন ক'ত গ'ল মাকে সুধিলে",
    ),
    ("decomposed-nukta-zwj-danda", f"স{YA_DECOMPOSED}ম\u200d।", f"স{YA}ম"),
    (
        "bengali-ra-decomposed-nukta-curly-quotes",
        f"“আমা{BENGALI_RA} প{RHA_DECOMPOSED}াশালিখন ন\u09a4ুন।”",
        f"আমা{ASSAMESE_RA} প{RHA}াশালিখন নতুন",
    ),
    ("everything-at-once", "\ufeff  «ক'ত?»\u00a0\u200bHELLO—১২\u2026", "ক'ত hello ১২"),
]

EMPTY = [
    ("empty", "", ""),
    ("only-punctuation", "।॥?!…“”«»-—", ""),
    ("only-whitespace-and-invisibles", " \t\n\u00a0\u200b\u200d\ufeff", ""),
    ("only-apostrophes", "'' \u2019", ""),
]

CASES = (
    PLAIN
    + NUKTA
    + INVISIBLE
    + RA
    + QUOTES
    + APOSTROPHE
    + DASHES_AND_ELLIPSIS
    + OTHER_PUNCTUATION
    + LATIN
    + WHITESPACE
    + DIGITS
    + COMBINED
    + EMPTY
)

IDS = [case_id for case_id, _, _ in CASES]


def test_case_ids_are_unique() -> None:
    assert len(set(IDS)) == len(IDS)


@pytest.mark.parametrize(("case_id", "text", "expected"), CASES, ids=IDS)
def test_normalize(case_id: str, text: str, expected: str) -> None:
    assert normalize(text) == expected


@pytest.mark.parametrize(("case_id", "text", "expected"), CASES, ids=IDS)
def test_idempotent(case_id: str, text: str, expected: str) -> None:
    once = normalize(text)
    assert normalize(once) == once
    assert normalize(expected) == expected


@pytest.mark.parametrize(("case_id", "text", "expected"), CASES, ids=IDS)
def test_output_invariants(case_id: str, text: str, expected: str) -> None:
    out = normalize(text)
    assert BENGALI_RA not in out
    for decomposed in (YA_DECOMPOSED, RRA_DECOMPOSED, RHA_DECOMPOSED):
        assert decomposed not in out
    for invisible in "\u200b\u200c\u200d\u2060\u00ad\ufeff":
        assert invisible not in out
    assert out == out.strip()
    assert "  " not in out


@pytest.mark.parametrize(
    ("typed", "canonical"),
    [(YA_DECOMPOSED, YA), (RRA_DECOMPOSED, RRA), (RHA_DECOMPOSED, RHA)],
    ids=["ya", "rra", "rha"],
)
def test_nukta_forms_agree(typed: str, canonical: str) -> None:
    assert normalize(typed) == normalize(canonical) == canonical


def test_version_is_recorded() -> None:
    assert isinstance(NORMALIZER_VERSION, str) and NORMALIZER_VERSION
    assert get_normalizer("as").version == NORMALIZER_VERSION


# --- Registry ------------------------------------------------------------------


def test_registry_assamese() -> None:
    normalizer = get_normalizer("as")
    assert normalizer.apply is normalize and normalizer.dedicated
    assert (normalizer.name, normalizer.lang) == ("assamese", "as")
    assert normalizer("কিতাপ,কলম।") == "কিতাপ কলম"
    assert "as" in known_languages()
    assert normalizer.describe() == "text normaliser for 'as': assamese (as-1)"
