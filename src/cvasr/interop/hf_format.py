"""transformers' Wav2Vec2 <-> s3prl's (fairseq's) wav2vec 2.0: configuration, weight names, vocabulary.

Pure mappings over dicts and tensors (no transformers import), used in both directions by
`cvasr.interop.hf`. The two implementations are the same network: every weight has exactly one
counterpart (`weight_pairs`), so a model converted either way computes the same numbers (the
tests compare hidden states and logits).

- Configuration: transformers' `Wav2Vec2Config` fields <-> s3prl's `model_cfg` (`Wav2Vec2Config`
  of `s3prl.upstream.wav2vec2.wav2vec2_model`) and `task_cfg` (`normalize`: the waveform's layer
  norm, transformers' feature extractor's `do_normalize`). Both XLS-R's layout (layer-norm
  feature encoder, pre-norm "stable layer norm" transformer, conv bias) and wav2vec 2.0 Base's
  (group norm in the first conv layer, post-norm) map; anything else is refused by name.
- Vocabulary: a transformers CTC vocabulary (blank `[PAD]` anywhere, often last; `|` between
  words; `[UNK]`) <-> an espnet2 token list (`<blank>` at id 0, `<space>`, `<unk>`), with the
  permutation of the CTC output rows that goes with it.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import torch

#: transformers' special tokens and the espnet2 token each one becomes
HF_PAD, HF_DELIMITER, HF_UNK = "[PAD]", "|", "[UNK]"
BLANK, SPACE, UNK = "<blank>", "<space>", "<unk>"
#: what a token of an espnet2 list is called in an exported vocab.json
EXPORT_NAMES = {BLANK: HF_PAD, SPACE: HF_DELIMITER, UNK: HF_UNK}

#: transformers' LayerNorm eps for wav2vec 2.0; fairseq's LayerNorm always uses 1e-5
LAYER_NORM_EPS = 1e-5


class FormatError(ValueError):
    """A model that one side cannot express: the message names the field and its value."""


# ---- configuration ---------------------------------------------------------------------------

def _getter(cfg: Any):
    """cfg.get for a dict, getattr for s3prl's Wav2Vec2Config dataclass."""
    if isinstance(cfg, Mapping):
        return cfg.get
    return lambda key, default=None: getattr(cfg, key, default)


def _conv_layers_spec(dims: list[int], kernels: list[int], strides: list[int]) -> str:
    """s3prl's conv_feature_layers string (it eval()s it): [(dim, kernel, stride), ...]."""
    return "[" + ", ".join(f"({d}, {k}, {s})" for d, k, s in zip(dims, kernels, strides)) + "]"


def _parse_conv_layers(spec: str) -> list[tuple[int, int, int]]:
    layers = re.findall(r"\((\d+)\s*,\s*(\d+)\s*,\s*(\d+)\)\s*\]?\s*(?:\*\s*(\d+))?", spec)
    out: list[tuple[int, int, int]] = []
    for dim, kernel, stride, times in layers:
        out += [(int(dim), int(kernel), int(stride))] * int(times or 1)
    if not out:
        raise FormatError(f"conv_feature_layers {spec!r} is not a list of (dim, kernel, stride)")
    return out


