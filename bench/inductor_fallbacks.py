#!/usr/bin/env python3
"""Which ATen calls inductor leaves in one compiled XLS-R layer's forward + backward, with the
frames static or dynamic (issue 17, bench/NOTES.md round 16: the compiled step's backward calls
`aten::sum` 98 times a step itself, 1024 outputs each, about 2% of the GPU's work; 98 = 24 x 4 + 2
fits the layer norms' weight and bias gradients).

One s3prl `TransformerSentenceEncoderLayer` of XLS-R's shape (pre-norm, 1024 wide, FFN 4096, 16
heads), under bf16 autocast, compiled with `dynamic=False` and `dynamic=True` (the step marks the
frames dynamic), forward and backward, its generated code captured
(`torch._inductor.utils.run_and_get_code`). Counts, per variant, the calls of the generated
wrappers into ATen (`aten.<op>(` / `extern_kernels.<op>(`), and prints the lines of each
`aten.sum` call with the line before it (what it reduces). Each also with the layer's input a
transposed view, as the encoder passes it (round 18: the encoder graph's backward runs 98 ATen
sums a step, 4 a layer + 2, which one layer fed a contiguous input does not). CPU runs the same lowering but
generates C++, where the GPU's reduction heuristics do not apply: the GPU's answer is the one to
read. Round 19: the ATen sums are no fallback but the second round of inductor's mix-order
reduction (FINAL_REDUCE), which the wrapper runs as a torch call on the splits' partial sums;
counted per variant, and in a fifth variant with `triton.mix_order_reduction` off.

    python3 bench/inductor_fallbacks.py --batch 34 --frames 336 --out bench/results/...json
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch

#: the second round of inductor's mix-order reduction (torch 2.11, `triton.mix_order_reduction`,
#: on by default): a layer norm's backward runs as one Triton kernel that writes per-split
#: partial sums of its weight and bias gradients into a workspace, and the wrapper then sums the
#: splits with a torch call, `buf = ws[a : b].view(nsplit, 1024).sum(dim=0)`: ATen's
#: reduce_kernel, which the CALL pattern (`aten.<op>(`) does not see
FINAL_REDUCE = re.compile(r"^\s*\w+ = \w+\[.*\]\.view\(.*\)\.(sum|amin|amax)\(dim=0\)")
CALL = re.compile(r"\b(aten\.[A-Za-z_0-9]+(?:\.[A-Za-z_0-9]+)?|extern_kernels\.[A-Za-z_0-9]+)\(")


def layer_code(batch: int, frames: int, dynamic: bool, device: str,
               transposed: bool = False, options: dict | None = None) -> list[str]:
    """The generated code of one compiled layer's forward and backward. `transposed`: the input
    (frames, batch, 1024) as a view of a (batch, frames, 1024) tensor, as the encoder hands its
    layers `x.transpose(0, 1)` (strides of a transposed tensor, not a contiguous one)."""
    from s3prl.upstream.wav2vec2.wav2vec2_model import TransformerSentenceEncoderLayer
    from torch._inductor.utils import run_and_get_code

    torch.manual_seed(0)
    layer = TransformerSentenceEncoderLayer(1024, 4096, 16, dropout=0.0, attention_dropout=0.0,
                                            activation_dropout=0.0, activation_fn="gelu",
                                            layer_norm_first=True).to(device).train()
    padding = torch.zeros(batch, frames, dtype=torch.bool, device=device)
    padding[-1, frames - 7:] = True
    if transposed:
        x = torch.randn(batch, frames, 1024, device=device).transpose(0, 1).requires_grad_()
    else:
        x = torch.randn(frames, batch, 1024, device=device, requires_grad=True)
    torch._dynamo.reset()
    forward = torch.compile(lambda x: layer(x, self_attn_padding_mask=padding,
                                            need_weights=False)[0], dynamic=dynamic,
                            options=options)

    def step() -> None:
        with torch.autocast(device, dtype=torch.bfloat16):
            out = forward(x)
        out.float().pow(2).mean().backward()

    _, code = run_and_get_code(step)
    return code


def calls(code: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for source in code:
        for name in CALL.findall(source):
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def final_reduces(code: list[str]) -> list[str]:
    """The wrapper's torch reductions over a mix-order reduction's partial sums (FINAL_REDUCE)."""
    return [line.strip() for source in code for line in source.splitlines()
            if FINAL_REDUCE.match(line)]


def sum_sites(code: list[str]) -> list[str]:
    sites = []
    for source in code:
        lines = source.splitlines()
        for i, line in enumerate(lines):
            # calls only: the generated code also quotes each graph node in comments
            if "aten.sum" in line and "(" in line and not line.lstrip().startswith("#"):
                sites.append("\n".join(lines[max(0, i - 1): i + 1]).strip())
    return sites


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=34)
    parser.add_argument("--frames", type=int, default=336)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    result = {"benchmark": "inductor_fallbacks", "device": args.device, "torch": torch.__version__,
              "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
              "batch": args.batch, "frames": args.frames, "variants": {}}
    no_mix_order = {"triton.mix_order_reduction": False}
    for dynamic, transposed, options in ((False, False, None), (True, False, None),
                                         (False, True, None), (True, True, None),
                                         (True, False, no_mix_order)):
        code = layer_code(args.batch, args.frames, dynamic, args.device, transposed, options)
        name = (("dynamic" if dynamic else "static") + ("_transposed" if transposed else "")
                + ("_no_mix_order" if options else ""))
        result["variants"][name] = {"graphs": len(code), "calls": calls(code),
                                    "sum_sites": sum_sites(code),
                                    "mix_order_final_reduces": final_reduces(code)}
        counted = result["variants"][name]["calls"]
        reduces = result["variants"][name]["mix_order_final_reduces"]
        print(f"{name}: {len(code)} generated modules; ATen / extern calls: "
              + (", ".join(f"{k} x{v}" for k, v in counted.items()) or "none")
              + f"; mix-order reductions' final torch reductions: {len(reduces)}")
        for site in result["variants"][name]["sum_sites"] + reduces:
            print("    " + site.replace("\n", "\n    "))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"saved {args.out}")


if __name__ == "__main__":
    main()
