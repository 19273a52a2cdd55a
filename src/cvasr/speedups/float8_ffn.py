"""The transformer's feed-forward GEMMs in float8: `float8_ffn: true` (torchao's float8 training).

Why: GEMMs are the largest share of XLS-R's training step on an H200 (44% of the GPU's busy time
with the committed config, bench/NOTES.md round 16), and the feed-forward layers (fc1, fc2:
1024 x 4096 each way) hold two thirds of their FLOPs. Hopper's tensor cores run float8 at twice
the bf16 rate. torchao's `Float8Linear` casts the input, the weight and the output's gradient to
float8 with one scale a tensor, computed on the GPU from the tensor's largest magnitude (dynamic
"tensorwise" scaling): no host sync, so the sync-free step and CUDA graphs stay as they are; the
casts are elementwise work that inductor fuses when the transformer is compiled
(`compile_upstream`; without compiling they run as separate kernels).

Measured (bench/NOTES.md, round 17): not a gain at XLS-R 300M's shapes on an H200. One compiled
layer at the step's batch (34 clips x 336 frames) took 4.49 ms against bf16's 3.17: the float8
GEMMs took about half the time of bf16's, the scaling and casts more than that. Off by default;
kept as the measured alternative for larger models, whose GEMMs are where torchao reports gains.

Only fc1 and fc2 are converted: s3prl's attention hands its projection weights to
`F.multi_head_attention_forward` directly, so a module swap there would change nothing.
`Float8Linear` is an `nn.Linear` holding the same parameters: state_dict keys and values are
untouched, checkpoints load with or without it, and decoding builds the model without it.
Numbers change: float8 rounding in the three GEMMs of each layer (one layer's output 1.0% and
fc1's weight gradient 8.6% away from bf16's, relative norm).
"""

from __future__ import annotations

import logging

import torch

#: GPUs with float8 tensor cores: compute capability 8.9 (Ada) and up
FLOAT8_CAPABILITY = (8, 9)


def float8_config():
    """torchao's tensorwise dynamic scaling (its default, and fastest), with the GEMMs' inner
    dimension padded to a multiple of 16 as `torch._scaled_mm` requires: the weight gradient's
    inner dimension is the batch's frames (clips x padded length), which is not one in general
    (34 x 330 = 11220 failed to compile on an H200)."""
    from torchao.float8 import Float8LinearConfig

    return Float8LinearConfig(pad_inner_dim=True)


def ffn_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The s3prl wav2vec 2.0 transformer layers of an espnet2 model's frontend whose fc1 and fc2
    are linear layers (none for other frontends)."""
    from cvasr.speedups.regional_compile import upstream_encoder_layers

    return [layer for layer in upstream_encoder_layers(model) or []
            if all(isinstance(getattr(layer, name, None), torch.nn.Linear)
                   for name in ("fc1", "fc2"))]


def layer_ffn_to_float8(layer: torch.nn.Module, config=None) -> None:
    """One s3prl transformer layer's fc1 and fc2 as torchao's Float8Linear, in place (those that
    are not already); `config` defaults to float8_config()."""
    from torchao.float8.float8_linear import Float8Linear

    config = config or float8_config()
    for name in ("fc1", "fc2"):
        linear = getattr(layer, name)
        if not isinstance(linear, Float8Linear):
            setattr(layer, name, Float8Linear.from_float(linear, config=config))


def convert_ffn_to_float8(model: torch.nn.Module, device: torch.device | None = None) -> int:
    """Swap the transformer's fc1 and fc2 for torchao's Float8Linear (tensorwise scaling), in
    place; returns how many. Raises on a GPU without float8 tensor cores (on the CPU torchao
    emulates float8: for tests, not for speed)."""
    if device is not None and device.type == "cuda":
        capability = torch.cuda.get_device_capability(device)
        if capability < FLOAT8_CAPABILITY:
            raise ValueError(f"float8_ffn: {torch.cuda.get_device_name(device)} (compute "
                             f"capability {capability[0]}.{capability[1]}) has no float8 tensor "
                             f"cores; they need {FLOAT8_CAPABILITY[0]}.{FLOAT8_CAPABILITY[1]} or "
                             "newer. Set float8_ffn: false")
    layers = ffn_layers(model)
    for layer in layers:
        layer_ffn_to_float8(layer)
    if not layers:
        logging.warning("float8_ffn: no s3prl wav2vec 2.0 feed-forward layers found; "
                        "nothing converted")
    return 2 * len(layers)