def s3prl_cfg_from_hf(config: Mapping[str, Any], do_normalize: bool) -> tuple[dict, dict]:
    """transformers' config.json (as a dict) -> s3prl's (model_cfg, task_cfg)."""
    def need(field: str, allowed: Any) -> Any:
        value = config.get(field, allowed[0] if isinstance(allowed, tuple) else allowed)
        ok = value in allowed if isinstance(allowed, tuple) else value == allowed
        if not ok:
            raise FormatError(f"{field} = {value!r}: only {allowed!r} maps to s3prl's wav2vec 2.0")
        return value

    if config.get("model_type") != "wav2vec2":
        raise FormatError(f"model_type = {config.get('model_type')!r}, not 'wav2vec2'")
    norm = need("feat_extract_norm", ("layer", "group"))
    need("feat_extract_activation", "gelu")
    need("hidden_act", "gelu")
    need("add_adapter", (False, None))
    need("layer_norm_eps", LAYER_NORM_EPS)
    dims, kernels, strides = (list(config[k]) for k in ("conv_dim", "conv_kernel", "conv_stride"))
    if not len(dims) == len(kernels) == len(strides):
        raise FormatError(f"conv_dim, conv_kernel and conv_stride differ in length "
                          f"({len(dims)}, {len(kernels)}, {len(strides)})")
    final_dim = int(config.get("proj_codevector_dim", 256))
    codevector_dim = int(config.get("codevector_dim", 256))
    model_cfg = {
        "extractor_mode": "layer_norm" if norm == "layer" else "default",
        "conv_feature_layers": _conv_layers_spec(dims, kernels, strides),
        "conv_bias": bool(config.get("conv_bias", False)),
        "encoder_layers": int(config["num_hidden_layers"]),
        "encoder_embed_dim": int(config["hidden_size"]),
        "encoder_ffn_embed_dim": int(config["intermediate_size"]),
        "encoder_attention_heads": int(config["num_attention_heads"]),
        "activation_fn": "gelu",
        "layer_norm_first": bool(config.get("do_stable_layer_norm", False)),
        "conv_pos": int(config.get("num_conv_pos_embeddings", 128)),
        "conv_pos_groups": int(config.get("num_conv_pos_embedding_groups", 16)),
        "dropout": float(config.get("hidden_dropout", 0.1)),
        "attention_dropout": float(config.get("attention_dropout", 0.1)),
        "activation_dropout": float(config.get("activation_dropout", 0.1)),
        "dropout_input": float(config.get("feat_proj_dropout", 0.0)),
        "dropout_features": float(config.get("feat_quantizer_dropout", 0.0)),
        "encoder_layerdrop": float(config.get("layerdrop", 0.0)),
        "quantize_targets": True,
        "final_dim": final_dim,
        "latent_dim": 0 if codevector_dim == final_dim else codevector_dim,
        "latent_vars": int(config.get("num_codevectors_per_group", 320)),
        "latent_groups": int(config.get("num_codevector_groups", 2)),
        "mask_prob": float(config.get("mask_time_prob", 0.05)),
        "mask_length": int(config.get("mask_time_length", 10)),
        "mask_channel_prob": float(config.get("mask_feature_prob", 0.0)),
        "mask_channel_length": int(config.get("mask_feature_length", 10)),
    }
    return model_cfg, {"sample_rate": 16000, "normalize": bool(do_normalize)}


def hf_config_from_s3prl(cfg: Any) -> dict[str, Any]:
    """s3prl's model_cfg (its Wav2Vec2Config, or a dict) -> transformers' Wav2Vec2Config fields."""
    get = _getter(cfg)

    def need(field: str, allowed: tuple) -> Any:
        value = get(field, allowed[0])
        if value not in allowed:
            raise FormatError(f"the upstream's {field} is {value!r}: transformers' Wav2Vec2 "
                              f"has only {', '.join(map(repr, allowed))}")
        return value

    mode = need("extractor_mode", ("default", "layer_norm"))
    need("layer_type", ("transformer",))
    need("pos_conv_depth", (1,))
    need("activation_fn", ("gelu",))
    need("crop_seq_to_multiple", (1,))
    need("attn_type", ("",))
    need("pos_enc_type", ("abs",))
    layers = _parse_conv_layers(get("conv_feature_layers"))
    final_dim = int(get("final_dim", 0)) or int(get("encoder_embed_dim"))
    latent_dim = int(get("latent_dim", 0)) or final_dim
    return {
        "model_type": "wav2vec2",
        "feat_extract_norm": "layer" if mode == "layer_norm" else "group",
        "feat_extract_activation": "gelu",
        "conv_dim": [d for d, _, _ in layers],
        "conv_kernel": [k for _, k, _ in layers],
        "conv_stride": [s for _, _, s in layers],
        "num_feat_extract_layers": len(layers),
        "conv_bias": bool(get("conv_bias", False)),
        "num_hidden_layers": int(get("encoder_layers")),
        "hidden_size": int(get("encoder_embed_dim")),
        "intermediate_size": int(get("encoder_ffn_embed_dim")),
        "num_attention_heads": int(get("encoder_attention_heads")),
        "hidden_act": "gelu",
        "do_stable_layer_norm": bool(get("layer_norm_first", False)),
        "num_conv_pos_embeddings": int(get("conv_pos")),
        "num_conv_pos_embedding_groups": int(get("conv_pos_groups")),
        "hidden_dropout": float(get("dropout", 0.1)),
        "attention_dropout": float(get("attention_dropout", 0.1)),
        "activation_dropout": float(get("activation_dropout", 0.0)),
        "feat_proj_dropout": float(get("dropout_input", 0.0)),
        "feat_quantizer_dropout": float(get("dropout_features", 0.0)),
        "layerdrop": float(get("encoder_layerdrop", 0.0)),
        "layer_norm_eps": LAYER_NORM_EPS,
        "proj_codevector_dim": final_dim,
        "codevector_dim": latent_dim,
        "num_codevectors_per_group": int(get("latent_vars", 320)),
        "num_codevector_groups": int(get("latent_groups", 2)),
        "mask_time_prob": float(get("mask_prob", 0.05)),
        "mask_time_length": int(get("mask_length", 10)),
        "mask_feature_prob": float(get("mask_channel_prob", 0.0)),
        "mask_feature_length": int(get("mask_channel_length", 10)),
    }


