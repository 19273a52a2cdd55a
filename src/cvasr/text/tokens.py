"""Stage 3, first half: the token list (and the sentencepiece model for BPE) from training text.

Uses espnet2's own tokenizers, so training and decoding split text exactly as the list was made:
characters by default (what the seed used; the space is its own token, `<space>`), or
sentencepiece unigram pieces with `--token_type bpe --nbpe N`. The list starts with `<blank>`
(CTC's blank must be id 0) and `<unk>`, and ends with `<sos/eos>`, as espnet2 expects.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from cvasr import defaults
from cvasr.data.kaldi import iter_table

TOKEN_TYPES = ("char", "bpe")


def _transcripts(text_file: Path) -> list[str]:
    """The text column of a Kaldi `text` file."""
    return [entry.value for entry in iter_table(text_file)]


def make_token_list(text_file: Path, out_dir: Path, token_type: str = defaults.TOKEN_TYPE,
                    nbpe: int = defaults.NBPE) -> Path:
    """Write out_dir/tokens.txt (and out_dir/bpe.model for BPE); return the token list path."""
    from espnet2.bin.tokenize_text import tokenize

    if token_type not in TOKEN_TYPES:
        raise ValueError(f"unknown token type {token_type!r}; choose from {', '.join(TOKEN_TYPES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bpemodel = None
    with tempfile.TemporaryDirectory(prefix="cvasr-tokens-") as tmp:
        corpus = Path(tmp) / "train.txt"
        corpus.write_text("\n".join(_transcripts(text_file)) + "\n", encoding="utf-8")
        if token_type == "bpe":
            import sentencepiece as spm

            prefix = out_dir / "bpe"
            spm.SentencePieceTrainer.train(
                input=str(corpus), vocab_size=nbpe, model_type="unigram",
                model_prefix=str(prefix), character_coverage=1.0,
                input_sentence_size=100_000_000, minloglevel=2)
            bpemodel = f"{prefix}.model"
        tokens = out_dir / "tokens.txt"
        tokenize(input=str(corpus), output=str(tokens), field=None, delimiter=None,
                 token_type=token_type, space_symbol="<space>", non_linguistic_symbols=None,
                 bpemodel=bpemodel, log_level="WARNING", write_vocabulary=True,
                 vocabulary_size=0, remove_non_linguistic_symbols=False, cutoff=0,
                 add_symbol=["<blank>:0", "<unk>:1", "<sos/eos>:-1"], cleaner=None, g2p=None,
                 add_nonsplit_symbol=[])
    return tokens


def read_token_list(path: Path) -> list[str]:
    return Path(path).read_text(encoding="utf-8").splitlines()
