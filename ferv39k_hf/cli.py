"""The ``ferv39k-hf`` command: sample, build, verify, push, score.

Each subcommand parses its options here and hands them to the module that
does the work; heavy modules are imported only when their subcommand runs.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from typing import Callable, List, Optional

from ferv39k_hf.archive.lists import add_list_options
from ferv39k_hf.archive.listwriter import add_lists_command
from ferv39k_hf.dfer_taxonomy import DATASETS, all_label_orders
from ferv39k_hf.dfer_taxonomy import FACTS as DFER_FACTS
from ferv39k_hf.errors import Ferv39kError
from ferv39k_hf.taxonomy import CONFIG_NAMES, LABEL_ORDERS, OFFICIAL_TOTAL

_DESCRIPTION = """\
Turn a hand-downloaded FERV39k archive into Hugging Face datasets.

  ferv39k-hf sample demo/                    write a small synthetic archive of the real layout
  ferv39k-hf verify /data/FERV39k            check an archive before building
  ferv39k-hf build /data/FERV39k --out ferv39k
  python -c 'import datasets; print(datasets.load_dataset("ferv39k"))'
  ferv39k-hf push ferv39k --repo-id ORG/NAME private copy for your own organization only
  ferv39k-hf score preds.csv --dataset ferv39k  WAR/UAR with intervals; --compare other.csv
  ferv39k-hf lists /data/FERV39k --format dfer-clip --prefix /data/FERV39k/2_ClipsforFaceCrop --out annotation
                                             DFER-CLIP, MAE-DFER, S2D or official lists of the checked clips

FERV39k may not be redistributed: never publish the archive or a built copy of it.

A failure ends with one line, "ferv39k-hf COMMAND: error: ...", and a nonzero exit status;
--debug (or FERV39K_HF_DEBUG=1 in the environment) shows the traceback instead.
"""

DEBUG_ENV = "FERV39K_HF_DEBUG"


def _parts(text: str) -> List[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(CONFIG_NAMES))
    if unknown or not parts:
        raise argparse.ArgumentTypeError(f"parts must be a comma list of {','.join(CONFIG_NAMES)}; got {text!r}")
    return parts


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample",
        help="write a synthetic archive with FERV39k's layout (for demos and tests)",
        description="Write a synthetic, FERV39k-shaped archive: the real folders, split files and naming, "
        "with face-like drawings whose expression carries a learnable class signal. "
        "It contains no FERV39k data.",
    )
    p.add_argument("out", help="folder to write the archive into (created; must be empty or absent)")
    p.add_argument("--scale", type=float, default=None,
                   help="fraction of the official clip counts per (split, scene, class) cell; 1.0 reproduces "
                        "the official counts and frames-per-clip distribution. Default: a few hundred clips, "
                        "every cell at least one")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same bytes (default 0)")
    p.add_argument("--parts", type=_parts, default=list(CONFIG_NAMES),
                   help=f"comma list of parts to write: {','.join(CONFIG_NAMES)} (default: all three)")
    p.add_argument("--zip", action="store_true",
                   help="pack the parts as a drive download arrives: zip files inside export folders")
    p.add_argument("--dataset", choices=DATASETS, default="ferv39k",
                   help="the archive's shape: ferv39k (default), dfew or mafw (a few dozen small clips with the "
                        "folds, label files and variants of docs/dfew-mafw.md; --scale does not apply)")


def _add_build(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build",
        help="build a Hub-ready Parquet dataset folder from an archive",
        description="Read an archive (folders or zips, any nesting) and write DIR: Parquet shards under data/ "
        "and a README.md dataset card, so that datasets.load_dataset(DIR) returns every clip.",
    )
    p.add_argument("root", help="the archive root as downloaded: folders, zips or drive export folders")
    p.add_argument("--out", required=True, help="the dataset folder to write")
    _add_dataset_options(p)
    p.add_argument("--validation-fraction", type=_fraction, default=0.0,
                   help="carve a seeded validation split out of train, stratified by scene and class "
                        "(default 0: only the official train and test)")
    p.add_argument("--seed", type=int, default=0, help="seed of the validation carve-out (default 0)")
    p.add_argument("--num-proc", type=int, default=1, help="worker processes (output is identical for any value)")
    p.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                   help="raise: stop at the first damaged clip (default); skip: build the sound clips and list "
                        "every other split-file line in DIR/build_report.json")
    p.add_argument("--frames", choices=["copy", "reference"], default="copy",
                   help="copy: store the archive's JPEG bytes (portable, default); reference: store only paths "
                        "to the frames of an unpacked archive (saves disk; not portable, never push it)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace DIR if an earlier 'ferv39k-hf build' made it and it holds nothing else (its marker "
                        ".ferv39k-hf-build.json lists every file); any other DIR is refused, as is a DIR that is, "
                        "holds or lies inside the archive")
    add_list_options(p)


def _add_dataset_options(p: argparse.ArgumentParser) -> None:
    """--dataset, and --config and --label-order with every dataset's choices (DFEW and MAFW: docs/dfew-mafw.md)."""
    p.add_argument("--dataset", choices=DATASETS, default=None,
                   help="read the archive as ferv39k, dfew or mafw (default: told from its folder and file names)")
    configs = sorted(set(CONFIG_NAMES) | {c for f in DFER_FACTS.values() for c in f.configs})
    p.add_argument("--config", choices=configs, default=None,
                   help="FERV39k: faces (face-crop frames, default), scenes, videos (mp4). DFEW: clip_224x224 "
                        "(default), clip_224x224_16f, videos. MAFW: single (11 classes, default), compound "
                        "(multi-label), videos")
    orders = sorted(set(LABEL_ORDERS) | set(all_label_orders()))
    p.add_argument("--label-order", choices=orders, default=None,
                   help="class index order. FERV39k: alphabetical (default, Angry=0) or dfew (Happy=0). DFEW: dfew "
                        "(default: the official 1..7 minus 1) or alphabetical. MAFW: mae-dfer (default), s2d "
                        "(alphabetical) or dfer-clip")


