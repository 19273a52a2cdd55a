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
    return parser


# Failures a user can fix: one line on stderr, exit status 1, no traceback.
_USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, RuntimeError,
                                                  OSError)


def main(argv: list[str] | None = None) -> int:
    from cvasr.commonvoice import ReleaseError

    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ReleaseError, *_USER_ERRORS) as err:
        print(f"cvasr {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
