"""Which CTC + word n-gram LM search stage 5 uses: accuracy and speed of the candidates on the
same emissions with the same LM.

Emissions: the demo model's CTC log-posteriors of the demo dev and test sets, as stage 5 keeps
them (`exp/<model>/decode_ctc/{dev,test}/logp.scp`); LM: stage 3's `data/lm`. So run `make demo`
first. Candidates, each at the same beam width and the same LM weight and word bonus (tuned on
dev for ctc-beam-decoder by stage 5, and used for all):

- greedy CTC and our own CTC prefix beam search without an LM (what stage 5 did before);
- pyctcdecode 0.5.0, the reference (what transformers' Wav2Vec2ProcessorWithLM runs). Its
  metadata pins numpy<2, which the recipe's stack (numpy 2.4) cannot meet, so it runs in a
  venv of its own (`--pyctcdecode-venv`, made from requirements/bench-lm.txt: pyctcdecode,
  numpy 1.26.4, kenlm-ex for KenLM's Python module) on the same emissions, saved as .npz;
- ctc-beam-decoder 0.2.0 (C++ port of pyctcdecode's search, KenLM inside), in the recipe's venv;
- torchaudio 2.11's flashlight `ctc_decoder` (flashlight-text 0.0.7, `.[bench]`) with the LM's
  words as its lexicon: fast, but it can only output words of the lexicon.

Accuracy is sclite's WER/CER of each search's text (`count_errors`); speed is the search alone,
one thread, milliseconds per utterance, best of `--repeats`; pyctcdecode and ctc-beam-decoder at
each of `--beams`, the rest at the first. An out-of-vocabulary check decodes test again with an
LM built from the training lines with every test word deleted from them, so that no test word is
known to it: CER with that LM against CER without one. Prints a table and writes JSON (default
bench/results/decode_lm.json).

    python3 -m venv .venv-lmbench && .venv-lmbench/bin/pip install -r requirements/bench-lm.txt
    .venv/bin/python bench/decode_lm.py --work-dir egs/as_cv7 --pyctcdecode-venv .venv-lmbench
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PYCTCDECODE_RUNNER = r"""
import json, sys, time
import numpy as np
from pyctcdecode import build_ctcdecoder
args = json.loads(sys.argv[1])
data = np.load(args["npz"])
utts = list(args["utts"])
decoder = build_ctcdecoder(args["labels"], kenlm_model_path=args["lm"], unigrams=args["unigrams"],
                           alpha=args["alpha"], beta=args["beta"],
                           unk_score_offset=args["unk_offset"])
best, texts = None, None
for _ in range(args["repeats"]):
    start = time.perf_counter()
    out = [decoder.decode(data[u], beam_width=args["beam"], beam_prune_logp=-10.0,
                          token_min_logp=-5.0) for u in utts]
    took = time.perf_counter() - start
    if best is None or took < best:
        best, texts = took, out
