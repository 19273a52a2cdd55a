"""wav2vec 2.0 upstreams for the s3prl frontend: locate the pretrained one, or write random-init ones.

The recipe trains on s3prl's XLS-R 300M (`xls_r_300m`, downloaded by s3prl) or on a local
checkpoint (`wav2vec2_custom` with a path). Where no model hub can be reached (tests, the demo,
GPU timing) we write randomly initialised checkpoints in s3prl's converted format, the dict
`{task_cfg, model_cfg, model_weight}` that `s3prl.upstream.wav2vec2.convert.load_converted_model`
reads, so that exactly the code path of a real checkpoint is exercised:

- `xls_r_300m`: the shape of XLS-R 300M (24 layers, 1024 wide, 16 heads, 4096 FFN, layer-norm
  feature encoder, quantiser), so GPU timings and memory are those of the real model;
- `tiny`: 2 layers, 128 wide, a 64-channel feature encoder: seconds on a CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cvasr.quiet import s3prl_weight_norm_deprecations

_FEATURE_ENCODER_LARGE = "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"
_FEATURE_ENCODER_TINY = "[(64,10,5)] + [(64,3,2)] * 4 + [(64,2,2)] * 2"

# What both architectures share: the layer-norm feature encoder and pre-norm transformer of
# XLS-R, its quantiser, and wav2vec 2.0 Large's dropouts.
_COMMON: dict[str, Any] = {
    "extractor_mode": "layer_norm",
    "conv_bias": True,
    "layer_norm_first": True,
    "quantize_targets": True,
    "latent_groups": 2,
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.0,
    "encoder_layerdrop": 0.0,
    "dropout_input": 0.0,
    "dropout_features": 0.0,
}

#: model_cfg of each architecture; fields not named keep s3prl's Wav2Vec2Config defaults.
ARCHS: dict[str, dict[str, Any]] = {
    "xls_r_300m": {
        **_COMMON,
        "conv_feature_layers": _FEATURE_ENCODER_LARGE,
        "encoder_layers": 24,
        "encoder_embed_dim": 1024,
        "encoder_ffn_embed_dim": 4096,
        "encoder_attention_heads": 16,
        "conv_pos": 128,
        "conv_pos_groups": 16,
        "final_dim": 768,
        "latent_vars": 320,
    },
    "tiny": {
        **_COMMON,
        "conv_feature_layers": _FEATURE_ENCODER_TINY,
        "encoder_layers": 2,
        "encoder_embed_dim": 128,
        "encoder_ffn_embed_dim": 256,
        "encoder_attention_heads": 4,
        "conv_pos": 32,
        "conv_pos_groups": 8,
        "final_dim": 64,
        "latent_vars": 32,
    },
}

TASK_CFG = {"sample_rate": 16000, "normalize": True}
_REQUIRED_KEYS = ("task_cfg", "model_cfg", "model_weight")


def build_random_model(arch: str, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised s3prl `Wav2Vec2Model` of the named architecture."""
    if arch not in ARCHS:
        raise ValueError(f"unknown upstream arch {arch!r}; choose from {sorted(ARCHS)}")
    return build_random_model_from_cfg(ARCHS[arch], seed)


def build_random_model_from_cfg(model_cfg: dict[str, Any], seed: int = 0) -> torch.nn.Module:
    """A randomly initialised s3prl `Wav2Vec2Model` for a `model_cfg` (fields not named keep
    s3prl's defaults)."""
    from s3prl.upstream.wav2vec2.wav2vec2_model import Wav2Vec2Config, Wav2Vec2Model
    from s3prl.upstream.utils import merge_with_parent

    torch.manual_seed(seed)
    with s3prl_weight_norm_deprecations():
        return Wav2Vec2Model(merge_with_parent(Wav2Vec2Config, dict(model_cfg)))


def write_random_upstream(arch: str, out: Path, seed: int = 0) -> int:
    """Write a random-init checkpoint in s3prl's converted format; returns its parameter count."""
    model = build_random_model(arch, seed)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {"task_cfg": dict(TASK_CFG), "model_cfg": dict(ARCHS[arch]),
             "model_weight": model.state_dict(), "cvasr": {"arch": arch, "seed": seed, "random_init": True}}
    partial = out.with_name(out.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, out)  # never leave a half-written checkpoint under the real name
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class UpstreamInfo:
    path: Path
    format: str  # "s3prl" (converted) or "fairseq"
    layers: int
    dim: int
    parameters: int

    @property
    def s3prl_options(self) -> dict[str, Any]:
        """The espnet2 `frontend_conf` entries that load this checkpoint through s3prl."""
        return {"upstream": "wav2vec2_custom", "path_or_url": str(self.path)}

    def describe(self) -> str:
        return (f"{self.path}: wav2vec 2.0 checkpoint in {self.format} format, "
                f"{self.layers} layers x {self.dim}, {self.parameters / 1e6:.1f} M parameters")


def inspect_upstream(path: Path) -> UpstreamInfo:
    """Check that `path` is a wav2vec 2.0 checkpoint s3prl can load, without building the model."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"upstream checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as err:  # torch raises many kinds for a corrupt or foreign file
        raise ValueError(f"{path} is not a readable PyTorch checkpoint: {err}") from err
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a wav2vec 2.0 checkpoint")
    if all(k in state for k in _REQUIRED_KEYS):
        fmt, cfg, weights = "s3prl", state["model_cfg"], state["model_weight"]
    elif "model" in state and ("cfg" in state or "args" in state):
        cfg = state.get("cfg", {}) or {}
        cfg = cfg.get("model", cfg) if isinstance(cfg, dict) else vars(state["args"])
        fmt, weights = "fairseq", state["model"]
    else:
        raise ValueError(
            f"{path} is neither an s3prl converted wav2vec 2.0 checkpoint (keys "
            f"{', '.join(_REQUIRED_KEYS)}) nor a fairseq one (keys model, cfg); it has keys "
            f"{', '.join(sorted(map(str, state)))}")
    cfg = dict(cfg) if not isinstance(cfg, dict) else cfg
    layers = int(cfg.get("encoder_layers", 12))
    dim = int(cfg.get("encoder_embed_dim", 768))
    parameters = sum(t.numel() for t in weights.values() if hasattr(t, "numel"))
    return UpstreamInfo(path=path, format=fmt, layers=layers, dim=dim, parameters=parameters)


def fetch_pretrained(name: str, download_dir: Path) -> str:
    """Let s3prl download its own checkpoint for a hub name (e.g. `xls_r_300m`) and load it once.

    Training later builds the frontend with the same name and `download_dir`, so s3prl finds the
    file there instead of downloading again.
    """
    import s3prl.util.download as s3prl_download
    from s3prl.nn import S3PRLUpstream

    if name not in S3PRLUpstream.available_names():
        raise ValueError(f"s3prl has no upstream named {name!r}")
    Path(download_dir).mkdir(parents=True, exist_ok=True)
    s3prl_download.set_dir(str(download_dir))
    try:
        upstream = S3PRLUpstream(name)
    except Exception as err:
        raise RuntimeError(
            f"s3prl could not download or load {name} into {download_dir} ({err}); on a machine "
            "without internet access fetch the checkpoint elsewhere and pass it with "
            "--upstream_ckpt") from err
    parameters = sum(p.numel() for p in upstream.parameters())
    return f"s3prl upstream {name} in {download_dir}: {parameters / 1e6:.1f} M parameters"
