#!/usr/bin/env python3
"""Decoding speed: real-time factor of our stage-5 decoder against the seed's stack, same clips.

Ours: `cvasr.decode.CTCDecoder` on an experiment dir in stage 4's format (config.yaml and model
file, here from conf/train_xlsr300m_ctc.yaml with a random-init upstream of XLS-R 300M's shape),
greedy and prefix beam search (beam 10, conf/decode_ctc.yaml's), batch 1 and batched by sorted
length. Seed: transformers' Wav2Vec2ForCTC of the same shape, argmax decoding (the seed has no
beam search), batch 1 and batched, bf16 on GPU as its Trainer's AMP evaluates. Clips are
bench/train_throughput.py's synthetic CV-like clips. RTF = decoding seconds / audio seconds
(lower is faster); every run first decodes its first batch once, untimed (warm-up).

    python bench/decode.py                      # GPU and CPU
    python bench/decode.py --devices cpu --arch tiny --clips 8 --cpu-clips 8   # smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import CONFIG, RATE, git_revision, hf_config, synth_clips  # noqa: E402


def make_exp_dir(work: Path, arch: str, tokens: list[str]) -> Path:
    """A stage-4 experiment dir (config.yaml + model file) holding a random-init model."""
    import torch
    from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump

    from cvasr.training.task import CvasrASRTask
    from cvasr.training.stages import resolve_config
    from cvasr.models.upstream import write_random_upstream

    exp = work / f"exp_{arch}"
    if (exp / "valid.cer_ctc.ave.pth").is_file():
        return exp
    exp.mkdir(parents=True, exist_ok=True)
    upstream = work / f"{arch}_random.pt"
    if not upstream.is_file():
        write_random_upstream(arch, upstream)
    resolved = work / "decode_config.resolved.yaml"
    resolve_config(CONFIG, str(upstream), work / "dl", resolved)
    (exp / "tokens.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    args = CvasrASRTask.get_parser().parse_args(
        ["--config", str(resolved), "--token_list", str(exp / "tokens.txt"), "--token_type", "char",
         "--output_dir", str(exp)])
    torch.manual_seed(0)
    model = CvasrASRTask.build_model(args)
    with (exp / "config.yaml").open("w", encoding="utf-8") as f:
        yaml_no_alias_safe_dump(vars(args), f, indent=4, sort_keys=False)
    torch.save(model.state_dict(), exp / "valid.cer_ctc.ave.pth")
    return exp


def time_runs(fn, batches: list[list[np.ndarray]], device: str) -> float:
    """Seconds for all batches, after one untimed warm-up run of the first."""
    import torch

    fn(batches[0])
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for batch in batches:
        fn(batch)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def batched(wavs: list[np.ndarray], size: int) -> list[list[np.ndarray]]:
    ordered = sorted(wavs, key=len)
    return [ordered[i:i + size] for i in range(0, len(ordered), size)]


def seed_decoder(arch: str, vocab: int, device: str):
    """Wav2Vec2ForCTC of the same shape; argmax over logits, as the seed evaluates."""
    import torch
    from transformers import Wav2Vec2ForCTC

    from cvasr.models.upstream import ARCHS

    torch.manual_seed(0)
    model = Wav2Vec2ForCTC._from_config(hf_config(ARCHS[arch], vocab), attn_implementation="sdpa")
    model = model.to(device).eval()

    @torch.no_grad()
    def run(wavs: list[np.ndarray]) -> list[list[int]]:
        longest = max(len(w) for w in wavs)
        values = torch.zeros(len(wavs), longest)
        mask = torch.zeros(len(wavs), longest, dtype=torch.long)
        for b, w in enumerate(wavs):
            x = w.astype(np.float32) / 32768.0
            values[b, : len(w)] = torch.from_numpy((x - x.mean()) / np.sqrt(x.var() + 1e-7))
            mask[b, : len(w)] = 1
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            logits = model(values.to(device), attention_mask=mask.to(device)).logits
        ids = logits.argmax(-1).cpu()
        return [[int(i) for i in row] for row in ids]

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", nargs="+", default=["cuda", "cpu"])
    parser.add_argument("--arch", default="xls_r_300m")
    parser.add_argument("--clips", type=int, default=281, help="GPU runs; CV 7.0 test has 281")
    parser.add_argument("--cpu-clips", type=int, default=9, help="CPU runs (a 300M model is slow)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--beam", type=int, default=10)
    parser.add_argument("--work", type=Path, default=Path("/tmp/cvasr-bench-decode"))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" /
                        "decode.json")
    args = parser.parse_args()

    import torch

    from cvasr.decoding.decoder import CTCDecoder
    from cvasr.decoding.options import DecodingOptions

    args.work.mkdir(parents=True, exist_ok=True)
    letters = set("".join(t for _, _, t in synth_clips(50))) - {" "}
    tokens = ["<blank>", "<unk>", "<space>", *sorted(letters), "<sos/eos>"]
    exp = make_exp_dir(args.work, args.arch, tokens)
    rows = []
    for device in args.devices:
        if device == "cuda" and not torch.cuda.is_available():
            print("no CUDA device: GPU rows skipped")
            continue
        n = args.clips if device == "cuda" else args.cpu_clips
        wavs = [w for _, w, _ in synth_clips(n, seed=7)]
        audio = sum(len(w) for w in wavs) / RATE
        ours = CTCDecoder(exp, device=device)
        seed = seed_decoder(args.arch, len(tokens), device)
        runs = [
            ("ours", "greedy", 1, lambda b: ours.decode(b, DecodingOptions(batch_size=1))),
            ("ours", "greedy", args.batch_size,
             lambda b: ours.decode(b, DecodingOptions(batch_size=len(b)))),
            ("ours", f"beam {args.beam}", 1,
             lambda b: ours.decode(b, DecodingOptions(batch_size=1, beam_size=args.beam))),
            ("ours", f"beam {args.beam}", args.batch_size,
             lambda b: ours.decode(b, DecodingOptions(batch_size=len(b), beam_size=args.beam))),
            ("seed", "greedy", 1, seed),
            ("seed", "greedy", args.batch_size, seed),
        ]
        for stack, search, size, fn in runs:
            batches = batched(wavs, size)
            seconds = time_runs(fn, batches, device)
            rows.append({"device": device, "stack": stack, "search": search, "batch_size": size,
                         "clips": n, "audio_seconds": round(audio, 1),
                         "seconds": round(seconds, 3), "rtf": round(seconds / audio, 5)})
            print(f"{device} {stack} {search} batch {size}: RTF {rows[-1]['rtf']}", flush=True)
        del ours, seed
        if device == "cuda":
            torch.cuda.empty_cache()

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    print(f"\nDecoding, XLS-R 300M shape ({args.arch}), random init, synthetic CV-like clips; "
          f"{gpu or 'no GPU'}; CPU: {torch.get_num_threads()} threads; torch {torch.__version__}")
    print(f"| {'device':<6} | {'stack':<5} | {'search':<8} | {'batch':>5} | {'clips':>5} | "
          f"{'audio s':>7} | {'RTF':>8} | {'x realtime':>10} |")
    print("|--------|-------|----------|-------|-------|---------|----------|------------|")
    for r in rows:
        print(f"| {r['device']:<6} | {r['stack']:<5} | {r['search']:<8} | {r['batch_size']:>5} | "
              f"{r['clips']:>5} | {r['audio_seconds']:>7.1f} | {r['rtf']:8.4f} | "
              f"{1 / r['rtf']:10.0f} |")
    import transformers

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "decode", "gpu": gpu, "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "python": platform.python_version(), "git_revision": git_revision(), "arch": args.arch,
        "config": CONFIG.name, "rows": rows}, indent=2) + "\n")
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
