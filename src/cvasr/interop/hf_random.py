"""Randomly initialised transformers Wav2Vec2ForCTC directories in the seed's layout, for tests
and GPU checks where no model hub can be reached.

The shape is one of `cvasr.models.upstream.ARCHS` (`tiny`, or `xls_r_300m`: XLS-R 300M's exact
shape, layer-norm feature encoder, stable layer norm, conv bias, 128-wide positional conv in 16
groups), written through the same config mapping the import uses in reverse. The vocabulary is
the seed's: the characters, `|` between words, `[UNK]`, and the CTC blank `[PAD]` last.

A random-init model's CTC head would decode to one token or to noise; here it is set
deterministically so that the transcript follows the audio. On a fixed synthetic signal
(seeded noise under a syllable-rate envelope) the last hidden states are measured: a random
deep transformer's share one large common direction, so the head is a seeded Gaussian matrix
applied to the hidden state minus that mean (through the bias), scaled so that each token's
logit varies by LOGIT_SCALE from frame to frame (a clear argmax, which changes with the audio);
the word delimiter `|` is raised to win against the other characters on WORD_BREAK_SHARE of
the frames (words of a few characters); the blank gets a constant logit, the median over the
frames of the best other token's, so that it wins about half the frames, as in a trained CTC
model. Comparisons of decoders on it (ours against transformers') are then about real, varied
transcripts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch

#: the logits' spread across tokens, and the share of frames `|` wins among the characters
LOGIT_SCALE = 8.0
WORD_BREAK_SHARE = 0.15
#: the blank's constant logit is set on this many seconds of seeded, speech-like noise
CALIBRATION_SECONDS = 4.0


def seed_vocab(chars: Sequence[str]) -> dict[str, int]:
    """The seed's vocab.json: the characters (sorted, the space left out), `|`, `[UNK]`, `[PAD]`."""
    letters = sorted({c for c in chars if not c.isspace()} - {"|"})
    tokens = [*letters, "|", "[UNK]", "[PAD]"]
    return {t: i for i, t in enumerate(tokens)}


def build_random_hf_ctc(arch: str, vocab: dict[str, int], seed: int = 0):
    """A transformers Wav2Vec2ForCTC of the architecture, random init, CTC head as described."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    from cvasr.interop.hf_format import hf_config_from_s3prl
    from cvasr.models.upstream import ARCHS

    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose from {sorted(ARCHS)}")
    torch.manual_seed(seed)
    # the seed's fine-tuning settings over the architecture's
    fields = {**hf_config_from_s3prl(ARCHS[arch]), "mask_time_prob": 0.05, "layerdrop": 0.0,
              "final_dropout": 0.0}
    config = Wav2Vec2Config(**fields, vocab_size=len(vocab), pad_token_id=vocab["[PAD]"],
                            architectures=["Wav2Vec2ForCTC"])
    model = Wav2Vec2ForCTC(config).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    width = config.hidden_size
    blank = vocab["[PAD]"]
    with torch.no_grad():
        hidden = model.wav2vec2(_calibration_signal(seed)).last_hidden_state[0]
        mean = hidden.mean(dim=0)
        spread = (hidden - mean).pow(2).mean().sqrt()
        weight = torch.randn(len(vocab), width, generator=generator) * (
            LOGIT_SCALE / (width ** 0.5 * spread))
        weight[blank] = 0.0
        model.lm_head.weight.copy_(weight)
        model.lm_head.bias.copy_(-weight @ mean)
        logits = model.lm_head(hidden)
        delimiter = vocab["|"]
        letters = [i for i in range(len(vocab)) if i not in (blank, delimiter)]
        gap = logits[:, letters].max(dim=1).values - logits[:, delimiter]
        model.lm_head.bias[delimiter] += torch.quantile(gap, WORD_BREAK_SHARE)
        logits = model.lm_head(hidden)
        others = torch.cat([logits[:, :blank], logits[:, blank + 1:]], dim=1)
        model.lm_head.bias[blank] = others.max(dim=1).values.median()
    return model


def _calibration_signal(seed: int) -> torch.Tensor:
    """Seeded noise under a syllable-rate envelope, normalised as the feature extractor does."""
    generator = torch.Generator().manual_seed(seed + 2)
    n = int(CALIBRATION_SECONDS * 16000)
    envelope = 0.2 + torch.sin(torch.linspace(0, CALIBRATION_SECONDS * 4 * torch.pi, n)).abs()
    wav = torch.randn(n, generator=generator) * envelope
    return ((wav - wav.mean()) / torch.sqrt(wav.var(unbiased=False) + 1e-7))[None]


def write_random_hf_ctc(out: Path, arch: str, chars: Sequence[str], seed: int = 0) -> int:
    """Save a random-init Wav2Vec2ForCTC with its processor (the seed's files) to `out`; returns
    the parameter count."""
    from transformers import (Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor,
                              Wav2Vec2Processor)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vocab = seed_vocab(chars)
    model = build_random_hf_ctc(arch, vocab, seed)
    model.save_pretrained(str(out))
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    tokenizer = Wav2Vec2CTCTokenizer(str(out / "vocab.json"), unk_token="[UNK]",
                                     pad_token="[PAD]", word_delimiter_token="|")
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                         do_normalize=True, return_attention_mask=True)
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(str(out))
    return sum(p.numel() for p in model.parameters())
