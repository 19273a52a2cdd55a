"""transformers' Wav2Vec2 directories in and out of the recipe.

- `import_hf`: a `Wav2Vec2ForCTC` directory (the seed's model, any fine-tuned wav2vec 2.0 / XLS-R)
  becomes an experiment dir that `cvasr decode`, `cvasr transcribe`, stage 5 and espnet2's
  `Speech2Text` use like one trained here: the weights renamed to s3prl's, the vocabulary to an
  espnet2 token list with the CTC rows permuted to match, the upstream's shape written into
  config.yaml (`cvasr.models.inline_upstream`), so the dir needs no other file.
- `convert_hf_upstream`: a `Wav2Vec2Model` / `Wav2Vec2ForPreTraining` (or `ForCTC`) directory,
  e.g. XLS-R 300M in transformers' format, becomes an s3prl checkpoint that stage 4 trains from
  (`--upstream_ckpt`); s3prl loads strictly, so the pre-training heads it expects (quantizer,
  project_q, final_proj) are taken from a ForPreTraining model or else from a freshly built one.
- `export_hf`: a wav2vec 2.0 experiment becomes a `Wav2Vec2ForCTC` + `Wav2Vec2Processor`
  directory that `transformers.pipeline("automatic-speech-recognition", model=DIR)` loads
  offline; with the experiment's word LM, also the files `Wav2Vec2ProcessorWithLM` reads
  (`cvasr.interop.pyctcdecode_files`).

Waveform scale: cvasr's models take 16 kHz samples in the int16 range (the dump's), transformers'
models floats in [-1, 1]; both normalise each clip to zero mean and unit variance first (s3prl
with eps 1e-5, transformers' feature extractor with 1e-7), so the scale cancels and only the eps
differs, by a relative 1e-5 / 32768^2 against 1e-7 of the clip's variance: a model that normalises
converts without any change. One that does not (`do_normalize: false`) would see 32768 times the
amplitude it was trained on, and is refused.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cvasr.interop.hf_format import (HEAD_PAIRS, FormatError, hf_config_from_s3prl,
                                     hf_vocab_from_tokens, rename, s3prl_cfg_from_hf,
                                     tokens_from_hf, weight_pairs)

#: the weight files transformers writes, one of which a model directory holds
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
ARCHITECTURES = ("Wav2Vec2ForCTC", "Wav2Vec2ForPreTraining", "Wav2Vec2Model")
#: the prefix under which s3prl's model sits in an espnet2 state dict
UPSTREAM_PREFIX = "frontend.upstream.upstream.model."
#: written into an imported experiment: where it came from and how the vocabulary was mapped
IMPORT_RECORD = "hf_import.json"


@dataclass
class HFWav2Vec2:
    """A transformers wav2vec 2.0 directory, read and mapped to s3prl's names."""

    path: Path
    config: dict[str, Any]
    architecture: str
    model_cfg: dict[str, Any]  # s3prl's
    task_cfg: dict[str, Any]
    weights: dict[str, torch.Tensor]  # s3prl names: the base model, and heads if it had them
    lm_head: tuple[torch.Tensor, torch.Tensor] | None = None  # (weight, bias), HF row order
    parameters: int = 0


