"""ONNX export of a wav2vec 2.0 CTC experiment, for onnxruntime and sherpa-onnx.

`model.onnx` maps a 16 kHz waveform, float32 (1, samples) in [-1, 1], to CTC logits
(1, frames, vocab), one frame per 320 samples (the convolutional feature encoder's frames:
s3prl's frontend appends copies of the last frame up to ceil(samples / 320), which change no
CTC decoding and are left out). `tokens.txt` lists `symbol id`, `<blank>` at 0 and the word
break as `▁`, as sherpa-onnx reads it, so that
`sherpa_onnx.OfflineRecognizer.from_omnilingual_asr_ctc(model, tokens)` decodes with it (greedy).

The graph scales the waveform to the int16 range the model was trained on (stage 2's dump) and
normalises it as the frontend does (zero mean, unit variance, eps 1e-5), so it gives the
PyTorch model's logits for the same samples, and is indifferent to the scale of its input:
sherpa-onnx normalises the waveform itself first (eps 1e-5 on [-1, 1] samples), which the graph's
own normalisation undoes up to that eps.

Exported with torch's dynamo exporter (opset 18, onnx + onnxscript); a probe found the legacy
TorchScript exporter giving wrong logits for wav2vec 2.0 (max difference 0.6-0.9), the dynamo
exporter 7e-7.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from cvasr.interop.hf_format import SPACE

OPSET = 18
#: the int16 scale of the dump's samples, which the model was trained on
INT16_SCALE = 32768.0
#: the frontend's waveform normalisation eps (s3prl's F.layer_norm default)
WAV_NORM_EPS = 1e-5
#: sherpa-onnx turns a leading ▁ of a symbol into a space
SHERPA_SPACE = "\u2581"
#: the shortest input: the feature encoder needs 400 samples for its first frame
MIN_SAMPLES = 400


class WaveformToLogits(torch.nn.Module):
    """wav2vec 2.0 + the CTC layer of an experiment, for one waveform, no masks: the frontend's
    numbers (cvasr.models.frontend) for a batch of one."""

    def __init__(self, upstream: torch.nn.Module, normalize: bool, ctc_linear: torch.nn.Linear):
        super().__init__()
        self.upstream, self.normalize, self.ctc_linear = upstream, normalize, ctc_linear

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        model = self.upstream
        x = waveform * INT16_SCALE
        if self.normalize:
            mean = x.mean(dim=1, keepdim=True)
            var = (x - mean).pow(2).mean(dim=1, keepdim=True)
            x = (x - mean) * torch.rsqrt(var + WAV_NORM_EPS)
        features = model.feature_extractor(x)  # (1, C, T)
        x = model.layer_norm(features.transpose(1, 2))
        if model.post_extract_proj is not None:
            x = model.post_extract_proj(x)
        encoder = model.encoder
        x = x + encoder.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        if not encoder.layer_norm_first:
            x = encoder.layer_norm(x)
        x = x.transpose(0, 1)
        for layer in encoder.layers:
            x, _ = layer(x, self_attn_padding_mask=None, need_weights=False)
        x = x.transpose(0, 1)
        if encoder.layer_norm_first:
            x = encoder.layer_norm(x)
        return self.ctc_linear(x)


def sherpa_tokens(token_list: list[str]) -> str:
    """tokens.txt for sherpa-onnx: `symbol id` lines, the word break as ▁."""
    lines = []
    for i, token in enumerate(token_list):
        symbol = SHERPA_SPACE if token == SPACE else token
        if not symbol or any(c.isspace() for c in symbol):
            raise ValueError(f"token {i} ({token!r}) cannot be written to tokens.txt")
        lines.append(f"{symbol} {i}\n")
    return "".join(lines)


def export_onnx(exp_dir: Path, out_dir: Path, model_file: str | None = None) -> str:
    """model.onnx and tokens.txt of a wav2vec 2.0 experiment in out_dir; returns a summary."""
    import onnx

    from cvasr.interop.experiment import load_wav2vec2_experiment

    exp = load_wav2vec2_experiment(exp_dir, model_file)
    try:  # the positional conv's weight as one tensor: the exporter cannot trace the hook
        torch.nn.utils.remove_weight_norm(exp.upstream.encoder.pos_conv[0])
    except ValueError:  # no weight norm on it
        pass
    module = WaveformToLogits(exp.upstream, exp.normalize_waveform, exp.ctc_linear).eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    example = torch.randn(1, 16000) * 0.1
    samples = torch.export.Dim("samples", min=MIN_SAMPLES, max=16000 * 3600)
    model_path = out_dir / "model.onnx"
    partial = out_dir / "model.partial.onnx"
    with torch.no_grad():
        program = torch.onnx.export(module, (example,), dynamo=True, opset_version=OPSET,
                                    input_names=["waveform"], output_names=["logits"],
                                    dynamic_shapes={"waveform": {1: samples}}, verbose=False)
    program.save(str(partial))
    model = onnx.load(str(partial))
    for key, value in {"model_type": "cvasr_wav2vec2_ctc", "sample_rate": "16000",
                       "vocab_size": str(len(exp.token_list)), "blank_id": "0",
                       "source": str(exp.model_file)}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(model_path))
    partial.unlink()
    tokens = out_dir / "tokens.txt"
    tokens.write_text(sherpa_tokens(exp.token_list), encoding="utf-8")
    size = os.path.getsize(model_path) / 2**20
    return (f"exported {exp.model_file} to {model_path} ({size:.1f} MiB, opset {OPSET}; input "
            f"waveform (1, samples) at 16 kHz, output logits (1, frames, {len(exp.token_list)})) "
            f"and {tokens}")
