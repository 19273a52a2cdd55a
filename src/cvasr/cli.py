"""`cvasr <subcommand>`: the entry points the recipe's run.sh calls, usable on their own too."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from cvasr import __version__

Handler = Callable[[argparse.Namespace], int]


def _demo_corpus(args: argparse.Namespace) -> int:
    from cvasr.demo_corpus import write_demo_corpus

    counts = write_demo_corpus(args.out, seed=args.seed, size=args.size, nj=args.nj,
                               show_progress=not args.quiet)
    print(f"demo corpus ({args.size}, seed {args.seed}) in {args.out}: "
          + ", ".join(f"{name} {n}" for name, n in counts.items()))
    return 0


def _make_upstream(args: argparse.Namespace) -> int:
    from cvasr.upstream import write_random_upstream

    n = write_random_upstream(args.arch, args.out, seed=args.seed)
    print(f"wrote random-init wav2vec 2.0 '{args.arch}' ({n / 1e6:.1f} M parameters) to {args.out}")
    return 0


def _check_release(args: argparse.Namespace) -> int:
    from cvasr.commonvoice import check_release

    print(check_release(args.root).format(lang=args.lang, version=args.version))
    return 0


def _extract_release(args: argparse.Namespace) -> int:
    from cvasr.commonvoice import extract_release

    print(extract_release(args.tarball, args.out, args.lang))
    return 0


def _check_upstream(args: argparse.Namespace) -> int:
    from cvasr.upstream import inspect_upstream

    print(inspect_upstream(args.path).describe())
    return 0


def _fetch_upstream(args: argparse.Namespace) -> int:
    from cvasr.upstream import fetch_pretrained

    print(fetch_pretrained(args.name, args.download_dir))
    return 0


def _prepare_data(args: argparse.Namespace) -> int:
    from cvasr.dataprep import prepare_data

    report = prepare_data(args.release, args.data_dir, lang=args.lang, train_set=args.train_set,
                          exclude_eval_speakers=args.exclude_eval_speakers,
                          max_drop=args.max_drop, nj=args.nj, show_progress=not args.quiet)
    print(f"data dirs in {args.data_dir}: " + ", ".join(
        f"{name} {s.kept}/{s.listed}" for name, s in report.splits.items()))
    return 0


def _dump(args: argparse.Namespace) -> int:
    from cvasr.dump import DumpConfig, dump

    config = DumpConfig(min_duration=args.min_duration, max_duration=args.max_duration,
                        max_drop=args.max_drop, nj=args.nj)
    report = dump(args.data_dir, args.dump_dir, config, show_progress=not args.quiet)
    print(f"dumped audio in {args.dump_dir}: " + ", ".join(
        f"{name} {s.kept}/{s.listed}" for name, s in report.splits.items()))
    return 0


def _validate_data_dir(args: argparse.Namespace) -> int:
    from cvasr.datadir import validate_data_dir

    problems = validate_data_dir(args.dir, check_files=not args.no_check_files)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{args.dir}: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{args.dir}: valid")
    return 0


def _decode_options(args: argparse.Namespace) -> None:
    """Fill --beam/--batch-size from --config (a decode YAML) where not given on the line; set
    the CPU threads from --nj."""
    import torch
    import yaml

    if args.nj is not None:
        if args.nj < 1:
            raise ValueError(f"--nj must be at least 1, got {args.nj}")
        torch.set_num_threads(args.nj)

    conf = yaml.safe_load(args.config.read_text(encoding="utf-8")) if args.config else {}
    unknown = set(conf or {}) - {"beam_size", "batch_size"}
    if unknown:
        raise ValueError(f"{args.config}: unknown key(s) {', '.join(sorted(unknown))}; "
                         "a decode config has beam_size and batch_size")
    if args.beam is None:
        args.beam = int((conf or {}).get("beam_size", 1))
    if getattr(args, "batch_size", 0) is None:
        args.batch_size = int((conf or {}).get("batch_size", 8))


def _decode(args: argparse.Namespace) -> int:
    from cvasr.decode import CTCDecoder, decode_data_dir

    _decode_options(args)
    decoder = CTCDecoder(args.model, device=args.device)
    text = decode_data_dir(decoder, args.data_dir, args.out, batch_size=args.batch_size,
                           beam=args.beam)
    print(f"decoded {args.data_dir} with {decoder.model_file} (beam {args.beam}): {text}")
    return 0


def _transcribe(args: argparse.Namespace) -> int:
    from cvasr.decode import CTCDecoder, transcribe

    _decode_options(args)
    decoder = CTCDecoder(args.model, device=args.device)
    for path, text in zip(args.files, transcribe(decoder, args.files, beam=args.beam)):
        print(f"{path}\t{text}")
    return 0


def _results(args: argparse.Namespace) -> int:
    import yaml

    from cvasr.results import write_results

    conf = yaml.safe_load(args.decode_config.read_text(encoding="utf-8")) if args.decode_config else {}
    options = ", ".join(f"{k}={v}" for k, v in (conf or {}).items()) or "greedy CTC"
    if args.decode_config:
        options += f" (`{args.decode_config}`)"
    print(write_results(args.out, args.exp, args.decode_dirs, options, args.device))
    return 0


def _score(args: argparse.Namespace) -> int:
    from cvasr.normalize import get_normalizer
    from cvasr.scoring import score

    normalize = get_normalizer(args.lang) if args.lang else None
    summary = score(args.ref, args.hyp, args.out, unit=args.unit, utt2spk=args.utt2spk,
                    engine=args.engine, normalize=normalize)
    print(summary.sum_avg_line)
    return 0


def _make_tokens(args: argparse.Namespace) -> int:
    from cvasr.tokens import make_token_list, read_token_list

    path = make_token_list(args.text, args.out, token_type=args.token_type, nbpe=args.nbpe)
    print(f"token list {path}: {len(read_token_list(path))} tokens ({args.token_type})")
    return 0


def _collect_stats(args: argparse.Namespace) -> int:
    from cvasr.training import collect_stats, resolve_config

    resolved = args.out / "train_config.resolved.yaml"
    resolve_config(args.config, args.upstream, args.download_dir, resolved)
    collect_stats(args.dump_dir, args.token_list, resolved, args.out)
    print(f"shape statistics in {args.out}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from cvasr.training import resolve_config, train

    resolved = args.exp_dir / "train_config.resolved.yaml"
    resolve_config(args.config, args.upstream, args.download_dir, resolved)
    train(args.dump_dir, args.token_list, args.stats_dir, resolved, args.exp_dir, ngpu=args.ngpu,
          extra_args=args.espnet_args)
    print(f"trained model in {args.exp_dir}")
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

    p = add("demo-corpus", _demo_corpus,
            "Synthesise the embedded Assamese demo corpus (espeak-ng) in Common Voice 7.0 layout.")
    p.add_argument("--out", type=Path, required=True, help="release folder to write (clips/, *.tsv)")
    p.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default 0)")
    p.add_argument("--size", choices=["small", "full"], default="full",
                   help="small: 46 clips for fast tests; full: 860 clips, 12 speakers (default)")
    p.add_argument("--nj", type=int, default=2, help="parallel synthesis jobs (default 2)")
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
    p.add_argument("--lang", default=None, help="language code, to show published sizes")
    p.add_argument("--version", default=None, help="release version (e.g. 7.0), likewise")

    p = add("extract-release", _extract_release,
            "Unpack a Common Voice tarball (once) and print the language folder it holds.")
    p.add_argument("--tarball", type=Path, required=True, help="e.g. cv-corpus-7.0-2021-07-21-as.tar.gz")
    p.add_argument("--out", type=Path, required=True, help="folder to unpack into")
    p.add_argument("--lang", required=True, help="language code of the release (e.g. as)")

    p = add("check-upstream", _check_upstream,
            "Check that a file is a wav2vec 2.0 checkpoint s3prl can load (s3prl or fairseq format).")
    p.add_argument("path", type=Path)

    p = add("fetch-upstream", _fetch_upstream,
            "Have s3prl download its pretrained checkpoint (e.g. xls_r_300m) and load it once.")
    p.add_argument("--name", default="xls_r_300m", help="s3prl upstream name (default xls_r_300m)")
    p.add_argument("--download-dir", type=Path, required=True, help="s3prl's download folder")

    def add_prep_limits(p: argparse.ArgumentParser) -> None:
        """Options stages 1 and 2 share."""
        p.add_argument("--max-drop", type=float, default=0.05,
                       help="fail if a split loses more than this share to bad input (default 0.05)")
        p.add_argument("--nj", type=int, default=2, help="parallel worker processes (default 2)")
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
    p.add_argument("--min-duration", type=float, default=0.1, help="seconds (default 0.1)")
    p.add_argument("--max-duration", type=float, default=20.0, help="seconds (default 20)")
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
    p.add_argument("--token-type", choices=["char", "bpe"], default="char")
    p.add_argument("--nbpe", type=int, default=150, help="sentencepiece vocabulary (bpe only)")

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
    p.add_argument("--ngpu", type=int, default=0, help="GPUs (0: CPU; >1: DDP on one machine)")
    p.add_argument("espnet_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    def add_decoding(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", type=Path, required=True, help="stage 4's experiment dir")
        p.add_argument("--config", type=Path, default=None,
                       help="decode YAML (beam_size, batch_size), e.g. conf/decode_ctc.yaml")
        p.add_argument("--beam", type=int, default=None,
                       help="1: greedy; more: prefix beam search (default: config, else 1)")
        p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
        p.add_argument("--nj", type=int, default=None,
                       help="CPU threads of the model's forward pass (torch intra-op threads of "
                            "this one process; default: torch's, one per physical core); on GPU "
                            "it makes no difference")

    p = add("decode", _decode,
            "Decode a dumped data dir with a trained model (batched, length-sorted CTC) into "
            "Kaldi-style OUT/text, OUT/score, OUT/token and OUT/token_score (per-token "
            "log-probabilities of the best alignment).")
    add_decoding(p)
    p.add_argument("--data-dir", type=Path, required=True, help="e.g. dump/test")
    p.add_argument("--out", type=Path, required=True, help="decode folder")
    p.add_argument("--batch-size", type=int, default=None, help="default: config, else 8")

    p = add("transcribe", _transcribe,
            "Print the text of audio files (mp3/wav/flac, any rate or channels), one line each: "
            "the file, a tab, the text.")
    add_decoding(p)
    p.add_argument("files", type=Path, nargs="+")

    p = add("results", _results,
            "Write RESULTS.md (ESPnet's |dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err| tables for "
            "WER and CER) from decode dirs holding score_wer/ and score_cer/.")
    p.add_argument("--exp", type=Path, required=True, help="the experiment dir decoded")
    p.add_argument("--decode-dirs", type=Path, nargs="+", required=True)
    p.add_argument("--decode-config", type=Path, default=None, help="its options go in RESULTS.md")
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
    return parser


# Failures a user can fix: one line on stderr, exit status 1, no traceback.
_USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, RuntimeError,
                                                  OSError)


def main(argv: list[str] | None = None) -> int:
    from cvasr.commonvoice import ReleaseError
    from cvasr.prep_report import TooManyDropped
    from cvasr.training import ConfigError

    args = build_parser().parse_args(argv)
    if getattr(args, "espnet_args", None) and args.espnet_args[0] == "--":
        args.espnet_args = args.espnet_args[1:]
    try:
        return args.handler(args)
    except (ReleaseError, TooManyDropped, ConfigError, *_USER_ERRORS) as err:
        print(f"cvasr {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