def read_config(path: Path) -> dict[str, Any]:
    """config.json of a transformers wav2vec 2.0 directory, checked enough to say what it is."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"transformers model directory {path} does not exist")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{path} is not a transformers model directory (no config.json)")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_file}: not valid JSON ({err})") from err
    if config.get("model_type") != "wav2vec2":
        raise ValueError(f"{path} holds a {config.get('model_type')!r} model, not wav2vec 2.0 "
                         "(model_type 'wav2vec2')")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise FileNotFoundError(f"{path} has no weights (none of {', '.join(WEIGHT_FILES)})")
    return config


def _architecture(config: dict[str, Any]) -> str:
    declared = [a for a in config.get("architectures") or [] if a in ARCHITECTURES]
    return declared[0] if declared else "Wav2Vec2Model"


def _do_normalize(path: Path) -> bool:
    """The feature extractor's do_normalize (transformers' default, True, without its file)."""
    conf: dict[str, Any] = {}
    preprocessor = Path(path) / "preprocessor_config.json"
    processor = Path(path) / "processor_config.json"  # transformers 5 nests it there
    if processor.is_file():
        conf = json.loads(processor.read_text(encoding="utf-8")).get("feature_extractor") or {}
    if not conf and preprocessor.is_file():
        conf = json.loads(preprocessor.read_text(encoding="utf-8"))
    return bool(conf.get("do_normalize", True))


def _s3prl_cfgs(path: Path, config: dict[str, Any]) -> tuple[dict, dict]:
    """s3prl's (model_cfg, task_cfg) for a directory; a model that does not normalise the
    waveform is refused."""
    model_cfg, task_cfg = s3prl_cfg_from_hf(config, _do_normalize(path))
    if not task_cfg["normalize"]:
        raise FormatError(f"{path}: its feature extractor does not normalise the waveform "
                          "(do_normalize false); cvasr's frontends feed int16-scale samples, "
                          "which this model would see 32768 times too loud")
    return model_cfg, task_cfg


def _count_parameters(path: Path) -> int:
    """Parameters in the weight files, read from their headers (nothing loaded)."""
    path = Path(path)
    total = 0
    shards = sorted(path.glob("model*.safetensors"))
    if shards:
        from safetensors import safe_open

        for shard in shards:
            with safe_open(str(shard), framework="pt") as f:
                for key in f.keys():
                    shape = f.get_slice(key).get_shape()
                    total += int(torch.tensor(shape).prod()) if shape else 1
        return total
    for shard in sorted(path.glob("pytorch_model*.bin")):
        state = torch.load(shard, map_location="cpu", mmap=True, weights_only=True)
        total += sum(t.numel() for t in state.values())
    return total


def describe_hf_upstream(path: Path) -> str:
    """`cvasr check-upstream` for a transformers directory: what it is, whether it maps."""
    config = read_config(path)
    model_cfg, _ = _s3prl_cfgs(path, config)
    return (f"{path}: wav2vec 2.0 in transformers' format ({_architecture(config)}), "
            f"{model_cfg['encoder_layers']} layers x {model_cfg['encoder_embed_dim']}, "
            f"{_count_parameters(path) / 1e6:.1f} M parameters; stage 0 converts it to s3prl's "
            "format")


def load_hf(path: Path, need_ctc_head: bool = False) -> HFWav2Vec2:
    """Read a transformers wav2vec 2.0 directory with transformers itself (safetensors or bin,
    sharded or not, old weight names included) and map it to s3prl's names."""
    import transformers

    transformers.utils.logging.disable_progress_bar()  # one line a step in the stage logs
    path = Path(path)
    config = read_config(path)
    architecture = _architecture(config)
    if need_ctc_head and architecture != "Wav2Vec2ForCTC":
        raise FormatError(f"{path} is a {architecture}, without a CTC head (architectures "
                          f"{config.get('architectures')}): import-hf needs a Wav2Vec2ForCTC; "
                          "to fine-tune from it, pass it to run.sh as --upstream_ckpt")
    model_cfg, task_cfg = _s3prl_cfgs(path, config)
    cls = getattr(transformers, architecture)
    try:
        model, info = cls.from_pretrained(str(path), local_files_only=True, dtype=torch.float32,
                                          output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as err:
        raise ValueError(f"transformers could not load {path} as {architecture}: "
                         f"{str(err).splitlines()[0]}") from err
    if info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        raise FormatError(f"{path}: weights missing from the checkpoint: "
                          f"{', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
    base = model if architecture == "Wav2Vec2Model" else model.wav2vec2
    weights = rename(base.state_dict(), weight_pairs(model_cfg), str(path),
                     optional=("masked_spec_embed",))
    if architecture == "Wav2Vec2ForPreTraining":
        state = model.state_dict()
        weights.update(rename({k: state[k] for k in HEAD_PAIRS}, HEAD_PAIRS, str(path)))
    lm_head = None
    if architecture == "Wav2Vec2ForCTC":
        lm_head = (model.lm_head.weight.detach().float(), model.lm_head.bias.detach().float())
    return HFWav2Vec2(path=path, config=config, architecture=architecture, model_cfg=model_cfg,
                      task_cfg=task_cfg, weights=weights, lm_head=lm_head,
                      parameters=sum(p.numel() for p in model.parameters()))


def complete_upstream_weights(model_cfg: dict[str, Any], weights: dict[str, torch.Tensor],
                              seed: int = 0) -> dict[str, torch.Tensor]:
    """`weights` plus what s3prl's Wav2Vec2Model also holds and they lack (the pre-training
    heads, mask_emb), from a freshly built model (random init, `seed`): s3prl loads strictly."""
    from cvasr.models.upstream import build_random_model_from_cfg

    fresh = build_random_model_from_cfg(model_cfg, seed).state_dict()
    unknown = sorted(set(weights) - set(fresh))
    if unknown:
        raise FormatError(f"weights s3prl's model does not have: {', '.join(unknown[:4])}")
    for key, value in weights.items():
        if value.shape != fresh[key].shape:
            raise FormatError(f"{key} has shape {tuple(value.shape)}, s3prl's model wants "
                              f"{tuple(fresh[key].shape)}")
    return {**fresh, **weights}


def convert_hf_upstream(path: Path, out: Path) -> str:
    """A transformers wav2vec 2.0 directory -> an s3prl checkpoint file (stage 0's upstream)."""
    hf = load_hf(path)
    weights = complete_upstream_weights(hf.model_cfg, hf.weights)
    filled = sorted(set(weights) - set(hf.weights))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    torch.save({"task_cfg": hf.task_cfg, "model_cfg": hf.model_cfg, "model_weight": weights,
                "cvasr": {"converted_from": str(Path(path).resolve()),
                          "architecture": hf.architecture, "filled_from_fresh_model": filled}},
               partial)
    os.replace(partial, out)
    heads = ""
    if filled:
        modules = ", ".join(sorted({k.split(".")[0] for k in filled}))
        heads = f"; {len(filled)} tensors it lacks ({modules}) from a fresh model"
    return (f"converted {path} ({hf.architecture}, {hf.parameters / 1e6:.1f} M parameters) to "
            f"s3prl's format: {out}{heads}")


def _hf_tokens(path: Path, vocab_size: int, pad_token_id: int | None) -> tuple[list[str], Any]:
    """The model's output tokens in id order, and the tokenizer."""
    from transformers import Wav2Vec2CTCTokenizer

    if not (Path(path) / "vocab.json").is_file():
        raise FileNotFoundError(f"{path} has no vocab.json: import-hf needs the CTC vocabulary")
    tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(str(path), local_files_only=True)
    if vocab_size > len(tokenizer):
        raise FormatError(f"{path}: the CTC layer has {vocab_size} outputs but the tokenizer "
                          f"only {len(tokenizer)} tokens")
    if pad_token_id is not None and pad_token_id != tokenizer.pad_token_id:
        raise FormatError(f"{path}: config.json's pad_token_id {pad_token_id} (the CTC blank) is "
                          f"not the tokenizer's pad token {tokenizer.pad_token!r} "
                          f"(id {tokenizer.pad_token_id})")
    return tokenizer.convert_ids_to_tokens(list(range(vocab_size))), tokenizer


def import_hf(path: Path, exp_dir: Path) -> str:
    """A transformers Wav2Vec2ForCTC directory -> an experiment dir (see the module doc)."""
    from cvasr.interop.experiment import check_new_experiment_dir, write_experiment
    from cvasr.models import inline_upstream

    check_new_experiment_dir(exp_dir)
    hf = load_hf(path, need_ctc_head=True)
    weight, bias = hf.lm_head
    id_to_token, tokenizer = _hf_tokens(path, weight.shape[0], hf.config.get("pad_token_id"))
    token_list, order = tokens_from_hf(id_to_token, tokenizer.pad_token,
                                       getattr(tokenizer, "word_delimiter_token", None),
                                       tokenizer.unk_token)
    upstream = complete_upstream_weights(hf.model_cfg, hf.weights)
    state = {UPSTREAM_PREFIX + k: v for k, v in upstream.items()}
    state["ctc.ctc_lo.weight"] = weight[order].contiguous()
    state["ctc.ctc_lo.bias"] = bias[order].contiguous()
    conf = {
        "frontend": "wav2vec2_s3prl",
        "frontend_conf": {"frontend_conf": inline_upstream.frontend_conf(hf.model_cfg,
                                                                         hf.task_cfg),
                          "multilayer_feature": False, "fs": "16k"},
        "normalize": None, "specaug": None,
        "encoder": "identity",
        "encoder_conf": {"dropout_rate": float(hf.config.get("final_dropout", 0.0))},
        "model": "cvasr_ctc",
        # bf16 in the upstream too when decoding on a GPU, as the recipe's XLS-R config has it
        "model_conf": {"ctc_weight": 1.0, "extract_feats_in_collect_stats": False,
                       "autocast_frontend": True},
        "token_type": "char", "token_list": token_list,
    }
    record = {"source": str(Path(path).resolve()), "architecture": hf.architecture,
              "hf_id_of_token": {t: i for t, i in zip(token_list, order)},
              "do_normalize": hf.task_cfg["normalize"]}
    model_file = write_experiment(exp_dir, conf, state, {
        IMPORT_RECORD: json.dumps(record, ensure_ascii=False, indent=1) + "\n"})
    blank = order[0]
    return (f"imported {path} ({hf.architecture}, {hf.parameters / 1e6:.1f} M parameters, "
            f"{len(token_list)} tokens; blank {id_to_token[blank]!r} at HF id {blank} is <blank> "
            f"at 0) into {model_file}")


def export_hf(exp_dir: Path, out: Path, lm_dir: Path | None = None, no_lm: bool = False,
              model_file: str | None = None) -> str:
    """A wav2vec 2.0 experiment -> a transformers Wav2Vec2ForCTC + processor directory, with the
    word LM's files for Wav2Vec2ProcessorWithLM: `lm_dir`'s, else the LM stage 5 recorded in the
    experiment (with its weights), unless `no_lm`."""
    from transformers import (Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor,
                              Wav2Vec2ForCTC, Wav2Vec2Processor)

    from transformers.utils import logging as hf_logging

    from cvasr.interop.experiment import NotExportable, load_wav2vec2_experiment

    hf_logging.disable_progress_bar()
    exp = load_wav2vec2_experiment(exp_dir, model_file)
    if exp.args.token_type != "char":
        raise NotExportable(f"{exp_dir} has a {exp.args.token_type} token list: transformers' "
                            "Wav2Vec2CTCTokenizer spells characters (token_type char)")
    if not exp.normalize_waveform:
        raise NotExportable(f"{exp_dir}: its upstream does not normalise the waveform, so it "
                            "was trained on int16-scale samples; transformers feeds [-1, 1]")
    tokens = exp.token_list
    vocab = hf_vocab_from_tokens(tokens)
    config = Wav2Vec2Config(**hf_config_from_s3prl(exp.upstream.cfg), vocab_size=len(tokens),
                            pad_token_id=0, bos_token_id=None, eos_token_id=None,
                            final_dropout=exp.final_dropout, ctc_loss_reduction="mean",
                            ctc_zero_infinity=True, architectures=["Wav2Vec2ForCTC"])
    model = Wav2Vec2ForCTC(config).eval()
    pairs = {s3: "wav2vec2." + hf for hf, s3 in weight_pairs(exp.upstream.cfg).items()}
    upstream = exp.upstream.state_dict()
    wanted = model.state_dict()
    state = {pairs[k]: v for k, v in upstream.items() if k in pairs and pairs[k] in wanted}
    state["lm_head.weight"] = exp.ctc_linear.weight.detach()
    state["lm_head.bias"] = exp.ctc_linear.bias.detach()
    model.load_state_dict(state, strict=True)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=1) + "\n",
                                    encoding="utf-8")
    tokenizer = Wav2Vec2CTCTokenizer(str(out / "vocab.json"), unk_token="[UNK]",
                                     pad_token="[PAD]", word_delimiter_token="|",
                                     bos_token=None, eos_token=None)
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                         do_normalize=True, return_attention_mask=True)
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(str(out))
    extractor.save_pretrained(str(out))  # also preprocessor_config.json, for transformers 4.x
    lm_note = ""
    from cvasr.decoding.options import recorded

    options = recorded(exp.exp_dir)
    lm_dir = None if no_lm else lm_dir or options.lm
    if lm_dir is not None:
        from cvasr.interop.pyctcdecode_files import write_decoder_files

        write_decoder_files(out, tokens, Path(lm_dir), options)
        lm_note = (f"; word LM {lm_dir} for Wav2Vec2ProcessorWithLM (alpha {options.lm_weight:g},"
                   f" beta {options.word_bonus:g}; loading it needs pyctcdecode and kenlm)")
    return (f"exported {exp.model_file} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M "
            f"parameters, {len(tokens)} tokens) as transformers Wav2Vec2ForCTC + "
            f"Wav2Vec2Processor to {out}{lm_note}")

