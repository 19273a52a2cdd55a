"""Any Common Voice language: Bengali and Welsh releases in a later release's layout, made here
with espeak-ng, prepared by the recipe (stages 0-2) into data dirs whose texts are exactly the
generic normaliser's output.

The sentences carry what real Common Voice text carries: each script's own punctuation (danda,
curly quotes, dashes, ellipsis), in-word apostrophes typed ' and ’, circumflexes typed
precomposed and combining, Bengali র (which only the Assamese rules map to ৰ), zero-width
non-joiners and nukta letters.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import RECIPE
from cvasr.corpora.commonvoice import read_tsv
from cvasr.corpora.demo import plan_sentence_release, write_release
from cvasr.data.datadir import validate_data_dir
from cvasr.data.kaldi import read_table
from cvasr.text import generic

#: the header of Common Voice 17.0's tsv files: columns added, `accent` renamed `accents`
CV17_HEADER = ("client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes",
               "down_votes", "age", "gender", "accents", "variant", "locale", "segment")
RELEASE = "cv-corpus-17.0-2024-03-15"

# (sentence as written, its generic normalisation written out by hand)
BENGALI = {
    "train": [
        ("আমি \u201cবাংলায়\u201d গান গাই।", "আমি বাংলায় গান গাই"),
        ("সে বাজারে গেল, আর মাছ কিনল।", "সে বাজারে গেল আর মাছ কিনল"),
        ("রাম \u2018ভালো\u2019 ছেলে।", "রাম ভালো ছেলে"),
        ("বই\u200cটা টেবিলে রাখো।", "বইটা টেবিলে রাখো"),
        ("আজ বৃষ্টি হবে \u2014 মনে হয়॥", "আজ বৃষ্টি হবে মনে হয়"),
    ],
    "dev": [("তুমি কেমন আছ?", "তুমি কেমন আছ"), ("আমার নাম রবি।", "আমার নাম রবি")],
    "test": [("এটা আমার বা\u09dcি।", "এটা আমার বা\u09a1\u09bcি"),
             ("ওরা খেলছে মাঠে!", "ওরা খেলছে মাঠে")],
}
WELSH = {
    "train": [
        ("Mae\u2019r ddafad yn y cae.", "mae'r ddafad yn y cae"),
        ("\u201cBore da,\u201d meddai hi.", "bore da meddai hi"),
        ("Dw i\u2019n hoffi te \u2014 a choffi!", "dw i'n hoffi te a choffi"),
        ("Ble mae\u2019r T\u0176?", "ble mae'r tŷ"),
        ("Roedd y dw\u0302r yn oer; roedd yr haul yn gynnes.",
         "roedd y dŵr yn oer roedd yr haul yn gynnes"),
    ],
    "dev": [("Mae'r plant yn chwarae.", "mae'r plant yn chwarae"),
            ("Diolch yn fawr!", "diolch yn fawr")],
    "test": [("Mae \u0175yn yn y cae\u2026", "mae ŵyn yn y cae"),
             ("'Beth yw dy enw di?'", "beth yw dy enw di")],
}


def _release(tmp_path: Path, lang: str, table: dict[str, list[tuple[str, str]]]) -> Path:
    root = tmp_path / RELEASE / lang
    plan = plan_sentence_release(lang, {s: [w for w, _ in rows] for s, rows in table.items()})
    write_release(root, plan, CV17_HEADER, show_progress=False)
    return root


def _run(recipe: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(RECIPE.parent / recipe / "run.sh"), *map(str, args)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("recipe, lang, table", [("cv", "bn", BENGALI), ("as_cv7", "cy", WELSH)],
                         ids=["bengali-egs-cv", "welsh-egs-as_cv7-lang"])
def test_release_in_another_language_prepares_with_the_generic_normaliser(
        recipe: str, lang: str, table: dict[str, list[tuple[str, str]]], tmp_path: Path,
        tiny_upstream: Path) -> None:
    root = _release(tmp_path, lang, table)
    assert read_tsv(root / "train.tsv").header == list(CV17_HEADER)
    work = tmp_path / "work"
    proc = _run(recipe, "--cv_root", root, "--lang", lang, "--upstream_ckpt", tiny_upstream,
                "--work_dir", work, "--stage", "0", "--stop-stage", "2", "--nj", "2")

    assert f"Common Voice release at {root} (Common Voice 17.0, '{lang}')" in proc.stdout
    assert (f"text normaliser for '{lang}': generic ({generic.NORMALIZER_VERSION}); this "
            "language has no rules of its own") in proc.stdout
    report = json.loads((work / "data" / "prep_report.json").read_text(encoding="utf-8"))
    assert report["info"]["lang"] == lang
    assert (report["info"]["normalizer"], report["info"]["normalizer_version"]) == (
        "generic", generic.NORMALIZER_VERSION)

    for split, rows in table.items():
        data = work / "data" / split
        assert validate_data_dir(data) == []
        assert validate_data_dir(work / "dump" / split) == []
        text, orig = read_table(data / "text"), read_table(data / "text.orig")
        assert text.keys() == orig.keys() and len(text) == len(rows)
        # exactly the generic normaliser's output, and what the table says it is
        assert all(text[u] == generic.normalize(orig[u]) for u in text)
        assert sorted(text.values()) == sorted(expected for _, expected in rows)
        assert all("\u09f0" not in t for t in text.values())  # no Assamese ৰ in Bengali
        assert read_table(work / "dump" / split / "text") == text
