#!/usr/bin/env python3
"""cvasr import-hf at XLS-R 300M's shape: import a transformers Wav2Vec2ForCTC, decode, compare.

Builds a random-init transformers `Wav2Vec2ForCTC` of XLS-R 300M's exact shape (24 layers, 1024
wide, 16 heads, 4096 FFN, layer-norm feature encoder, stable layer norm, conv bias, 128-wide
positional conv in 16 groups; `--tiny`: the 0.4 M test shape) with the seed's vocabulary (the
blank `[PAD]` last) and a CTC head set so that transcripts vary with the audio
(`cvasr.interop.hf_random`), saves it, runs `cvasr import-hf`, then decodes synthetic clips
(train_throughput.py's) with cvasr's decoder on `--device` (greedy; bf16 autocast on GPUs that
have it, as `cvasr decode` runs, and fp32) and with transformers' own processor + model + argmax
(fp32, and bf16 autocast on the GPU), and compares transcripts (whole strings) and
log-posteriors (rows permuted to one vocabulary). Prints a table; writes JSON to --out.

    python bench/hf_interop_gpu.py --out bench/results/hf_interop_gpu.json             # GPU
    python bench/hf_interop_gpu.py --device cpu --tiny --out /tmp/hf_interop_tiny.json  # smoke

Only transformers APIs of 5.17 and earlier are used (the GPU machine has 5.17).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import LETTERS, RATE, git_revision, synth_clips  # noqa: E402


def hf_decode(hf_dir: Path, wavs: list[np.ndarray], device: str, bf16: bool):
    """transformers' processor + Wav2Vec2ForCTC + argmax: (texts, log-posteriors, seconds)."""
    import torch
    from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor

    processor = Wav2Vec2Processor.from_pretrained(str(hf_dir))
    model = Wav2Vec2ForCTC.from_pretrained(str(hf_dir)).to(device).eval()
    texts, logps = [], []
    start = time.perf_counter()
    for wav in wavs:
        inputs = processor(wav.astype(np.float32) / 32768, sampling_rate=RATE,
                           return_tensors="pt").to(device)
        with torch.no_grad(), torch.autocast(device.split(":")[0], dtype=torch.bfloat16,
                                             enabled=bf16):
            logits = model(**inputs).logits[0].float()
        logps.append(torch.log_softmax(logits, -1).cpu())
        texts.append(processor.batch_decode(logits.argmax(-1)[None].cpu())[0])
    return texts, logps, time.perf_counter() - start


def ours_decode(exp: Path, wavs: list[np.ndarray], device: str, bf16: bool):
    """cvasr's decoder, greedy: (texts, log-posteriors, seconds). With bf16 exactly the path
    `cvasr decode` takes on a GPU (CTCDecoder.log_probs autocasts); fp32 with it switched off."""
    import torch

    from cvasr.decoding.decoder import CTCDecoder, Search
    from cvasr.decoding.options import DecodingOptions

    decoder = CTCDecoder(exp, device=device)
    if not bf16:  # espnet2 autocasts the frontend itself when the config says so
        decoder.model.autocast_frontend = False
    search = Search(decoder.tokens, DecodingOptions(beam_size=1))
    texts, logps = [], []
    start = time.perf_counter()
    for wav in wavs:
        if bf16 or not device.startswith("cuda"):
            logp = decoder.log_probs([wav])[0]
        else:
            with torch.no_grad(), torch.autocast("cuda", enabled=False):
                x = torch.from_numpy(wav.astype(np.float32))[None].to(device)
                enc, _ = decoder.model.encode(x, torch.tensor([len(wav)], device=device))
                logp = decoder.model.ctc.log_softmax(enc)[0].float().cpu()
        logps.append(logp)
        texts.append(search(logp.numpy()).text)
    return texts, logps, time.perf_counter() - start


def as_ours(text: str) -> str:
    """transformers' text as cvasr writes it: [UNK] is <unk>, white space collapsed."""
    return " ".join(text.replace("[UNK]", "<unk>").split())


