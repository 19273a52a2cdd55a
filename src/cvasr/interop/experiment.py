"""espnet2 experiment dirs for the interop commands: write one, load a wav2vec 2.0 one, make one
self-contained.

An experiment dir is what stage 4 leaves and what `cvasr decode`, `cvasr transcribe`, stage 5 and
espnet2's `Speech2Text` read: `config.yaml` (espnet2's full argument record, the token list
inline) and a model file (the model's state dict). `write_experiment` builds one the way
espnet2's trainer would (its own argument parser fills every default, its own model builder
checks that the weights fit), so an imported model is an experiment like any other.
"""

from __future__ import annotations

import argparse
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from cvasr.models import inline_upstream
from cvasr.quiet import s3prl_weight_norm_deprecations

#: the model file of an experiment made here (not by training): the decoder takes it when no
#: averaged or best checkpoint exists (cvasr.decoding.decoder.MODEL_FILES)
IMPORTED_MODEL_FILE = "latest.pth"
CONFIG = "config.yaml"
#: the frontends whose upstream is an s3prl model
S3PRL_FRONTENDS = ("s3prl", "wav2vec2_s3prl")
#: weights espnet2's frontend adds around the upstream (the featurizer's layer weights)
ESPNET2_OWN = ("frontend.featurizer.",)


class NotExportable(ValueError):
    """An experiment the export cannot express: the message says why, in one line."""


