#!/usr/bin/env python3
"""The word LM's unknown-word offset (`LM_UNK_OFFSET`, defaults.py) against two LMs: stage 3's,
and one that knows none of the test words (bench/decode_lm.py's out-of-vocabulary check).

The offset is what the search charges a word the LM has never seen. Too low and every unknown
word loses to a known one (real test sets are full of unknown words); too high and the LM stops
correcting misspelt known words. On the demo model's test emissions (as stage 5 keeps them),
with stage 5's LM weight and word bonus, beam 50, ctc-beam-decoder: test WER and CER for each
offset with either LM, next to CER without an LM. Prints a table, writes JSON.

    .venv/bin/python bench/unk_offset_sweep.py --work-dir egs/as_cv7
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from decode_lm import (REPO, add_demo_options, demo_with_lm, git_revision, lm_without_words,
                       scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_demo_options(parser)
    parser.add_argument("--offsets", type=float, nargs="+",
                        default=[-10.0, -8.0, -7.0, -6.0, -5.0, -2.0, 0.0])
    parser.add_argument("--beam", type=int, default=50)
    parser.add_argument("--out", type=Path,
                        default=REPO / "bench" / "results" / "unk_offset_sweep.json")
    args = parser.parse_args()

    from cvasr.data.kaldi import read_table
    from cvasr.decoding.ctc import join_tokens, prefix_beam_search
    from cvasr.decoding.decoder import Tokens, read_log_probs
    from cvasr.decoding.lm_search import LMSearch

    work, exp, chosen = demo_with_lm(args)
    token_list = Tokens.of_experiment(exp).token_list
    refs = read_table(work / "dump" / "test" / "text")
    logps = read_log_probs(exp / "decode_ctc" / "test" / "logp.scp")
    utts = sorted(logps)
    beam_texts = {u: join_tokens([token_list[i] for i in prefix_beam_search(logps[u], 10)[0]])
                  for u in utts}
    no_lm = scores(refs, beam_texts)  # as decode_lm.py's "without": our prefix beam 10
    result = {"revision": git_revision(), "exp": str(exp), "lm_weight": chosen.lm_weight,
              "word_bonus": chosen.word_bonus, "beam": args.beam, "no_lm": no_lm, "rows": []}
    print(f"test, {len(utts)} utterances; lm_weight {chosen.lm_weight:g}, word_bonus "
          f"{chosen.word_bonus:g}, beam {args.beam}; without an LM: WER {no_lm['wer']} CER "
          f"{no_lm['cer']}")
    print("| offset | WER, stage 3's LM | CER | WER, LM without test words | CER | CER over no LM |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        oov_lm = Path(tmp) / "lm_without_test_words"
        lm_without_words(work, {w for s in refs.values() for w in s.split()}, oov_lm)
        for offset in args.offsets:
            row = {"unk_offset": offset}
            for name, lm in (("full", work / "data" / "lm"), ("oov", oov_lm)):
                search = LMSearch(token_list, lm, chosen.lm_weight, chosen.word_bonus, args.beam,
                                  offset)
                row[name] = scores(refs, {u: search.best(logps[u])[0] for u in utts})
            row["oov_cer_increase_points"] = round(row["oov"]["cer"] - no_lm["cer"], 2)
            result["rows"].append(row)
            print(f"| {offset:g} | {row['full']['wer']} | {row['full']['cer']} | "
                  f"{row['oov']['wer']} | {row['oov']['cer']} | "
                  f"{row['oov_cer_increase_points']:+} |", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
