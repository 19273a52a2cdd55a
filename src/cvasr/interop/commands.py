"""The interop subcommands of `cvasr` (import-hf, import-hf-upstream, export-hf, export-onnx,
export-espnet): their options and handlers, added to the parser by `cvasr.cli`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

Add = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


def _import_hf(args: argparse.Namespace) -> int:
    from cvasr.interop.hf import import_hf

    print(import_hf(args.model, args.out))
    return 0


def _import_hf_upstream(args: argparse.Namespace) -> int:
    from cvasr.interop.hf import convert_hf_upstream

    print(convert_hf_upstream(args.model, args.out))
    return 0


def _export_hf(args: argparse.Namespace) -> int:
    from cvasr.interop.hf import export_hf

    print(export_hf(args.model, args.out, lm_dir=args.lm, no_lm=args.no_lm,
                    model_file=args.checkpoint))
    return 0


def _export_onnx(args: argparse.Namespace) -> int:
    from cvasr.interop.onnx import export_onnx

    print(export_onnx(args.model, args.out, model_file=args.checkpoint))
    return 0


def _export_espnet(args: argparse.Namespace) -> int:
    from cvasr.interop.experiment import export_espnet

    config, model = export_espnet(args.model, args.out, model_file=args.checkpoint)
    print(f"self-contained experiment in {config.parent}; pack it with espnet2's pack command:\n"
          f"python -m espnet2.bin.pack asr --asr_train_config {config} --asr_model_file {model} "
          f"--outpath {config.parent}.zip")
    return 0


def add_commands(add: Add) -> None:
    """Add the interop subcommands through cvasr.cli's `add(name, handler, help)`."""
    p = add("import-hf", _import_hf,
            "Turn a transformers Wav2Vec2ForCTC directory (config.json, weights, vocab.json) into "
            "an experiment dir that decode, transcribe and stage 5 (--asr_exp) use like one "
            "trained here.")
    p.add_argument("--model", type=Path, required=True, help="the transformers model directory")
    p.add_argument("--out", type=Path, required=True, help="experiment dir to write")

    p = add("import-hf-upstream", _import_hf_upstream,
            "Convert a transformers Wav2Vec2Model / Wav2Vec2ForPreTraining directory (e.g. XLS-R "
            "300M in transformers' format) to an s3prl checkpoint to train from (stage 0 does "
            "this for --upstream_ckpt DIR).")
    p.add_argument("--model", type=Path, required=True, help="the transformers model directory")
    p.add_argument("--out", type=Path, required=True, help="s3prl checkpoint file to write")

    def add_exp(p: argparse.ArgumentParser, out_help: str) -> None:
        p.add_argument("--model", type=Path, required=True, help="experiment dir")
        p.add_argument("--out", type=Path, required=True, help=out_help)
        p.add_argument("--checkpoint", default=None,
                       help="model file in the experiment (default: the one decode uses)")

    p = add("export-hf", _export_hf,
            "Write a wav2vec 2.0 experiment as a transformers Wav2Vec2ForCTC + Wav2Vec2Processor "
            "directory (with the word LM's files for Wav2Vec2ProcessorWithLM when stage 5 "
            "recorded one).")
    add_exp(p, "directory to write")
    p.add_argument("--lm", type=Path, default=None,
                   help="word LM dir to include (default: the one stage 5 recorded, if any)")
    p.add_argument("--no-lm", action="store_true", help="leave the word LM out")

    p = add("export-onnx", _export_onnx,
            "Write a wav2vec 2.0 experiment as model.onnx (16 kHz waveform (1, samples) -> CTC "
            "logits (1, frames, vocab)) and tokens.txt, for onnxruntime and sherpa-onnx.")
    add_exp(p, "directory to write")

    p = add("export-espnet", _export_espnet,
            "Copy an experiment so that it needs no file outside its dir (the upstream's shape "
            "in config.yaml), for espnet2's pack command and stock espnet2.")
    add_exp(p, "directory to write")