def _atomic_write_text(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    partial = path.with_name(path.name + ".partial")
    torch.save(obj, partial)
    os.replace(partial, path)


def build_args(conf: dict[str, Any], exp_dir: Path) -> argparse.Namespace:
    """espnet2's full argument record for `conf` (the options a training YAML would hold), every
    other option at its default, as the training run that made the dir would have recorded."""
    import tempfile

    import espnet

    from cvasr.training.task import CvasrASRTask

    with tempfile.TemporaryDirectory() as tmp:
        conf_file = Path(tmp) / "conf.yaml"
        conf_file.write_text(yaml.safe_dump(conf, allow_unicode=True), encoding="utf-8")
        args = CvasrASRTask.get_parser().parse_args(
            ["--config", str(conf_file), "--output_dir", str(exp_dir)])
    args.config = None  # the temporary file is gone; config.yaml itself is the record
    args.version, args.distributed = espnet.__version__, False
    return args


def check_new_experiment_dir(exp_dir: Path) -> None:
    """Refuse to write over an experiment (its decodes and records would no longer match)."""
    if (Path(exp_dir) / CONFIG).exists():
        raise FileExistsError(f"{exp_dir} already holds an experiment ({CONFIG}); give a new "
                              "folder")


def write_experiment(exp_dir: Path, conf: dict[str, Any], weights: dict[str, torch.Tensor],
                     extra_files: dict[str, str] | None = None) -> Path:
    """An experiment dir from a training-style config and the model's complete state dict:
    espnet2 builds the model from the config and must accept exactly these weights. Returns the
    model file. `extra_files` (name -> text) are written beside it."""
    from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump

    from cvasr.training.task import CvasrASRTask

    exp_dir = Path(exp_dir)
    check_new_experiment_dir(exp_dir)
    exp_dir.mkdir(parents=True, exist_ok=True)
    args = build_args(conf, exp_dir)
    with s3prl_weight_norm_deprecations():
        model = CvasrASRTask.build_model(args)
    # every weight, and no other; espnet2's own layer weighting (unused: last layer only) as built
    built = {k: v for k, v in model.state_dict().items() if k.startswith(ESPNET2_OWN)}
    model.load_state_dict({**built, **weights}, strict=True)
    model_file = exp_dir / IMPORTED_MODEL_FILE
    _atomic_torch_save(model.state_dict(), model_file)
    _atomic_write_text(exp_dir / CONFIG,
                       yaml_no_alias_safe_dump(vars(args), indent=4, sort_keys=False))
    for name, text in (extra_files or {}).items():
        _atomic_write_text(exp_dir / name, text)
    return model_file


def read_config(exp_dir: Path) -> dict[str, Any]:
    config = Path(exp_dir) / CONFIG
    if not config.is_file():
        raise FileNotFoundError(f"no experiment in {exp_dir} (no {CONFIG})")
    conf = yaml.safe_load(config.read_text(encoding="utf-8"))
    if not isinstance(conf, dict):
        raise ValueError(f"{config}: not an espnet2 config (expected a mapping)")
    return conf


def model_file_of(exp_dir: Path, model_file: str | None = None) -> Path:
    """The model file decoding would use: the given one, else the first of the decoder's list."""
    from cvasr.decoding.decoder import MODEL_FILES

    exp_dir = Path(exp_dir)
    name = model_file or next((m for m in MODEL_FILES if (exp_dir / m).exists()), None)
    if name is None or not (exp_dir / name).is_file():
        raise FileNotFoundError(f"no model file in {exp_dir} (looked for "
                                f"{model_file or ', '.join(MODEL_FILES)})")
    return exp_dir / name


@dataclass
class Wav2Vec2Experiment:
    """A CTC experiment whose acoustic model is a wav2vec 2.0 upstream plus a linear CTC layer."""

    exp_dir: Path
    model_file: Path
    model: torch.nn.Module  # the espnet2 model, eval mode, on the CPU
    args: argparse.Namespace

    @property
    def upstream(self) -> torch.nn.Module:
        """s3prl's Wav2Vec2Model inside the frontend."""
        return self.model.frontend.upstream.upstream.model

    @property
    def normalize_waveform(self) -> bool:
        return bool(self.model.frontend.upstream.upstream.wav_normalize)

    @property
    def token_list(self) -> list[str]:
        return list(self.args.token_list)

    @property
    def ctc_linear(self) -> torch.nn.Linear:
        return self.model.ctc.ctc_lo

    @property
    def final_dropout(self) -> float:
        return float(self.model.encoder.dropout.p)


def load_wav2vec2_experiment(exp_dir: Path, model_file: str | None = None) -> Wav2Vec2Experiment:
    """Load an experiment and check that it is wav2vec 2.0 + a linear CTC layer and nothing else
    (what transformers' Wav2Vec2ForCTC and the ONNX graph express); else NotExportable. The
    config is checked before espnet2 is even imported, so a refusal is quick."""
    exp_dir = Path(exp_dir)
    conf = read_config(exp_dir)
    model_path = model_file_of(exp_dir, model_file)
    inner = ((conf.get("frontend_conf") or {}).get("frontend_conf") or {})
    what = f"{exp_dir} is not a wav2vec 2.0 CTC experiment"
    if conf.get("frontend") not in S3PRL_FRONTENDS:
        raise NotExportable(f"{what}: its frontend is {conf.get('frontend')!r}")
    for key, wanted in (("encoder", "identity"), ("normalize", None), ("preencoder", None),
                        ("postencoder", None), ("decoder", None)):
        if conf.get(key) != wanted:
            raise NotExportable(f"{what}: its frontend is {conf.get('frontend')}'s "
                                f"{inner.get('upstream')!r} upstream and its {key} is "
                                f"{conf.get(key)!r} (needs {wanted!r}: wav2vec 2.0 then a linear "
                                "CTC layer, nothing else)")
    from s3prl.upstream.wav2vec2.expert import UpstreamExpert

    from cvasr.models.ctc_model import IdentityEncoder
    from cvasr.training.task import CvasrASRTask

    with s3prl_weight_norm_deprecations():
        model, args = CvasrASRTask.build_model_from_file(exp_dir / CONFIG, model_path, "cpu")
    frontend = model.frontend
    expert = getattr(getattr(frontend, "upstream", None), "upstream", None)
    if not isinstance(expert, UpstreamExpert):
        raise NotExportable(f"{what}: its upstream {inner.get('upstream')!r} is "
                            f"{type(expert).__name__}, not s3prl's wav2vec 2.0")
    if frontend.multilayer_feature or frontend.layer != -1 or frontend.tile_factor != 1:
        raise NotExportable(f"{what}: its frontend takes a weighted sum or another layer of the "
                            "upstream, not its last layer")
    if not isinstance(model.encoder, IdentityEncoder) or model.ctc_weight != 1.0:
        raise NotExportable(f"{what}: it is not CTC alone on the upstream (ctc_weight "
                            f"{model.ctc_weight})")
    return Wav2Vec2Experiment(exp_dir, model_path, model.eval(), args)


def model_cfg_of(upstream: torch.nn.Module) -> dict[str, Any]:
    """An s3prl Wav2Vec2Model's configuration as a plain dict: the fields that differ from
    s3prl's defaults (tuples as lists, for YAML)."""
    import dataclasses

    cfg = upstream.cfg
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if value != default:
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def export_espnet(exp_dir: Path, out_dir: Path,
                  model_file: str | None = None) -> tuple[Path, Path]:
    """A copy of an experiment that needs nothing outside its dir: the upstream's shape written
    into config.yaml (`upstream: wav2vec2_inline`) instead of a checkpoint path or an s3prl
    download, the model file beside it. For experiments whose upstream is not wav2vec 2.0 the
    config is copied as it is. Returns the copy's config.yaml and model file."""
    exp_dir, out_dir = Path(exp_dir), Path(out_dir)
    conf = read_config(exp_dir)
    model_path = model_file_of(exp_dir, model_file)
    if out_dir.resolve() == exp_dir.resolve():
        raise ValueError(f"--out {out_dir} is the experiment itself; give another folder")
    if conf.get("token_type") == "bpe" or (conf.get("normalize_conf") or {}).get("stats_file"):
        raise NotExportable(f"{exp_dir}: a config that names files (a BPE model, normalisation "
                            "statistics) is not supported here; character token lists are")
    if conf.get("frontend") in S3PRL_FRONTENDS:
        inner = conf["frontend_conf"].get("frontend_conf") or {}
        if inner.get("upstream") != inline_upstream.NAME:
            exp = load_wav2vec2_experiment(exp_dir, model_file)
            task = {"sample_rate": 16000, "normalize": exp.normalize_waveform}
            conf["frontend_conf"]["frontend_conf"] = inline_upstream.frontend_conf(
                model_cfg_of(exp.upstream), task)
            conf["frontend_conf"].pop("download_dir", None)
    conf["output_dir"] = str(out_dir)
    conf["config"] = None
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_path, out_dir / model_path.name)
    from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump

    _atomic_write_text(out_dir / CONFIG, yaml_no_alias_safe_dump(conf, indent=4, sort_keys=False))
    return out_dir / CONFIG, out_dir / model_path.name