def compare(name: str, texts: list[str], logps, ref_texts: list[str], ref_logps,
            order: list[int] | None) -> dict:
    """Transcripts (whole strings) and log-posteriors of one row against the reference row."""
    import editdistance

    same = sum(a == b for a, b in zip(texts, ref_texts))
    errors = sum(editdistance.eval(a, b) for a, b in zip(texts, ref_texts))
    chars = sum(len(b) for b in ref_texts)
    diffs, agree, frames = [], 0, 0
    for a, b in zip(logps, ref_logps):
        b = b[:, order] if order is not None else b
        n = min(len(a), len(b))
        diffs.append(float((a[:n] - b[:n]).abs().max()))
        agree += int((a[:n].argmax(-1) == b[:n].argmax(-1)).sum())
        frames += n
    return {"row": name, "clips": len(texts), "same_transcript": same,
            "same_share": same / len(texts), "char_diff_share": errors / max(chars, 1),
            "max_abs_logp_diff": max(diffs), "frame_argmax_agreement": agree / frames,
            "ok": same >= 0.9 * len(texts) and errors <= 0.02 * max(chars, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--tiny", action="store_true", help="the 0.4 M test shape, for a smoke run")
    parser.add_argument("--clips", type=int, default=8, help="synthetic clips to decode")
    parser.add_argument("--work", type=Path, default=None, help="where the models go (a temp dir)")
    parser.add_argument("--out", type=Path, required=True, help="JSON results")
    args = parser.parse_args()

    import torch
    import transformers

    from cvasr.cli import main as cvasr
    from cvasr.interop.hf_random import write_random_hf_ctc

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: pass --device cpu", file=sys.stderr)
        return 2
    arch = "tiny" if args.tiny else "xls_r_300m"
    work = args.work or Path(tempfile.mkdtemp(prefix="hf_interop_"))
    hf_dir, exp = work / f"hf_{arch}", work / f"exp_{arch}"
    start = time.perf_counter()
    params = write_random_hf_ctc(hf_dir, arch, LETTERS + [" "], seed=0)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    if cvasr(["import-hf", "--model", str(hf_dir), "--out", str(exp)]) != 0:
        return 1
    import_s = time.perf_counter() - start

    clips = synth_clips(args.clips)
    wavs = [wav for _, wav, _ in clips]
    audio_s = sum(len(w) for w in wavs) / RATE
    record = json.loads((exp / "hf_import.json").read_text(encoding="utf-8"))
    from cvasr.decoding.decoder import Tokens

    tokens = Tokens.of_experiment(exp).token_list
    order = [record["hf_id_of_token"][t] for t in tokens]  # HF rows in our order

    gpu = args.device.startswith("cuda")
    ref_texts, ref_logps, ref_s = hf_decode(hf_dir, wavs, args.device, bf16=False)
    ref_texts = [as_ours(t) for t in ref_texts]
    rows, seconds = [], {"transformers fp32": ref_s}
    runs = [("cvasr decoder, fp32", "ours", False)]
    if gpu:
        runs = [("cvasr decoder, bf16 autocast (as cvasr decode)", "ours", True), *runs,
                ("transformers, bf16 autocast", "hf", True)]
    for name, who, bf16 in runs:
        if who == "ours":
            texts, logps, secs = ours_decode(exp, wavs, args.device, bf16)
            if not bf16:
                fp32_texts = texts
            rows.append(compare(name, texts, logps, ref_texts, ref_logps, order))
        else:
            texts, logps, secs = hf_decode(hf_dir, wavs, args.device, bf16)
            rows.append(compare(name, [as_ours(t) for t in texts], logps, ref_texts, ref_logps,
                                None))
        seconds[name] = secs
    examples = [{"reference": ref_texts[i], "cvasr_fp32": fp32_texts[i]}
                for i in range(min(3, len(wavs)))]
    distinct = len(set(ref_texts))
    words = float(np.mean([len(t.split()) for t in ref_texts]))

    print(f"XLS-R shape: {arch} ({params / 1e6:.1f} M parameters), device {args.device}, "
          f"{len(wavs)} clips ({audio_s:.1f} s); reference: transformers fp32 argmax "
          f"({distinct} distinct transcripts, {words:.1f} words on average)")
    print(f"build + save {build_s:.1f} s, cvasr import-hf {import_s:.1f} s")
    print("| row | same transcript | char diff | max abs log-prob diff | frame argmax agree | s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['row']} | {r['same_transcript']}/{r['clips']} "
              f"| {100 * r['char_diff_share']:.2f}% "
              f"| {r['max_abs_logp_diff']:.2e} | {100 * r['frame_argmax_agreement']:.2f}% "
              f"| {seconds[r['row']]:.2f} |")
    result = {
        "arch": arch, "parameters": params, "device": args.device,
        "device_name": torch.cuda.get_device_name() if gpu else platform.processor(),
        "clips": len(wavs), "audio_seconds": audio_s, "reference": "transformers fp32 argmax",
        "distinct_reference_transcripts": distinct, "mean_reference_words": words,
        "build_and_save_s": build_s, "import_hf_s": import_s, "decode_s": seconds,
        "rows": rows, "examples": examples, "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(), "git_rev": git_revision(),
        # the criterion: cvasr's fp32 decode against transformers' fp32 (bf16 rows: information)
        "ok": next(r for r in rows if r["row"] == "cvasr decoder, fp32")["ok"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(f"results in {args.out}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