# ---- weights ---------------------------------------------------------------------------------

#: the pre-training heads: transformers' Wav2Vec2ForPreTraining name -> s3prl's
HEAD_PAIRS = {
    "quantizer.codevectors": "quantizer.vars",
    "quantizer.weight_proj.weight": "quantizer.weight_proj.weight",
    "quantizer.weight_proj.bias": "quantizer.weight_proj.bias",
    "project_q.weight": "project_q.weight",
    "project_q.bias": "project_q.bias",
    "project_hid.weight": "final_proj.weight",
    "project_hid.bias": "final_proj.bias",
}


def weight_pairs(model_cfg: Any) -> dict[str, str]:
    """Every weight of the base model: transformers' name (of `Wav2Vec2Model`, i.e. without the
    `wav2vec2.` prefix of the CTC and pre-training models) -> s3prl's name. `model_cfg`: s3prl's
    Wav2Vec2Config, or a dict with extractor_mode, conv_feature_layers, conv_bias and
    encoder_layers."""
    get = _getter(model_cfg)
    layer_norm_mode = get("extractor_mode") == "layer_norm"
    pairs = {"masked_spec_embed": "mask_emb"}
    for i in range(len(_parse_conv_layers(get("conv_feature_layers")))):
        hf, s3 = f"feature_extractor.conv_layers.{i}", f"feature_extractor.conv_layers.{i}"
        pairs[f"{hf}.conv.weight"] = f"{s3}.0.weight"
        if get("conv_bias"):
            pairs[f"{hf}.conv.bias"] = f"{s3}.0.bias"
        if layer_norm_mode or i == 0:  # a LayerNorm in every layer, or a GroupNorm in the first
            norm = f"{s3}.2.1" if layer_norm_mode else f"{s3}.2"
            for p in ("weight", "bias"):
                pairs[f"{hf}.layer_norm.{p}"] = f"{norm}.{p}"
    for p in ("weight", "bias"):
        pairs[f"feature_projection.layer_norm.{p}"] = f"layer_norm.{p}"
        pairs[f"feature_projection.projection.{p}"] = f"post_extract_proj.{p}"
        pairs[f"encoder.layer_norm.{p}"] = f"encoder.layer_norm.{p}"
    pairs["encoder.pos_conv_embed.conv.bias"] = "encoder.pos_conv.0.bias"
    weight_norm = "encoder.pos_conv_embed.conv.parametrizations.weight"
    pairs[f"{weight_norm}.original0"] = "encoder.pos_conv.0.weight_g"
    pairs[f"{weight_norm}.original1"] = "encoder.pos_conv.0.weight_v"
    for i in range(int(get("encoder_layers"))):
        hf, s3 = f"encoder.layers.{i}", f"encoder.layers.{i}"
        for p in ("weight", "bias"):
            for proj in ("q", "k", "v", "out"):
                pairs[f"{hf}.attention.{proj}_proj.{p}"] = f"{s3}.self_attn.{proj}_proj.{p}"
            pairs[f"{hf}.layer_norm.{p}"] = f"{s3}.self_attn_layer_norm.{p}"
            pairs[f"{hf}.feed_forward.intermediate_dense.{p}"] = f"{s3}.fc1.{p}"
            pairs[f"{hf}.feed_forward.output_dense.{p}"] = f"{s3}.fc2.{p}"
            pairs[f"{hf}.final_layer_norm.{p}"] = f"{s3}.final_layer_norm.{p}"
    return pairs