def _add_verify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify",
        help="check an archive and report every problem by clip and file",
        description="Check an archive before building: missing or empty clips, damaged JPEGs, unlisted "
        "folders, label/path disagreements, duplicates, unsafe zip entries and the official counts. "
        "Exit status 0 only when nothing is wrong.",
    )
    p.add_argument("root", help="the archive root")
    _add_dataset_options(p)
    p.add_argument("--deep", action="store_true", help="fully decode every frame (slow) instead of the marker check")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="draw clips per scene and class against the official counts")
    p.add_argument("--official", choices=["auto", "yes", "no"], default="auto",
                   help="compare the counts per split, scene and class with the official ones: yes, no, or auto "
                        f"(default: when the split files list at least half of the official {OFFICIAL_TOTAL:,} clips)")
    add_list_options(p)


def _add_push(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "push",
        help="upload a built folder to a PRIVATE dataset repo of your organization",
        description="Upload a folder made by 'build' to a private dataset repository for internal use. "
        "FERV39k's terms forbid redistribution: public repositories are refused.",
    )
    p.add_argument("dir", help="a folder made by 'ferv39k-hf build'")
    p.add_argument("--repo-id", required=True, help="ORG/NAME of the private dataset repository")
    p.add_argument("--token", default=None, help="Hub token (default: the logged-in token; never printed)")
    p.add_argument("--revision", default=None, help="branch to push to")


def _add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="score a predictions file (WAR, UAR, intervals) or compare two, against a built split",
        description="Score PRED, a CSV or JSON Lines file of clip_id and prediction (a class word, or an id with "
        "--label-order; optionally the 7 probability columns p_Angry .. p_Surprise), against a split of a folder "
        "made by 'ferv39k-hf build': WAR and UAR with 95% bootstrap intervals, per-class recall, per-scene and "
        "per-scenario figures, and the published results with this file ranked among them (not on a synthetic "
        "sample). Clips of the folder's other splits are ignored and counted. With --compare B, the paired "
        "differences A - B, their intervals and p-values, and McNemar's exact test. See docs/scoring.md.",
    )
    p.add_argument("predictions", metavar="PRED", nargs="+",
                   help="predictions file (.csv with a header, or JSON Lines); for a DFEW or MAFW folder, five files, "
                        "one per fold in order 1..5 (the 5-fold mean ± std; docs/dfew-mafw.md)")
    p.add_argument("--dataset", required=True, metavar="DIR", help="a folder made by 'ferv39k-hf build'")
    p.add_argument("--split", default="test", help="the split to score against (default test)")
    p.add_argument("--compare", metavar="B", help="a second predictions file: compare PRED (A) with it (B), paired")
    p.add_argument("--label-order", choices=sorted(set(LABEL_ORDERS) | set(all_label_orders())), default=None,
                   help="what integer predictions mean: alphabetical (Angry=0) or dfew (Happy=0); for MAFW "
                        "mae-dfer, s2d or dfer-clip; required when "
                        "the file holds ids, not needed for class words")
    p.add_argument("--allow-partial", action="store_true",
                   help="score the clips that have a prediction and say how many are missing (default: a file "
                        "that misses clips of the split, or names clips in no split, is an error listing them)")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.add_argument("--full", action="store_true",
                   help="with --compare: also per-class recall, both files' full reports and the published table")
    p.add_argument("--plot", metavar="FILE.png", help="draw per-class recall and per-scene WAR (needs matplotlib)")
    p.add_argument("--rank-by", choices=["war", "uar"], default="war",
                   help="rank the published results by WAR (default) or UAR")
    p.add_argument("--resamples", type=int, default=10_000,
                   help="bootstrap resamples (and permutations for --compare); default 10000")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and permutations (default 0)")