print(json.dumps({"seconds": best, "texts": texts}))
"""


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                             capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, text=True, capture_output=True).stdout.strip()
        return rev + ("+wip" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def scores(refs: dict[str, str], texts: dict[str, str]) -> dict[str, float]:
    from cvasr.scoring.sclite import count_errors

    pairs = [(refs[u].split(), texts[u].split()) for u in sorted(texts)]
    return {"wer": round(count_errors(pairs, "word").pct("err"), 2),
            "cer": round(count_errors(pairs, "char").pct("err"), 2)}


def timed(fn, utts: list[str], repeats: int) -> tuple[float, dict[str, str]]:
    best, texts = None, None
    for _ in range(repeats):
        start = time.perf_counter()
        out = {u: fn(u) for u in utts}
        took = time.perf_counter() - start
        if best is None or took < best:
            best, texts = took, out
    return best, texts


def flashlight_lexicon(words: list[str], token_list: list[str], path: Path) -> int:
    """flashlight's lexicon: each word spelled in tokens, `|` closing it; words holding a
    character the model does not have are left out."""
    known = set(token_list)
    kept = 0
    with open(path, "w", encoding="utf-8") as handle:
        for word in words:
            if all(ch in known for ch in word):
                handle.write(f"{word}\t{' '.join(word)} |\n")
                kept += 1
    return kept


def run_candidates(args: argparse.Namespace, logps: dict[str, np.ndarray], refs: dict[str, str],
                   token_list: list[str], lm_dir: Path, alpha: float, beta: float,
                   unk_offset: float, sweep: bool) -> list[dict]:
    """Every candidate on these emissions; with `sweep` pyctcdecode (the reference) and every
    beam of --beams, else the first beam only and no reference."""
    import torch

    from cvasr.decoding.ctc import greedy_search, join_tokens, prefix_beam_search
    from cvasr.decoding.lm_search import LMSearch, search_labels
    from cvasr.lm.ngram import read_unigrams

    torch.set_num_threads(1)
    utts = sorted(logps)
    rows = []

    def add(name: str, lm: bool, seconds: float, texts: dict[str, str], note: str = "") -> None:
        row = {"search": name, "lm": lm, "ms_per_utt": round(1000 * seconds / len(utts), 3),
               **scores(refs, texts), "note": note}
        rows.append(row)
        print(f"  {name:<40} {row['ms_per_utt']:>9.2f} ms/utt  WER {row['wer']:6.2f}  "
              f"CER {row['cer']:6.2f}", flush=True)

    def text_of(ids: list[int]) -> str:
        return join_tokens([token_list[i] for i in ids])

    seconds, texts = timed(lambda u: text_of(greedy_search(logps[u])[0]), utts, args.repeats)
    add("greedy CTC", False, seconds, texts)
    seconds, texts = timed(lambda u: text_of(prefix_beam_search(logps[u], 10)[0]), utts, 1)
    add("ours: CTC prefix beam 10 (Python)", False, seconds, texts)

    beams = args.beams if sweep else args.beams[:1]
    for beam in beams:
        search = LMSearch(token_list, lm_dir, alpha, beta, beam, unk_offset)
        seconds, texts = timed(lambda u: search.best(logps[u])[0], utts, args.repeats)
        add(f"ctc-beam-decoder 0.2.0, beam {beam}", True, seconds, texts)
        rows[-1]["beam"] = beam
        cbd_texts = texts
        if not sweep or args.pyctcdecode_venv is None:
            continue
        python = Path(args.pyctcdecode_venv) / "bin" / "python"
        with tempfile.TemporaryDirectory() as tmp:
            npz = Path(tmp) / "logp.npz"
            np.savez(npz, **{u: logps[u] for u in utts})
            payload = {"npz": str(npz), "utts": utts, "labels": search_labels(token_list),
                       "lm": str(lm_dir / "lm.bin"), "unigrams": read_unigrams(lm_dir),
                       "alpha": alpha, "beta": beta, "unk_offset": unk_offset,
                       "beam": beam, "repeats": args.repeats}
            proc = subprocess.run([str(python), "-c", PYCTCDECODE_RUNNER, json.dumps(payload)],
                                  capture_output=True, text=True, check=True)
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        texts = {u: " ".join(t.split()) for u, t in zip(utts, result["texts"])}
        same = sum(texts[u] == cbd_texts[u] for u in utts)
        add(f"pyctcdecode 0.5.0, beam {beam}", True, result["seconds"], texts,
            f"same text as ctc-beam-decoder for {same} of {len(utts)} utterances")
        rows[-1].update(beam=beam, same_as_ctc_beam_decoder=same,
                        speedup_of_ctc_beam_decoder=round(
                            result["seconds"] / seconds, 2))
    try:
        from torchaudio.models.decoder import ctc_decoder
    except ImportError as err:
        print(f"  torchaudio ctc_decoder unavailable ({err}): pip install '.[bench]'")
        return rows
    with tempfile.TemporaryDirectory() as tmp:
        lexicon = Path(tmp) / "lexicon.txt"
        words = flashlight_lexicon(read_unigrams(lm_dir), token_list, lexicon)
        tokens = ["-" if t == "<blank>" else "|" if t == "<space>" else t for t in token_list]
        decoder = ctc_decoder(lexicon=str(lexicon), tokens=tokens, lm=str(lm_dir / "lm.bin"),
                              beam_size=args.beams[0], lm_weight=alpha * np.log(10),
                              word_score=beta, unk_word="<unk>", sil_token="|",
                              blank_token="-", sil_score=0.0)

        def flashlight(u: str) -> str:
            emission = torch.from_numpy(np.array(logps[u], dtype=np.float32))
            hyp = decoder(emission[None])[0][0]
            return " ".join(hyp.words)

        seconds, texts = timed(flashlight, utts, args.repeats)
        add(f"torchaudio flashlight (lexicon), beam {args.beams[0]}", True, seconds, texts,
            f"lexicon of the LM's {words} words: cannot output any other word")
    return rows


def lm_without_words(work: Path, words: set[str], lm_dir: Path):
    """Stage 3's LM built from the training lines with every word of `words` deleted from them:
    it keeps the rest of their word sequences and knows none of `words`. Its build report."""
    from cvasr.data.kaldi import read_table
    from cvasr.lm.ngram import build_lm
    from cvasr.text.normalize import get_normalizer

    train = read_table(work / "data" / "train" / "text")
    kept = {u: " ".join(w for w in s.split() if w not in words) for u, s in train.items()}
    text = lm_dir.parent / f"{lm_dir.name}.text"
    text.write_text("".join(f"{u} {s}\n" for u, s in kept.items() if s), encoding="utf-8")
    return build_lm(lm_dir, [text], [work / "data" / "dev" / "text",
                                     work / "data" / "test" / "text"],
                    order=4, normalize=get_normalizer("as"))


def acoustic_forward_ms(exp: Path, data_dir: Path) -> float:
    """What the LM search is set against: the model's own forward pass per utterance (CPU, one
    thread, batch 1, as `cvasr transcribe` runs it), best of two passes over the set."""
    import kaldiio
    import torch

    from cvasr.decoding.decoder import CTCDecoder

    torch.set_num_threads(1)
    decoder = CTCDecoder(exp, device="cpu")
    wavs = [w for _, (_, w) in kaldiio.load_scp(str(data_dir / "wav.scp")).items()]
    best = None
    for _ in range(2):
        start = time.perf_counter()
        for w in wavs:
            decoder.log_probs([w])
        took = time.perf_counter() - start
        best = took if best is None else min(best, took)
    return round(1000 * best / len(wavs), 2)


def add_demo_options(parser: argparse.ArgumentParser) -> None:
    """--work-dir and --exp: the finished demo run whose stage-5 decoding a bench starts from."""
    parser.add_argument("--work-dir", type=Path, default=REPO / "egs" / "as_cv7",
                        help="a finished demo's work dir (data/lm, dump/, exp/)")
    parser.add_argument("--exp", default="asr_train_demo_ctc_char", help="model under exp/")


def demo_with_lm(args: argparse.Namespace):
    """(work dir, experiment dir, stage 5's recorded decoding with the LM) of add_demo_options'
    run; stops when stage 5 has not decoded with the LM."""
    from cvasr.decoding.options import recorded

    work = args.work_dir.resolve()
    exp = work / "exp" / args.exp
    chosen = recorded(exp)
    if chosen.lm is None:
        raise SystemExit(f"{exp} has no LM decoding recorded: run stage 5 with the LM first")
    return work, exp, chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_demo_options(parser)
    parser.add_argument("--beams", type=int, nargs="+", default=[50, 100, 200],
                        help="beam widths; the first is stage 5's (lm_beam_size)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pyctcdecode-venv", type=Path, default=None,
                        help="a venv with requirements/bench-lm.txt (pyctcdecode needs numpy<2)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "decode_lm.json")
    args = parser.parse_args()

    from cvasr.data.kaldi import read_table
    from cvasr.decoding.decoder import Tokens, read_log_probs

    work, exp, chosen = demo_with_lm(args)
    lm_dir = work / "data" / "lm"
    token_list = Tokens.of_experiment(exp).token_list
    alpha, beta, unk = chosen.lm_weight, chosen.word_bonus, chosen.unk_offset
    print(f"LM {lm_dir}, lm_weight {alpha:g}, word_bonus {beta:g} (stage 5's choice), "
          f"beams {args.beams}, unk offset {unk:g}")
    result = {"revision": git_revision(), "machine": platform.node(),
              "cpu_threads": 1, "beams": args.beams, "lm_weight": alpha, "word_bonus": beta,
              "unk_offset": unk, "sets": {}}
    result["acoustic_forward_ms_per_utt"] = acoustic_forward_ms(exp, work / "dump" / "dev")
    print(f"the model's forward pass on dev, CPU, 1 thread, batch 1: "
          f"{result['acoustic_forward_ms_per_utt']} ms/utt")
    for split in ("dev", "test"):
        logps = read_log_probs(exp / "decode_ctc" / split / "logp.scp")
        refs = read_table(work / "dump" / split / "text")
        print(f"{split}: {len(logps)} utterances, {sum(len(x) for x in logps.values())} frames")
        result["sets"][split] = run_candidates(args, logps, refs, token_list, lm_dir, alpha,
                                               beta, unk, sweep=True)

    # Out of vocabulary: an LM that knows none of the test set's words
    test_refs = read_table(work / "dump" / "test" / "text")
    test_words = {w for s in test_refs.values() for w in s.split()}
    with tempfile.TemporaryDirectory() as tmp:
        oov_lm = Path(tmp) / "lm_without_test_words"
        report = lm_without_words(work, test_words, oov_lm)
        print(f"test with an LM of the {report.text.kept_lines} training lines with every test "
              f"word deleted ({len(test_words)} test words, all unknown to it):")
        logps = read_log_probs(exp / "decode_ctc" / "test" / "logp.scp")
        rows = run_candidates(args, logps, test_refs, token_list, oov_lm, alpha, beta, unk,
                              sweep=False)
    result["oov_test"] = {"lm_lines": report.text.kept_lines, "test_words": len(test_words),
                          "rows": rows}
    without = next(r for r in rows if r["search"].startswith("ours"))
    with_lm = next(r for r in rows if r["lm"])
    result["oov_test"]["cer_increase_points"] = round(with_lm["cer"] - without["cer"], 2)

    speedups = {f"{split}_beam{r['beam']}": r["speedup_of_ctc_beam_decoder"]
                for split, rows_ in result["sets"].items() for r in rows_
                if "speedup_of_ctc_beam_decoder" in r}
    if speedups:
        result["speedup_vs_pyctcdecode"] = speedups
        print("ctc-beam-decoder's speed over pyctcdecode's: "
              + ", ".join(f"{k} {v}x" for k, v in speedups.items()))
    print(f"out of vocabulary: CER {with_lm['cer']} with the LM vs {without['cer']} without "
          f"({result['oov_test']['cer_increase_points']:+} points)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {os.path.relpath(args.out)}")


if __name__ == "__main__":
    main()
