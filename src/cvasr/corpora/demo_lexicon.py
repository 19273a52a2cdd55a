"""Assamese vocabulary and sentence patterns for the synthetic demo corpus.

The demo corpus must look like Common Voice Assamese to every stage of the recipe: real words in
Assamese script (ৰ, ৱ, nukta letters, in-word apostrophes as in গ'ল), full sentences ending in a
danda, several thousand possible sentences so that train, dev and test can be sentence-disjoint.
Sentences are built from third-person subjects and verb forms so that agreement is always right;
each verb carries the objects it takes and each tense the time words that fit it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from cvasr.text.assamese import NUKTA_COMPOSE

#: Decomposed nukta sequences and the precomposed letter each stands for (the normaliser's table).
NUKTA_LETTERS = NUKTA_COMPOSE


def precompose_nukta(text: str) -> str:
    """Write য়/ড়/ঢ় as single code points (NFC decomposes them; espeak-ng needs them whole)."""
    for seq, letter in NUKTA_LETTERS.items():
        text = text.replace(seq, letter)
    return text


def decompose_nukta(text: str) -> str:
    """The inverse of `precompose_nukta`: how many keyboards and NFC write the nukta letters."""
    for seq, letter in NUKTA_LETTERS.items():
        text = text.replace(letter, seq)
    return text


TENSES = ("present", "past", "future")


@dataclass(frozen=True)
class Subject:
    nominative: str
    genitive: str


# Third-person subjects only, so the verb forms below always agree.
SUBJECTS = [
    Subject("ৰাম", "ৰামৰ"),
    Subject("সীতা", "সীতাৰ"),
    Subject("মাধৱ", "মাধৱৰ"),
    Subject("দেউতা", "দেউতাৰ"),
    Subject("মা", "মাৰ"),
    Subject("ককাই", "ককাইৰ"),
    Subject("আইতা", "আইতাৰ"),
    Subject("শিক্ষকজন", "শিক্ষকজনৰ"),
    Subject("ছাত্ৰজন", "ছাত্ৰজনৰ"),
    Subject("খেতিয়কজন", "খেতিয়কজনৰ"),
    Subject("ল'ৰাজন", "ল'ৰাজনৰ"),
    Subject("ছোৱালীজনী", "ছোৱালীজনীৰ"),
    Subject("বুঢ়ীজনী", "বুঢ়ীজনীৰ"),
    Subject("তেওঁ", "তেওঁৰ"),
    Subject("সি", "তাৰ"),
    Subject("তাই", "তাইৰ"),
    Subject("মোৰ বন্ধু", "মোৰ বন্ধুৰ"),
    Subject("আমাৰ চুবুৰীয়া", "আমাৰ চুবুৰীয়াৰ"),
]

# Time words that fit each tense.
TIME_WORDS = {
    "present": ["সদায়", "প্ৰতিদিনে", "ৰাতিপুৱা", "গধূলি", "দুপৰীয়া", "প্ৰায়ে"],
    "past": ["কালি", "আজি ৰাতিপুৱা", "যোৱা সপ্তাহত", "পৰহি", "কালি গধূলি", "যোৱা বছৰ"],
    "future": ["কাইলৈ", "অহা সপ্তাহত", "আজি গধূলি", "পিছত", "অহা বছৰ", "কাইলৈ ৰাতিপুৱা"],
}


@dataclass(frozen=True)
class Verb:
    forms: dict[str, str]  # tense -> third-person form
    objects: tuple[str, ...]


VERBS = [
    Verb({"present": "খায়", "past": "খালে", "future": "খাব"},
         ("ভাত", "মাছ", "আম", "কল", "পিঠা", "জলপান", "মিঠাই", "চাহ", "গাখীৰ", "কমলা", "দৈ", "মাংস")),
    Verb({"present": "পঢ়ে", "past": "পঢ়িলে", "future": "পঢ়িব"},
         ("কিতাপ", "বাতৰি কাকত", "আলোচনী", "কবিতা", "চিঠি", "উপন্যাস", "পাঠ")),
    Verb({"present": "লিখে", "past": "লিখিলে", "future": "লিখিব"},
         ("চিঠি", "কবিতা", "গল্প", "ৰচনা", "দিনলিপি", "প্ৰবন্ধ")),
    Verb({"present": "কিনে", "past": "কিনিলে", "future": "কিনিব"},
         ("কাপোৰ", "কলম", "চাউল", "শাক", "গামোচা", "জোতা", "ছাতি", "কিতাপ", "মাছ", "চেনি")),
    Verb({"present": "চায়", "past": "চালে", "future": "চাব"},
         ("ছবি", "নাটক", "ভাওনা", "খেল", "বাতৰি", "চিনেমা")),
    Verb({"present": "গায়", "past": "গালে", "future": "গাব"},
         ("গীত", "বিহুগীত", "বনগীত", "বৰগীত", "নাম")),
    Verb({"present": "বনায়", "past": "বনালে", "future": "বনাব"},
         ("আঞ্জা", "পিঠা", "চাহ", "ভাত", "লাড়ু", "খিচিৰি")),
    Verb({"present": "ধোৱে", "past": "ধুলে", "future": "ধুব"},
         ("কাপোৰ", "বাচন", "গাড়ী", "কাপ", "চকী")),
]

GO = {"present": "যায়", "past": "গ'ল", "future": "যাব"}
COME_BACK = {"present": "ঘূৰি আহে", "past": "ঘূৰি আহিল", "future": "ঘূৰি আহিব"}
STAY = {"present": "থাকে", "past": "থাকিল", "future": "থাকিব"}
WORK = {"present": "কাম কৰে", "past": "কাম কৰিলে", "future": "কাম কৰিব"}


@dataclass(frozen=True)
class Place:
    allative: str  # to the place
    locative: str  # at the place
    ablative: str  # from the place
    genitive: str  # of the place


def _place(stem: str, oblique: str | None = None) -> Place:
    base = oblique or stem
    return Place(base + "লৈ", base + "ত", base + "ৰ পৰা", base + "ৰ")


PLACES = [
    _place("বজাৰ"), _place("স্কুল"), _place("নদী"), _place("পথাৰ"), _place("ঘৰ"),
    _place("গুৱাহাটী"), _place("চহৰ"), _place("অফিচ"), _place("কলেজ"), _place("মন্দিৰ"),
    _place("নামঘৰ"), _place("তেজপুৰ"), _place("যোৰহাট"), _place("শিৱসাগৰ"), _place("বৰপেটা"),
    _place("মাজুলী"), _place("শিলচৰ"), _place("নলবাৰী"), _place("ধুবুৰী"), _place("গোলাঘাট"),
    _place("গাঁও", "গাঁৱ"), _place("ডিব্ৰুগড়"),
]

ANIMALS = [("এটা", "কুকুৰ"), ("এটা", "মেকুৰী"), ("এটা", "গৰু"), ("এটা", "ছাগলী"), ("এটা", "হাঁহ"),
           ("এটা", "কুকুৰা"), ("এটা", "ম'হ"), ("এটা", "ঘোঁৰা")]
ANIMAL_ADJECTIVES = ["ডাঙৰ", "সৰু", "বগা", "ক'লা", "ৰঙা", "ধুনীয়া", "বুঢ়া", "নতুন"]

THINGS = ["বাটটো", "নদীখন", "বজাৰখন", "পথাৰখন", "মন্দিৰটো", "স্কুলখন", "হাস্পতালখন", "পুখুৰীটো",
          "দলংখন", "বাগিচাখন"]
THING_ADJECTIVES = ["ধুনীয়া", "ডাঙৰ", "পুৰণি", "নতুন", "ব্যস্ত", "শান্ত", "পৰিষ্কাৰ", "দীঘল", "বহল"]

WEATHER = ["ভাল", "গৰম", "ঠাণ্ডা", "সেমেকা", "ধুনীয়া", "বেয়া"]
WEATHER_TIMES = ["আজি", "কালি", "ৰাতিপুৱা", "গধূলি", "এতিয়া"]


def _sentence_pattern(rng: random.Random) -> str:
    """One sentence from one of the patterns, chosen with fixed weights."""
    pattern = rng.choices(
        ["object", "two_objects", "go", "come_back", "stay", "work", "animal", "thing", "weather",
         "question"],
        weights=[30, 8, 14, 6, 6, 6, 8, 10, 2, 4],
    )[0]
    subj = rng.choice(SUBJECTS)
    tense = rng.choice(TENSES)
    when = rng.choice(TIME_WORDS[tense])
    if pattern == "object":
        verb = rng.choice(VERBS)
        return f"{subj.nominative} {when} {rng.choice(verb.objects)} {verb.forms[tense]}।"
    if pattern == "two_objects":
        verb = rng.choice(VERBS)
        first, second = rng.sample(verb.objects, 2)
        return f"{subj.nominative} {when} {first} আৰু {second} {verb.forms[tense]}।"
    if pattern == "go":
        return f"{subj.nominative} {when} {rng.choice(PLACES).allative} {GO[tense]}।"
    if pattern == "come_back":
        return f"{subj.nominative} {when} {rng.choice(PLACES).ablative} {COME_BACK[tense]}।"
    if pattern == "stay":
        return f"{subj.nominative} {when} {rng.choice(PLACES).locative} {STAY[tense]}।"
    if pattern == "work":
        return f"{subj.nominative} {when} {rng.choice(PLACES).locative} {WORK[tense]}।"
    if pattern == "animal":
        classifier, animal = rng.choice(ANIMALS)
        adjective = rng.choice(ANIMAL_ADJECTIVES)
        return f"{subj.genitive} ঘৰত {classifier} {adjective} {animal} আছে।"
    if pattern == "thing":
        return f"{rng.choice(PLACES).genitive} {rng.choice(THINGS)} বৰ {rng.choice(THING_ADJECTIVES)}।"
    if pattern == "weather":
        return f"{rng.choice(WEATHER_TIMES)} বতৰ বৰ {rng.choice(WEATHER)}।"
    return f"{subj.nominative} {when} ক'লৈ {GO[tense]}?"


def make_sentences(count: int, seed: int) -> list[str]:
    """`count` distinct sentences, deterministic for `seed`, nukta letters precomposed."""
    rng = random.Random(seed)
    seen: dict[str, None] = {}
    attempts = 0
    while len(seen) < count:
        attempts += 1
        if attempts > count * 50:
            raise ValueError(f"the patterns cannot produce {count} distinct sentences")
        seen.setdefault(precompose_nukta(_sentence_pattern(rng)), None)
    return list(seen)


def vocabulary() -> set[str]:
    """Every word the patterns can produce (used to check espeak-ng pronounces them all)."""
    words: set[str] = set()

    def add(*phrases: str) -> None:
        for phrase in phrases:
            words.update(precompose_nukta(phrase).split())

    for s in SUBJECTS:
        add(s.nominative, s.genitive)
    for forms in TIME_WORDS.values():
        add(*forms)
    for verb in VERBS:
        add(*verb.forms.values(), *verb.objects)
    for table in (GO, COME_BACK, STAY, WORK):
        add(*table.values())
    for p in PLACES:
        add(p.allative, p.locative, p.ablative, p.genitive)
    for classifier, animal in ANIMALS:
        add(classifier, animal)
    add(*ANIMAL_ADJECTIVES, *THINGS, *THING_ADJECTIVES, *WEATHER, *WEATHER_TIMES)
    add("আৰু", "ঘৰত", "আছে", "বৰ", "বতৰ", "ক'লৈ")
    return words
