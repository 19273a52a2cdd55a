"""torch.compile for an s3prl wav2vec 2.0 upstream: its transformer layers (compiled once for all
24) and its convolutional feature encoder.

Why: in eager mode each of XLS-R's 24 layers runs its layer norms, GELU, dropouts, residual adds
and bias adds as separate memory-bound kernels; inductor fuses them. Why this way: compiling each
layer module (`layer.compile()`) traces s3prl's forward hooks, whose closures differ per layer, so
dynamo compiles the same layer 24 times and gives up after its cache limit. Here the layer class's
`forward` is compiled once, as a plain function, and every layer calls it with itself as the first
argument: one compiled graph (plus one with dynamic shapes once a second batch shape is seen)
serves all layers, and s3prl's hooks stay outside the compiled region, in eager mode. The frozen
feature encoder runs forward only; compiling it fuses the transposes, fp32 layer norms and GELUs
between its convolutions, which in eager mode move its 512-channel, 3200-frames-a-second
activations through memory several times.
Parameters and state_dict keys are untouched, so checkpoints load with or without compiling.
"""

from __future__ import annotations

import functools
import logging

import torch


def upstream_model(model: torch.nn.Module) -> torch.nn.Module | None:
    """The s3prl wav2vec 2.0 model inside an espnet2 model's frontend, or None."""
    frontend = getattr(model, "frontend", None)
    try:
        return frontend.upstream.upstream.model
    except AttributeError:
        return None


def upstream_encoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList | None:
    """The transformer layers of an espnet2 model's s3prl wav2vec 2.0 frontend, or None."""
    w2v = upstream_model(model)
    return getattr(getattr(w2v, "encoder", None), "layers", None)


def compile_encoder_layers(model: torch.nn.Module) -> int:
    """Route every upstream transformer layer through one compiled forward; returns how many."""
    layers = upstream_encoder_layers(model)
    if layers is None or len(layers) == 0:
        logging.warning("compile_upstream: no s3prl wav2vec 2.0 encoder layers found; nothing compiled")
        return 0
    classes = {type(layer) for layer in layers}
    if len(classes) != 1:
        raise ValueError(f"compile_upstream: the encoder mixes layer classes {sorted(c.__name__ for c in classes)}")
    compiled = torch.compile(classes.pop().forward)
    for layer in layers:
        layer.forward = functools.partial(compiled, layer)
    feature_extractor = getattr(upstream_model(model), "feature_extractor", None)
    if feature_extractor is not None:
        feature_extractor.forward = torch.compile(feature_extractor.forward)
    logging.info(f"compile_upstream: {len(layers)} {type(layers[0]).__name__} layers share one "
                 "compiled forward (compiled at the first batch, again once for dynamic shapes)"
                 + ("; the feature encoder is compiled too" if feature_extractor is not None else ""))
    return len(layers)