def rename(state: Mapping[str, torch.Tensor], pairs: Mapping[str, str], source: str,
           optional: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """`state` with every key of `pairs` renamed to its value; a key of `pairs` missing from
    `state` is an error naming `source` (unless listed in `optional`), and so is one of `state`
    that `pairs` does not know."""
    missing = [k for k in pairs if k not in state and k not in optional]
    unknown = sorted(set(state) - set(pairs))
    if missing or unknown:
        what = []
        if missing:
            what.append(f"missing {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
        if unknown:
            what.append(f"unexpected {', '.join(unknown[:4])}{' ...' if len(unknown) > 4 else ''}")
        raise FormatError(f"{source}: the weights do not match the wav2vec 2.0 layout its "
                          f"config describes ({'; '.join(what)})")
    return {pairs[k]: v.detach().float().contiguous() for k, v in state.items()}


# ---- vocabulary ------------------------------------------------------------------------------

def tokens_from_hf(id_to_token: list[str], pad: str, delimiter: str | None,
                   unk: str | None) -> tuple[list[str], list[int]]:
    """A transformers CTC vocabulary (its tokens in id order; the model's CTC blank is `pad`) ->
    (the espnet2 token list, the HF id of each of its tokens): `<blank>` first, the rest in HF
    order, `|` as `<space>` and `[UNK]` as `<unk>`. The second list permutes lm_head's rows."""
    if pad not in id_to_token:
        raise FormatError(f"the pad token {pad!r} (the CTC blank) is not in the vocabulary")
    names = {pad: BLANK}
    if delimiter is not None and delimiter in id_to_token:
        names[delimiter] = SPACE
    if unk is not None and unk in id_to_token:
        names[unk] = UNK
    clash = [t for t in id_to_token if t in (BLANK, SPACE, UNK) and t not in names]
    if clash:
        raise FormatError(f"the vocabulary already has a token {clash[0]!r}, which espnet2 "
                          "reserves")
    blank = id_to_token.index(pad)
    order = [blank] + [i for i in range(len(id_to_token)) if i != blank]
    tokens = [names.get(id_to_token[i], id_to_token[i]) for i in order]
    duplicates = sorted({t for t in tokens if tokens.count(t) > 1})
    if duplicates:
        raise FormatError(f"the vocabulary holds {duplicates[0]!r} twice")
    if any(not t or any(c.isspace() for c in t) for t in tokens):
        raise FormatError("the vocabulary has an empty token or one with white space in it")
    return tokens, order


def hf_vocab_from_tokens(token_list: list[str]) -> dict[str, int]:
    """An espnet2 character token list -> transformers' vocab.json (same ids: `<blank>` stays at
    0 as `[PAD]`, `<space>` becomes `|`, `<unk>` `[UNK]`)."""
    if not token_list or token_list[0] != BLANK:
        raise FormatError("the token list does not start with <blank> (CTC's blank, id 0)")
    names = [EXPORT_NAMES.get(t, t) for t in token_list]
    clash = [t for t in token_list if t in EXPORT_NAMES.values()]
    if clash:
        raise FormatError(f"the token list already has a token {clash[0]!r}, which transformers' "
                          "tokenizer reserves")
    return {name: i for i, name in enumerate(names)}
