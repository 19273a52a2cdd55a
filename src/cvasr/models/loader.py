"""Build a trained model from its experiment's config.yaml, importing only the classes it names.

espnet2's own way, `ASRTask.build_model_from_file`, needs `espnet2.tasks.asr`, which imports
every frontend, encoder, decoder and task espnet2 has (the SSL task, g2p_en with inflect,
transformers' BART, ...): about 10 of the 13 s `cvasr transcribe` took for one clip on 2 cores,
before any audio was read. `build_model` takes `ASRTask.build_model`'s steps for the classes a
CTC model of this recipe names, each imported from its own module (`CLASSES`); a config that
names anything else (an attention decoder, a transducer, adapters) is built by espnet2's task,
the slow way, with the same result. The tests build the demo model both ways and compare state
dicts and outputs.

Weights are loaded strictly: espnet2 loads with `strict=False`, so a checkpoint of another
model would decode with random weights; here a missing or unexpected parameter is an error that
names the file.
"""

from __future__ import annotations

import argparse
import importlib
import pickle
from pathlib import Path
from typing import Any

import torch
import yaml

#: by config key and name: the espnet2 classes (as espnet2.tasks.asr's class choices name
#: them, espnet 202511) and ours (registered with espnet2's task by cvasr.training.task) that a
#: model built here may use, as "module:Class"
CLASSES: dict[str, dict[str, str]] = {
    "frontend": {
        "default": "espnet2.asr.frontend.default:DefaultFrontend",
        "s3prl": "espnet2.asr.frontend.s3prl:S3prlFrontend",
        "wav2vec2_s3prl": "cvasr.models.frontend:Wav2Vec2S3prlFrontend",
    },
    "specaug": {
        "specaug": "espnet2.asr.specaug.specaug:SpecAug",
        "sync_free_specaug": "cvasr.speedups.sync_free_specaug:SyncFreeSpecAug",
    },
    "normalize": {
        "global_mvn": "espnet2.layers.global_mvn:GlobalMVN",
        "utterance_mvn": "espnet2.layers.utterance_mvn:UtteranceMVN",
    },
    "preencoder": {"linear": "espnet2.asr.preencoder.linear:LinearProjection"},
    "encoder": {
        "transformer": "espnet2.asr.encoder.transformer_encoder:TransformerEncoder",
        "conformer": "espnet2.asr.encoder.conformer_encoder:ConformerEncoder",
        "e_branchformer": "espnet2.asr.encoder.e_branchformer_encoder:EBranchformerEncoder",
        "rnn": "espnet2.asr.encoder.rnn_encoder:RNNEncoder",
        "identity": "cvasr.models.ctc_model:IdentityEncoder",
    },
    "model": {
        "espnet": "espnet2.asr.espnet_model:ESPnetASRModel",
        "cvasr_ctc": "cvasr.models.ctc_model:CTCWerASRModel",
    },
}
#: the names cvasr adds to espnet2's ASR task's class choices
CVASR_NAMES = {"frontend": "wav2vec2_s3prl", "specaug": "sync_free_specaug",
               "encoder": "identity", "model": "cvasr_ctc"}
#: config keys that name a class, and espnet2's default when the config leaves one out
_CHOICE_DEFAULTS = {"frontend": "default", "specaug": None, "normalize": "utterance_mvn",
                    "preencoder": None, "encoder": "rnn", "postencoder": None, "decoder": None,
                    "model": "espnet"}


def class_for(key: str, name: str) -> type:
    module, _, attr = CLASSES[key][name].partition(":")
    return getattr(importlib.import_module(module), attr)


def register_with_espnet2() -> None:
    """Make cvasr's names (CVASR_NAMES) known to espnet2's ASR task (this imports it: slow)."""
    from espnet2.tasks import asr

    for key, name in CVASR_NAMES.items():
        getattr(asr, f"{key}_choices").classes.setdefault(name, class_for(key, name))


def read_config(config: Path) -> dict[str, Any]:
    config = Path(config)
    if not config.is_file():
        raise FileNotFoundError(f"no trained model in {config.parent} (no config.yaml): run "
                                "stage 4 first")
    conf = yaml.safe_load(config.read_text(encoding="utf-8"))
    if not isinstance(conf, dict):
        raise ValueError(f"{config}: not an espnet2 config (expected a mapping)")
    return conf


def token_list_of(conf: dict[str, Any]) -> list[str]:
    tokens = conf.get("token_list")
    if isinstance(tokens, str):
        return Path(tokens).read_text(encoding="utf-8").splitlines()
    if not isinstance(tokens, list) or not tokens:
        raise ValueError("config.yaml has no token_list")
    return [str(t) for t in tokens]