def _debug_option(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("--debug", action="store_true", default=default,
                        help=f"on failure show the full traceback, not one line (also: {DEBUG_ENV}=1)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ferv39k-hf", description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _debug_option(parser, False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in (_add_sample, _add_build, _add_verify, _add_push, _add_score, add_lists_command):
        add(sub)
    for command in sub.choices.values():
        # before or after the command name; SUPPRESS keeps a --debug given before it
        _debug_option(command, argparse.SUPPRESS)
    return parser


_MAX_LINE = 2000  # messages quote long input by its start; this bounds any that does not


def _one_line(text: str) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= _MAX_LINE else f"{line[:_MAX_LINE]}... (message cut at {_MAX_LINE} characters)"


def describe_failure(err: BaseException) -> str:
    """The one line a failure is reported with: the package's own message, or what went wrong and where."""
    if isinstance(err, Ferv39kError):
        return _one_line(err)
    if isinstance(err, OSError):
        where = " -> ".join(str(name) for name in (err.filename, err.filename2) if name is not None)
        reason = err.strerror or _one_line(err) or type(err).__name__
        if err.errno == errno.ENOSPC:
            reason += " (free some space where the output goes, or choose another place)"
        return f"{where}: {reason}" if where else _one_line(reason)
    if isinstance(err, MemoryError):
        return "out of memory"
    detail = _one_line(err)
    return (f"unexpected {type(err).__name__}{': ' + detail if detail else ''} "
            "(run with --debug for the traceback; if it looks like a bug in ferv39k-hf, please report it)")


def exit_on_package_error(main: Callable[[], object], prog: str) -> None:
    """Run a script's ``main`` (the examples): a ferv39k-hf error (a missing card, storage that gave up, a short
    shard) ends it in one line on stderr and exit status 1; ``FERV39K_HF_DEBUG=1`` shows the traceback instead."""
    try:
        main()
    except Ferv39kError as err:
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        print(f"{prog}: error: {describe_failure(err)} (FERV39K_HF_DEBUG=1 for the traceback)", file=sys.stderr)
        sys.exit(1)


def _run(args: argparse.Namespace) -> int:
    if args.command == "sample" and args.dataset != "ferv39k":
        from ferv39k_hf.synthetic_dfer import run_dfer_sample

        return run_dfer_sample(args)
    if args.command == "sample":
        from ferv39k_hf.synthetic import run_sample_command

        return run_sample_command(args)
    if args.command == "build":
        from ferv39k_hf.dataset.export import run_build_command

        return run_build_command(args)
    if args.command == "verify":
        from ferv39k_hf.archive.dfer_verify import run_dfer_verify
        from ferv39k_hf.archive.verify import run_verify_command

        dfer = run_dfer_verify(args)  # DFEW/MAFW (told from the archive or --dataset); None for FERV39k
        if dfer is not None:
            return dfer
        args.config = args.config or CONFIG_NAMES[0]
        return run_verify_command(args)
    if args.command == "lists":
        from ferv39k_hf.archive.dfer_lists import run_dfer_lists
        from ferv39k_hf.archive.listwriter import run_lists_command

        dfer = run_dfer_lists(args)  # DFEW/MAFW: every fold's lists; None for FERV39k
        if dfer is not None:
            return dfer
        if not args.out:
            raise Ferv39kError("--out is required: the folder to write the two lists into")

        return run_lists_command(args)
    if args.command == "push":
        from ferv39k_hf.dataset.hub import run_push_command

        return run_push_command(args)
    if args.command == "score":
        from ferv39k_hf.metrics.folds import run_fold_score
        from ferv39k_hf.metrics.report import run_score_command

        folds = run_fold_score(args)  # a DFEW/MAFW folder: one file per fold; None for FERV39k
        if folds is not None:
            return folds
        if len(args.predictions) != 1:
            raise Ferv39kError(f"{args.dataset} is a FERV39k build: give one predictions file, not "
                               f"{len(args.predictions)} (five, one per fold, are for DFEW and MAFW)")
        args.predictions = args.predictions[0]
        return run_score_command(args)
    raise AssertionError(args.command)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        return _run(args)
    except KeyboardInterrupt:
        print(f"ferv39k-hf {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 -- every failure ends in one line unless --debug
        if debug:
            raise
        print(f"ferv39k-hf {args.command}: error: {describe_failure(err)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
