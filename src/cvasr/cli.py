"""`cvasr <subcommand>`: the entry points the recipe's run.sh calls, usable on their own too."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable

from cvasr import __version__, defaults
from cvasr.console import say
from cvasr.training.launch import LAUNCHERS, Launch

Handler = Callable[[argparse.Namespace], int]


def _defaults(args: argparse.Namespace) -> int:
    sys.stdout.write(defaults.shell_lines())
    return 0


def _demo_corpus(args: argparse.Namespace) -> int:
    from cvasr.corpora.demo import write_demo_corpus

    counts = write_demo_corpus(args.out, seed=args.seed, size=args.size, nj=args.nj,
                               show_progress=not args.quiet)
    say(f"demo corpus ({args.size}, seed {args.seed}) in {args.out}: "
        + ", ".join(f"{name} {n}" for name, n in counts.items()))
    return 0


def _make_upstream(args: argparse.Namespace) -> int:
    from cvasr.models.upstream import write_random_upstream

    n = write_random_upstream(args.arch, args.out, seed=args.seed)
    print(f"wrote random-init wav2vec 2.0 '{args.arch}' ({n / 1e6:.1f} M parameters) to {args.out}")
    return 0


def _check_release(args: argparse.Namespace) -> int:
    from cvasr.corpora.commonvoice import check_release

    lines = check_release(args.root, lang=args.lang).format(lang=args.lang,
                                                           version=args.version).splitlines()
    for i, line in enumerate(lines):
        # the release and its version, and any note or warning, matter; the table is for the log
        if i == 0 or line.lstrip().startswith(("note:", "warning:")):
            say(line)
        else:
            print(line)
    return 0


def _extract_release(args: argparse.Namespace) -> int:
    from cvasr.corpora.commonvoice import extract_release

    print(extract_release(args.tarball, args.out, args.lang))
    return 0


def _check_upstream(args: argparse.Namespace) -> int:
    if args.path.is_dir():  # a transformers directory: stage 0 converts it
        from cvasr.interop.hf import describe_hf_upstream

        say(describe_hf_upstream(args.path))
        return 0
    from cvasr.models.upstream import inspect_upstream

    say(inspect_upstream(args.path).describe())
    return 0


def _fetch_upstream(args: argparse.Namespace) -> int:
    from cvasr.models.upstream import fetch_pretrained

    say(fetch_pretrained(args.name, args.download_dir))
    return 0


def _prepare_data(args: argparse.Namespace) -> int:
    from cvasr.data.prepare import prepare_data

    report = prepare_data(args.release, args.data_dir, lang=args.lang, train_set=args.train_set,
                          exclude_eval_speakers=args.exclude_eval_speakers,
                          max_drop=args.max_drop, nj=args.nj, show_progress=not args.quiet)
    say(f"data dirs in {args.data_dir}: " + ", ".join(
        f"{name} {s.kept}/{s.listed}" for name, s in report.splits.items()))
    return 0


def _dump(args: argparse.Namespace) -> int:
    from cvasr.data.dump import DumpConfig, dump

    config = DumpConfig(min_duration=args.min_duration, max_duration=args.max_duration,
                        max_drop=args.max_drop, nj=args.nj)
    report = dump(args.data_dir, args.dump_dir, config, show_progress=not args.quiet)
    say(f"dumped audio in {args.dump_dir}: " + ", ".join(
        f"{name} {s.kept}/{s.listed}" for name, s in report.splits.items()))
    return 0


def _validate_data_dir(args: argparse.Namespace) -> int:
    from cvasr.data.datadir import validate_data_dir

    problems = validate_data_dir(args.dir, check_files=not args.no_check_files)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{args.dir}: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{args.dir}: valid")
    return 0


def _set_threads(args: argparse.Namespace) -> int:
    """CPU threads from --nj (torch's intra-op threads, and the LM search's threads)."""
    import torch

    if args.nj is None:
        return max(1, torch.get_num_threads())
    if args.nj < 1:
        raise ValueError(f"--nj must be at least 1, got {args.nj}")
    torch.set_num_threads(args.nj)
    return args.nj


def _decoding_options(args: argparse.Namespace):
    """What to decode with: the experiment's recorded choice (stage 5's), then --config, then
    the options given on the line."""
    from cvasr.decoding.options import DecodingOptions, read_yaml, recorded

    options = recorded(args.model) if args.model is not None else DecodingOptions()
    if args.config is not None:
        options = options.updated(read_yaml(args.config), str(args.config))
    given = {"beam_size": args.beam, "batch_size": getattr(args, "batch_size", None),
             "lm_weight": args.lm_weight, "word_bonus": args.word_bonus,
             "lm_beam_size": args.lm_beam, "window": args.window}
    options = options.updated(given, "the command line")
    if args.no_lm:
        options = options.updated({"lm": None}, "the command line")
    elif args.lm is not None:
        options = options.updated({"lm": str(args.lm)}, "the command line")
    options.check()
    return options


def _decode(args: argparse.Namespace) -> int:
    from cvasr.decoding.decoder import CTCDecoder, Tokens, decode_data_dir, decode_log_probs
    from cvasr.decoding.options import write_record

    threads = _set_threads(args)
    options = _decoding_options(args)
    if (args.data_dir is None) == (args.logp is None):
        raise ValueError("give one of --data-dir (run the model) and --logp (search kept "
                         "log-posteriors again)")
    if args.logp is not None:
        if args.save_logp:
            raise ValueError("--save-logp needs --data-dir: --logp decodes kept ones")
        text = decode_log_probs(Tokens.of_experiment(args.model), args.logp, args.out, options,
                                threads)
        source, model = args.logp, "kept log-posteriors"
    else:
        decoder = CTCDecoder(args.model, device=args.device)
        text = decode_data_dir(decoder, args.data_dir, args.out, options, args.save_logp,
                               threads)
        source, model = args.data_dir, decoder.model_file
    write_record(args.out, options)  # the decode dir says how it was decoded
    if args.record:
        write_record(args.model, options)
    say(f"decoded {source} with {model} ({options.describe()}): {text}")
    return 0


def _tune_lm(args: argparse.Namespace) -> int:
    from cvasr.data.kaldi import read_table
    from cvasr.decoding.decoder import (Search, Tokens, read_frame_shift, read_log_probs,
                                        write_decode_dir)
    from cvasr.decoding.options import write_record
    from cvasr.decoding.tune import tune_lm, write_grid

    threads = _set_threads(args)
    if args.lm is None or args.no_lm:
        raise ValueError("tune-lm needs --lm DIR")
    options = _decoding_options(args)
    tokens = Tokens.of_experiment(args.model)
    logps = read_log_probs(args.logp)
    frame_shift = read_frame_shift(args.logp)
    refs = read_table(args.ref)
    grid = len(options.lm_weights) * len(options.word_bonuses)
    say(f"tuning the LM weight and word bonus on {args.ref}: {grid} settings, "
        f"{len(logps)} utterances")

    def report(point) -> None:
        print(f"  lm_weight {point.lm_weight:<5g} word_bonus {point.word_bonus:<5g} "
              f"WER {point.wer:6.2f}  CER {point.cer:6.2f}  ({point.seconds:.1f} s)",
              file=sys.stderr, flush=True)

    chosen, points = tune_lm(tokens, logps, refs, options, threads, on_point=report,
                             frame_shift=frame_shift)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_grid(out / "tuning.tsv", points, chosen)
    hyps = Search(tokens, chosen, frame_shift).many([logps[u] for u in sorted(logps)], threads)
    text = write_decode_dir(out, dict(zip(sorted(logps), hyps)))
    write_record(out, chosen)
    record = write_record(args.model, chosen)
    best = next(p for p in points if (p.lm_weight, p.word_bonus) == (chosen.lm_weight,
                                                                     chosen.word_bonus))
    say(f"chose lm_weight {chosen.lm_weight:g}, word_bonus {chosen.word_bonus:g} (dev WER "
        f"{best.wer:.2f}, CER {best.cer:.2f}; grid in {out / 'tuning.tsv'}), recorded in "
        f"{record}; decoded: {text}")
    return 0


def _printable(path: Path) -> str:
    """A path as one field of a line: tabs and line breaks shown as \\t, \\n, \\r."""
    return str(path).replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _transcribe(args: argparse.Namespace) -> int:
    """stdout gets `FILE<TAB>text` lines (with --segments `FILE<TAB>start<TAB>end<TAB>text`)
    and nothing else: anything else that writes to stdout meanwhile goes to stderr. A file that
    cannot be transcribed gets one line on stderr and the exit status 1; the others are still
    transcribed. Third-party warnings (deprecations inside espnet2 and s3prl while decoding)
    are not shown: stderr is for the files that failed."""
    import contextlib
    import warnings

    from cvasr.decoding.transcriber import Transcriber

    out = sys.stdout
    failed = 0
    threads = _set_threads(args)
    options = _decoding_options(args)
    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transcriber = Transcriber(args.model, checkpoint=args.checkpoint, device=args.device,
                                  options=options, threads=threads)
        try:
            for result in transcriber.transcribe_files(args.files):
                name = _printable(result.path)
                if result.transcript is None:
                    failed += 1
                    print(f"cvasr transcribe: {name}: {result.error}", file=sys.stderr,
                          flush=True)
                elif args.segments:
                    out.writelines(f"{name}\t{s.start:.2f}\t{s.end:.2f}\t{s.text}\n"
                                   for s in result.transcript.segments)
                else:
                    out.write(f"{name}\t{result.transcript.text}\n")
                out.flush()
        except BrokenPipeError:  # the reader went away (`| head -1`): stop as a pipe does
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
            return 141
    return 1 if failed else 0


def _results(args: argparse.Namespace) -> int:
    from cvasr.scoring.results import write_results

    print(write_results(args.out, args.exp, args.decode_dirs, args.device))
    return 0


def _make_lm(args: argparse.Namespace) -> int:
    from cvasr.lm.ngram import build_lm
    from cvasr.text.normalize import get_normalizer

    normalize = get_normalizer(args.lang)
    report = build_lm(args.out, args.train_text, args.exclude_text, args.extra_text or [],
                      order=args.order, normalize=normalize)
    say(report.summary())
    say(f"LM in {args.out}")
    return 0


def _score(args: argparse.Namespace) -> int:
    from cvasr.text.normalize import get_normalizer
    from cvasr.scoring.sclite import score

    normalize = get_normalizer(args.lang) if args.lang else None
    summary = score(args.ref, args.hyp, args.out, unit=args.unit, utt2spk=args.utt2spk,
                    engine=args.engine, normalize=normalize)
    say(summary.line(args.label))
    return 0


def _make_tokens(args: argparse.Namespace) -> int:
    from cvasr.text.tokens import make_token_list, read_token_list

    path = make_token_list(args.text, args.out, token_type=args.token_type, nbpe=args.nbpe)
    say(f"token list {path}: {len(read_token_list(path))} tokens ({args.token_type})")
    return 0


def _collect_stats(args: argparse.Namespace) -> int:
    from cvasr.training.stages import collect_stats, resolve_config

    resolved = args.out / "train_config.resolved.yaml"
    say(f"collecting shape statistics with espnet2 (log: {args.out / 'collect_stats.log'})")
    resolve_config(args.config, args.upstream, args.download_dir, resolved)
    collect_stats(args.dump_dir, args.token_list, resolved, args.out)
    say(f"shape statistics in {args.out}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from cvasr.training.stages import resolve_config, train

    resolved = args.exp_dir / "train_config.resolved.yaml"
    resolve_config(args.config, args.upstream, args.download_dir, resolved)
    launch = Launch(args.launcher, nnodes=args.nnodes, node_rank=args.node_rank,
                    master_addr=args.master_addr, master_port=args.master_port,
                    local_nodes=args.local_nodes)
    train(args.dump_dir, args.token_list, args.stats_dir, resolved, args.exp_dir, ngpu=args.ngpu,
          extra_args=args.espnet_args, launch=launch)
    say(f"trained model in {args.exp_dir}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cvasr",
        description="Common Voice speech recognition recipe tools (XLS-R 300M + CTC on espnet2). "
                    "egs/as_cv7/run.sh calls these; each also works on its own.")
    parser.add_argument("--version", action="version", version=f"cvasr {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    add("defaults", _defaults,
        "Print the recipe's option defaults as name=value lines (run.sh reads them from here).")

    p = add("demo-corpus", _demo_corpus,
            "Synthesise the embedded Assamese demo corpus (espeak-ng) in Common Voice 7.0 layout.")
    p.add_argument("--out", type=Path, required=True, help="release folder to write (clips/, *.tsv)")
    p.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default 0)")
    p.add_argument("--size", choices=["small", "full"], default="full",
                   help="small: 46 clips for fast tests; full: 860 clips, 12 speakers (default)")
    p.add_argument("--nj", type=int, default=defaults.NJ,
                   help="parallel synthesis jobs (default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add("make-upstream", _make_upstream,
            "Write a randomly initialised wav2vec 2.0 checkpoint in s3prl's converted format.")
    p.add_argument("--arch", choices=["tiny", "xls_r_300m"], required=True,
                   help="tiny: CPU-sized; xls_r_300m: the exact shape of XLS-R 300M (~317 M params)")
    p.add_argument("--out", type=Path, required=True, help="checkpoint file to write")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed (default 0)")

    p = add("check-release", _check_release,
            "Check a Common Voice release folder: files, tsv headers, clip counts, missing audio.")
    p.add_argument("root", type=Path, help="folder holding clips/, train.tsv, dev.tsv, ...")
    p.add_argument("--lang", default=None,
                   help="language code: published sizes where known, and the download hint")
    p.add_argument("--version", default=None,
                   help="release version (e.g. 7.0); default: read from the folder names "
                        "(cv-corpus-<version>-<date>/<lang>)")

    p = add("extract-release", _extract_release,
            "Unpack a Common Voice tarball (once) and print the language folder it holds.")
    p.add_argument("--tarball", type=Path, required=True, help="e.g. cv-corpus-7.0-2021-07-21-as.tar.gz")
    p.add_argument("--out", type=Path, required=True, help="folder to unpack into")
    p.add_argument("--lang", required=True, help="language code of the release (e.g. as)")

    p = add("check-upstream", _check_upstream,
            "Check that a file is a wav2vec 2.0 checkpoint s3prl can load (s3prl or fairseq "
            "format), or a directory a transformers wav2vec 2.0 that stage 0 converts.")
    p.add_argument("path", type=Path)

    p = add("fetch-upstream", _fetch_upstream,
            "Have s3prl download its pretrained checkpoint (e.g. xls_r_300m) and load it once.")
    p.add_argument("--name", default="xls_r_300m", help="s3prl upstream name (default xls_r_300m)")
    p.add_argument("--download-dir", type=Path, required=True, help="s3prl's download folder")

    def add_prep_limits(p: argparse.ArgumentParser) -> None:
        """Options stages 1 and 2 share."""
        p.add_argument("--max-drop", type=float, default=defaults.MAX_DROP,
                       help="fail if a split loses more than this share to bad input "
                            "(default %(default)s)")
        p.add_argument("--nj", type=int, default=defaults.NJ,
                       help="parallel worker processes (default %(default)s)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add("prepare-data", _prepare_data,
            "Stage 1: a Common Voice release to Kaldi data dirs data/{train,dev,test}, with "
            "normalised text, measured durations and data/prep_report.json.")
    p.add_argument("--release", type=Path, required=True, help="release folder (clips/, *.tsv)")
    p.add_argument("--data-dir", type=Path, required=True, help="output, e.g. data")
    p.add_argument("--lang", default="as", help="language code; picks the text normaliser")
    p.add_argument("--train-set", choices=["train", "validated"], default="train",
                   help="train: CV's train.tsv (default); validated: validated minus dev/test clips")
    p.add_argument("--exclude-eval-speakers", action="store_true",
                   help="with --train-set validated, also drop clips of dev/test speakers")
    add_prep_limits(p)

    p = add("dump", _dump,
            "Stage 2: decode, down-mix and resample every clip to 16 kHz mono 16-bit audio in a "
            "Kaldi ark under DUMP_DIR/{train,dev,test}; filter train/dev by duration and text.")
    p.add_argument("--data-dir", type=Path, required=True, help="stage 1's output, e.g. data")
    p.add_argument("--dump-dir", type=Path, required=True, help="output, e.g. dump")
    p.add_argument("--min-duration", type=float, default=defaults.MIN_DURATION,
                   help="seconds (default %(default)s)")
    p.add_argument("--max-duration", type=float, default=defaults.MAX_DURATION,
                   help="seconds (default %(default)s)")
    add_prep_limits(p)

    p = add("validate-data-dir", _validate_data_dir,
            "Check a Kaldi data dir: sorting, id consistency, spk2utt vs utt2spk, files exist.")
    p.add_argument("dir", type=Path)
    p.add_argument("--no-check-files", action="store_true", help="do not check audio files exist")

    p = add("make-tokens", _make_tokens,
            "Stage 3: the token list from a Kaldi text file with espnet2's tokenizer: characters "
            "(space as <space>) or sentencepiece unigram pieces.")
    p.add_argument("--text", type=Path, required=True, help="e.g. dump/train/text")
    p.add_argument("--out", type=Path, required=True, help="folder for tokens.txt (and bpe.model)")
    p.add_argument("--token-type", choices=["char", "bpe"], default=defaults.TOKEN_TYPE)
    p.add_argument("--nbpe", type=int, default=defaults.NBPE,
                   help="sentencepiece vocabulary (bpe only; default %(default)s)")

    def add_model_inputs(p: argparse.ArgumentParser) -> None:
        p.add_argument("--dump-dir", type=Path, required=True, help="stage 2's output")
        p.add_argument("--token-list", type=Path, required=True, help="stage 3's tokens.txt")
        p.add_argument("--config", type=Path, required=True, help="training YAML (conf/)")
        p.add_argument("--upstream", required=True,
                       help="stage 0's upstream: a checkpoint path or s3prl:<name>")
        p.add_argument("--download-dir", type=Path, default=Path("downloads/s3prl"),
                       help="s3prl's download folder for s3prl:<name> upstreams")

    p = add("collect-stats", _collect_stats,
            "Stage 3: espnet2's collect-stats for the shape files batching needs, without running "
            "the frontend over the data.")
    add_model_inputs(p)
    p.add_argument("--out", type=Path, required=True, help="e.g. exp/asr_stats")

    p = add("train", _train,
            "Stage 4: espnet2 ASR training (resumes from EXP_DIR/checkpoint.pth); arguments "
            "after -- go to espnet2 unchanged, e.g. -- --max_epoch 20.")
    add_model_inputs(p)
    p.add_argument("--stats-dir", type=Path, required=True, help="collect-stats output")
    p.add_argument("--exp-dir", type=Path, required=True, help="experiment folder")
    p.add_argument("--ngpu", type=int, default=0,
                   help="GPUs of this machine (0: CPU; >1: DDP, one process a GPU)")
    p.add_argument("--launcher", choices=LAUNCHERS, default="espnet2",
                   help="who starts the processes: espnet2 itself, or torchrun")
    p.add_argument("--nnodes", type=int, default=1, help="torchrun: machines in the run")
    p.add_argument("--node-rank", type=int, default=0, help="torchrun: this machine's rank")
    p.add_argument("--master-addr", default="127.0.0.1",
                   help="torchrun: node 0's address, the same on every node")
    p.add_argument("--master-port", type=int, default=None,
                   help="torchrun: node 0's port, the same on every node (needed with --nnodes "
                        "> 1 unless --local-nodes)")
    p.add_argument("--local-nodes", action="store_true",
                   help="torchrun: start all --nnodes node ranks on this machine, --ngpu split "
                        "between them (the multi-node path on one machine)")
    p.add_argument("espnet_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    def add_decoding(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", type=Path, required=True, help="stage 4's experiment dir")
        p.add_argument("--config", type=Path, default=None,
                       help="decode YAML, e.g. conf/decode_ctc.yaml (over what stage 5 recorded "
                            "in the experiment, EXP/decoding.yaml)")
        p.add_argument("--beam", type=int, default=None,
                       help="without the LM: 1 greedy, more prefix beam search (default: "
                            "recorded, else config, else 1)")
        p.add_argument("--lm", type=Path, default=None,
                       help="word n-gram LM dir (stage 3's data/lm); default: the one stage 5 "
                            "recorded")
        p.add_argument("--no-lm", action="store_true", help="CTC alone, even if an LM is recorded")
        p.add_argument("--lm-weight", type=float, default=None, help="the LM's weight (alpha)")
        p.add_argument("--word-bonus", type=float, default=None, help="added per word (beta)")
        p.add_argument("--lm-beam", type=int, default=None, help="beams of the search with the LM")
        p.add_argument("--window", type=float, default=None,
                       help="seconds of audio the model sees at once; longer inputs run in "
                            "overlapping windows (default: recorded, else config, else "
                            f"{defaults.DECODE_WINDOW:g})")
        p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
        p.add_argument("--nj", type=int, default=None,
                       help="CPU threads of the model's forward pass and the LM search "
                            "(default: torch's, one per physical core)")

    p = add("decode", _decode,
            "Decode a dumped data dir with a trained model (batched, length-sorted CTC; greedy, "
            "prefix beam, or beam with the word LM) into Kaldi-style OUT/text, OUT/score, "
            "OUT/token and OUT/token_score (per-token log-probabilities of the best alignment); "
            "or search log-posteriors kept by an earlier decode again (--logp).")
    add_decoding(p)
    p.add_argument("--data-dir", type=Path, default=None, help="e.g. dump/test")
    p.add_argument("--logp", type=Path, default=None,
                   help="an earlier decode's OUT/logp.scp: search it again without the model")
    p.add_argument("--save-logp", action="store_true",
                   help="also keep the log-posteriors (OUT/logp.ark, OUT/logp.scp)")
    p.add_argument("--record", action="store_true",
                   help="record these options as the experiment's decoding (EXP/decoding.yaml), "
                        "which decode and transcribe start from")
    p.add_argument("--out", type=Path, required=True, help="decode folder")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"utterances a forward pass (default: config, else "
                        f"{defaults.DECODE_BATCH_SIZE})")

    p = add("tune-lm", _tune_lm,
            "Stage 5: decode kept dev log-posteriors with the word LM at every LM weight x word "
            "bonus of the decode config's grid, choose the lowest WER (then CER), write the grid "
            "(OUT/tuning.tsv) and the dev decode with the choice to OUT, and record the choice "
            "in the experiment (EXP/decoding.yaml).")
    add_decoding(p)
    p.add_argument("--logp", type=Path, required=True, help="the dev decode's OUT/logp.scp")
    p.add_argument("--ref", type=Path, required=True, help="dev references, e.g. dump/dev/text")
    p.add_argument("--out", type=Path, required=True, help="decode folder for dev with the LM")

    p = add("transcribe", _transcribe,
            "Print the text of audio files (mp3/wav/flac, any rate or channels, any length), "
            "one line each on stdout: the file, a tab, the text; decoded as stage 5 chose "
            "(EXP/decoding.yaml: beam, LM). A file that cannot be read gets one line on stderr "
            "and exit status 1; the others are still transcribed.")
    add_decoding(p)
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="model file: a path, or a name in the experiment dir (e.g. "
                        "valid.cer_ctc.best.pth, 10epoch.pth, checkpoint.pth); default: "
                        "valid.cer_ctc.ave.pth")
    p.add_argument("--segments", action="store_true",
                   help="one line per stretch of speech between pauses: the file, start and "
                        "end in seconds, the text (tab-separated)")
    p.add_argument("files", type=Path, nargs="+")

    p = add("make-lm", _make_lm,
            "Stage 3: the word n-gram LM (KenLM, modified Kneser-Ney; ARPA, binary, unigrams) from "
            "the training transcripts and extra text, with every dev/test sentence removed.")
    p.add_argument("--train-text", type=Path, nargs="+", required=True,
                   help="Kaldi text files of the training transcripts, e.g. data/train/text")
    p.add_argument("--exclude-text", type=Path, nargs="+", required=True,
                   help="Kaldi text files whose sentences must not be in the LM (dev, test)")
    p.add_argument("--extra-text", type=Path, nargs="*", default=None,
                   help="plain text files, one sentence a line, raw or normalised")
    p.add_argument("--lang", required=True, help="language code: normalises the extra text")
    p.add_argument("--order", type=int, default=defaults.LM_ORDER,
                   help="n-gram order (default %(default)s)")
    p.add_argument("--out", type=Path, required=True, help="LM dir, e.g. data/lm")

    p = add("results", _results,
            "Write RESULTS.md (ESPnet's |dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err| tables for "
            "WER and CER) from decode dirs holding score_wer/ and score_cer/.")
    p.add_argument("--exp", type=Path, required=True, help="the experiment dir decoded")
    p.add_argument("--decode-dirs", type=Path, nargs="+", required=True,
                   help="decode dirs with score_wer/ and score_cer/ (and decoding.yaml)")
    p.add_argument("--device", default="cpu", help="shown in RESULTS.md")
    p.add_argument("--out", type=Path, required=True, help="e.g. RESULTS.md")

    p = add("score", _score,
            "Score a hypothesis text file against a reference with counts identical to NIST "
            "sclite; writes ref.trn, hyp.trn and result.txt (sclite's -o all layout).")
    p.add_argument("--ref", type=Path, required=True, help="Kaldi text: uttid w1 w2 ...")
    p.add_argument("--hyp", type=Path, required=True, help="Kaldi text: uttid w1 w2 ...")
    p.add_argument("--utt2spk", type=Path, default=None, help="speaker of each utterance")
    p.add_argument("--unit", choices=["word", "char"], default="word",
                   help="word (WER) or char (CER; each space a <space> token)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--lang", default=None,
                   help="apply this language's text normaliser (e.g. as) to both sides first; "
                        "default: score the texts as they are")
    p.add_argument("--engine", choices=["python", "sclite"], default="python",
                   help="python: built-in, identical counts; sclite: run the real binary (sctk)")
    p.add_argument("--label", default="",
                   help="what was scored, printed before the error rate (e.g. 'test')")

    from cvasr.interop.commands import add_commands

    add_commands(add)  # import-hf, import-hf-upstream, export-hf, export-onnx, export-espnet
    return parser


# Failures a user can fix: one line on stderr, exit status 1, no traceback.
_USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, RuntimeError,
                                                  OSError)

#: the options naming what each subcommand writes (default: --out), where a full disk is named
_WRITES = {"fetch-upstream": ("download_dir",), "prepare-data": ("data_dir",),
           "dump": ("dump_dir",), "train": ("exp_dir",), "tune-lm": ("out", "model"),
           "check-release": (), "check-upstream": (), "validate-data-dir": (), "defaults": (),
           "transcribe": ()}


def _outputs(args: argparse.Namespace) -> list[Path]:
    names = _WRITES.get(args.command, ("out",))
    return [Path(getattr(args, n)) for n in names if getattr(args, n, None) is not None]


def _log_traceback() -> None:
    """The traceback to stderr (the stage log under run.sh), unless that cannot be written."""
    import traceback

    try:
        traceback.print_exc()
        sys.stderr.flush()
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    from cvasr.console import console, error
    from cvasr.corpora.commonvoice import ReleaseError
    from cvasr.data.report import TooManyDropped
    from cvasr.nospace import no_space_message
    from cvasr.training.stages import ConfigError

    args = build_parser().parse_args(argv)
    if getattr(args, "espnet_args", None) and args.espnet_args[0] == "--":
        args.espnet_args = args.espnet_args[1:]
    try:
        return args.handler(args)
    except Exception as err:
        full = no_space_message(err, _outputs(args))
        if full is not None:
            _log_traceback()  # what failed where
            error(f"cvasr {args.command}: error: {full}")
            return 1
        if isinstance(err, (ReleaseError, TooManyDropped, ConfigError, *_USER_ERRORS)):
            error(f"cvasr {args.command}: error: {err}")
            return 1
        if console() is None:
            raise
        # under run.sh: the traceback to the stage log, one line to the console
        _log_traceback()
        error(f"cvasr {args.command}: unexpected error: {type(err).__name__}: {err} (the "
              "traceback is in the stage log)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
