"""The recipe's option defaults, each stated once.

The Python functions, the `cvasr` subcommands and the recipe's shell script all take them from
here (the script through `cvasr defaults`), so a default changed here changes everywhere, and
help texts print the value they really use.
"""

from __future__ import annotations

#: share of a split's clips that stages 1-2 may drop for bad input before the stage fails
MAX_DROP = 0.05
#: stage 2's length filter for train and dev clips, seconds (test is never filtered)
MIN_DURATION = 0.1
MAX_DURATION = 20.0
#: stage 3's token unit, and the sentencepiece vocabulary size for `bpe`
TOKEN_TYPE = "char"
NBPE = 150
#: utterances a decoding batch (formed from length-sorted utterances)
DECODE_BATCH_SIZE = 8
#: decoding a long input: the model sees windows of this many seconds (the longest clip stage 2
#: lets into training), overlapping by this many (each kept frame has half of it as context on
#: either side); the search cuts it into segments at pauses of at least this many seconds
DECODE_WINDOW = MAX_DURATION
DECODE_WINDOW_OVERLAP = 4.0
DECODE_SEGMENT_PAUSE = 0.5
#: parallel worker processes of the CPU stages when the caller gives none
NJ = 2
#: stage 3's word n-gram LM order
LM_ORDER = 4
#: stage 5's search with the word LM: beams, the LM weight and word bonus when none were tuned,
#: the offset for words the LM has never seen, and the grid the weights are tuned on (dev)
LM_BEAM_SIZE = 50
LM_WEIGHT = 0.5
WORD_BONUS = 1.0
#: -6, not pyctcdecode's -10: an LM that knows none of the demo's test words raises its test CER
#: over no LM by 4.8 points with -10 and by 2.8 with -6, while stage 3's LM gives test WER 12.3
#: with -10 and 10.9 with -6 (stage 5's demo weights; bench/results/unk_offset_sweep.json)
LM_UNK_OFFSET = -6.0
LM_WEIGHTS = (0.25, 0.5, 0.75, 1.0, 1.5)
WORD_BONUSES = (0.0, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0)

#: the defaults run.sh takes from `cvasr defaults`, by their option names there
SHELL_DEFAULTS = {
    "max_drop": MAX_DROP,
    "min_duration": MIN_DURATION,
    "max_duration": MAX_DURATION,
    "token_type": TOKEN_TYPE,
    "nbpe": NBPE,
    "lm_order": LM_ORDER,
}


def shell_lines() -> str:
    """`name=value` lines for run.sh (values are plain numbers and words: nothing to quote)."""
    return "".join(f"{name}={value:g}\n" if isinstance(value, float) else f"{name}={value}\n"
                   for name, value in SHELL_DEFAULTS.items())
#: stage 4's `compile_upstream: auto` compiles the transformer when a run plans at least this
#: many training steps (batches x epochs), or when the experiment's compile cache is warm.
#: One H200, XLS-R 300M, 32 clips a batch, the XLS-R config as committed since round 16 (CUDA
#: graphs, the sync-free CTC and SpecAugment), stage 4 through run.sh for 50 epochs of 17 steps:
#: compiled, the first five epochs took 200 s and 223 s more than five steady ones (the
#: compile, then CUDA graphs recorded for new shapes and for validation), eager 23 s more; a
#: steady epoch took 1.357 s and 1.21 s compiled and 1.941 s eager (validation every 5 epochs
#: and checkpoints included): 34 and 43 ms saved a step, so compiling pays from
#: (200 - 23) / 0.0344 = about 5,100 steps on the machine that saved less ((223 - 23) / 0.043 =
#: 4,600 on the other); the seed's 400 epochs of CV 7.0 Assamese are 16 x 400 = 6,400.
#: Compiled: bench/results/e2e_committed_0047ad6 and e2e_committed_07ce527_unparsed; eager, on a
#: third machine: e2e_cudagraphs_syncfree_cd29c37; computed by bench/compile_pays.py
#: (results/compile_pays_round16.txt; bench/NOTES.md, round 16). With the config
#: before (no CUDA graphs) it was 11,900.
COMPILE_PAYS_AFTER_STEPS = 5_100
