"""The files transformers' `Wav2Vec2ProcessorWithLM` reads for its word-LM decoder (pyctcdecode's
`BeamSearchDecoderCTC.save_to_dir` layout), written without pyctcdecode.

pyctcdecode pins numpy<2, so it cannot live in the recipe's environment; its files are plain and
are written here directly, from stage 3's LM and the weights stage 5 chose:

    alphabet.json                {"labels": [...], "is_bpe": false}: one label per CTC output,
                                 "" for the blank, " " for the word delimiter, "⁇" for unknown
    language_model/attrs.json    alpha (lm_weight), beta (word_bonus), unk_score_offset,
                                 score_boundary
    language_model/unigrams.txt  the LM's words, one a line
    language_model/lm.bin        the KenLM binary

The recipe's own LM search (ctc-beam-decoder, a C++ port of pyctcdecode) scores with the same
four numbers, so pyctcdecode decoding these files gives the recipe's text (tests check it with
pyctcdecode in a separate environment).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Sequence

from cvasr.decoding.lm_search import search_labels
from cvasr.decoding.options import DecodingOptions
from cvasr.lm.ngram import BINARY, UNIGRAMS, LMError

ALPHABET = "alphabet.json"
LM_SUBDIR = "language_model"
ATTRS = "attrs.json"
#: pyctcdecode's spelling of the unknown token in a character alphabet
UNK_LABEL = "\u2047"
#: the processor class transformers' pipeline looks for before it loads the decoder
PROCESSOR_WITH_LM = "Wav2Vec2ProcessorWithLM"


def alphabet_labels(token_list: Sequence[str]) -> list[str]:
    """The labels pyctcdecode's alphabet holds for an espnet2 token list: the search's labels,
    with `<unk>` as pyctcdecode normalises it."""
    return [UNK_LABEL if t == "<unk>" else t for t in search_labels(token_list)]


def write_decoder_files(hf_dir: Path, token_list: Sequence[str], lm_dir: Path,
                        options: DecodingOptions) -> None:
    """alphabet.json and language_model/ in `hf_dir`, and the processor class that makes
    transformers load them."""
    hf_dir, lm_dir = Path(hf_dir), Path(lm_dir)
    for name in (BINARY, UNIGRAMS):
        if not (lm_dir / name).is_file():
            raise LMError(f"no word LM in {lm_dir} (no {name}): run stage 3 with the LM on")
    (hf_dir / ALPHABET).write_text(
        json.dumps({"labels": alphabet_labels(token_list), "is_bpe": False}, ensure_ascii=False),
        encoding="utf-8")
    lm_out = hf_dir / LM_SUBDIR
    if lm_out.exists():
        shutil.rmtree(lm_out)  # pyctcdecode wants exactly three files there
    lm_out.mkdir()
    (lm_out / ATTRS).write_text(json.dumps({
        "alpha": options.lm_weight, "beta": options.word_bonus,
        "unk_score_offset": options.unk_offset, "score_boundary": True}), encoding="utf-8")
    shutil.copyfile(lm_dir / UNIGRAMS, lm_out / UNIGRAMS)
    shutil.copyfile(lm_dir / BINARY, lm_out / BINARY)
    set_processor_class(hf_dir, PROCESSOR_WITH_LM)


def set_processor_class(hf_dir: Path, name: str) -> None:
    """Name the processor class wherever a transformers version looks for it: the pipeline reads
    it from the feature extractor's config (5.x: nested in processor_config.json; 4.x:
    preprocessor_config.json), AutoProcessor from processor_config.json."""
    for file, nested in (("processor_config.json", "feature_extractor"),
                         ("preprocessor_config.json", None), ("tokenizer_config.json", None)):
        path = Path(hf_dir) / file
        if not path.is_file():
            continue
        conf = json.loads(path.read_text(encoding="utf-8"))
        conf["processor_class"] = name
        if nested and isinstance(conf.get(nested), dict):
            conf[nested]["processor_class"] = name
        path.write_text(json.dumps(conf, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