def _names(conf: dict[str, Any]) -> dict[str, str | None]:
    names = {}
    for key, default in _CHOICE_DEFAULTS.items():
        name = conf.get(key, default)
        names[key] = None if name is None or str(name).lower() in ("none", "null", "nil") \
            else str(name).lower()
    if conf.get("input_size") is not None:
        names["frontend"] = None
    return names


def builds_here(conf: dict[str, Any]) -> bool:
    """Whether build_model can build this config itself (else espnet2's task does)."""
    names = _names(conf)
    return (names["postencoder"] is None and names["decoder"] is None
            and not conf.get("use_adapter", False)
            and not (conf.get("model_conf") or {}).get("transducer_multi_blank_durations")
            and all(name is None or name in CLASSES.get(key, {}) for key, name in names.items()))


def build_model(conf: dict[str, Any]) -> torch.nn.Module:
    """The untrained model a config describes, as `ASRTask.build_model` builds it (without its
    `init`: the weights are loaded next)."""
    if not builds_here(conf):
        from espnet2.tasks.asr import ASRTask

        register_with_espnet2()
        return ASRTask.build_model(argparse.Namespace(**conf))
    from espnet2.asr.ctc import CTC

    from cvasr.models import s3prl_hub

    s3prl_hub.install()  # s3prl's hub would import every upstream it knows
    names = _names(conf)
    token_list = token_list_of(conf)

    def make(key: str, **kwargs: Any) -> Any:
        if names[key] is None:
            return None
        return class_for(key, names[key])(**kwargs, **(conf.get(f"{key}_conf") or {}))

    frontend = make("frontend")
    size = frontend.output_size() if frontend is not None else conf["input_size"]
    specaug, normalize = make("specaug"), make("normalize")
    preencoder = make("preencoder")
    if preencoder is not None:
        size = preencoder.output_size()
    encoder = make("encoder", input_size=size)
    size = encoder.output_size() if encoder is not None else size
    ctc = CTC(odim=len(token_list), encoder_output_size=size, **(conf.get("ctc_conf") or {}))
    return class_for("model", names["model"])(
        vocab_size=len(token_list), frontend=frontend, specaug=specaug, normalize=normalize,
        preencoder=preencoder, encoder=encoder, postencoder=None, decoder=None, ctc=ctc,
        joint_network=None, token_list=token_list, **(conf.get("model_conf") or {}))


def read_state_dict(model_file: Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """The model weights in a file espnet2 wrote: an averaged or per-epoch `*.pth`, or a
    training `checkpoint.pth` (its `model` entry)."""
    model_file = Path(model_file)
    if model_file.is_dir():
        raise ValueError(f"{model_file} is a directory, not a model file")
    if not model_file.is_file():
        raise FileNotFoundError(f"model file {model_file} does not exist")
    try:
        try:
            # mapped, not read: the weights are assigned to the model as they are (load_weights)
            state = torch.load(model_file, map_location=device, weights_only=True, mmap=True)
        except pickle.UnpicklingError:
            # checkpoint.pth also holds the trainer's own objects: a file of the user's own
            # experiment, loaded as espnet2 itself loads it
            state = torch.load(model_file, map_location=device, weights_only=False, mmap=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError) as err:
        raise ValueError(f"{model_file}: not a model file torch can read "
                         f"({str(err).splitlines()[0] if str(err) else type(err).__name__})"
                         ) from None
    for key in ("model", "module"):  # a training checkpoint; a deepspeed one
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise ValueError(f"{model_file}: holds no model weights (not a state dict)")
    return state


def load_weights(model: torch.nn.Module, model_file: Path, device: str = "cpu") -> None:
    state = read_state_dict(model_file, device)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{model_file} does not hold the model config.yaml describes: "
            f"{len(missing)} parameter(s) missing (e.g. {', '.join(missing[:2]) or '-'}), "
            f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:2]) or '-'})")
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise ValueError(f"{model_file}: {name} has shape {tuple(tensor.shape)}, the model "
                             f"config.yaml describes {tuple(expected[name].shape)}")
    # the file's tensors become the model's (no second copy in memory)
    model.load_state_dict(state, strict=True, assign=True)


def load_model(config: Path, model_file: Path, device: str = "cpu"
               ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained model in eval mode on `device`, and its config."""
    conf = read_config(config)
    return trained(build_model(conf), model_file, device), conf


def trained(model: torch.nn.Module, model_file: Path, device: str = "cpu") -> torch.nn.Module:
    """A model build_model built, with its trained weights, on `device`, in eval mode.

    espnet2's SSL frontends keep a copy of the pretrained upstream's weights for training's
    initialisation (`pretrained_params`, 1.3 GB for XLS-R 300M); a trained model does not
    need it, so it is dropped."""
    model = model.to(device)
    for module in model.modules():
        if isinstance(getattr(module, "pretrained_params", None), dict):
            del module.pretrained_params
    load_weights(model, model_file, device)
    return model.eval()
