"""``audiocl report EXP [EXP ...]``: several experiments side by side in one Markdown table.

An EXP is a results JSON file or a folder searched for results JSON files
(those with an ``"eval"`` key, as ``audiocl eval`` writes them).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiments", nargs="+", metavar="EXP", help="results JSON files or experiment folders")
    parser.add_argument("--names", nargs="+", default=None, help="column names (default: folder/file names)")
    parser.add_argument("--out", default=None, help="write the Markdown table here instead of printing it")
    parser.add_argument("--render", action="store_true",
                        help="also (re)make each results file's Markdown and PNGs from its JSON")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from audiocl.eval.report import compare_experiments, find_results, render_from_json

    if args.render:
        for exp in args.experiments:
            for f in find_results(exp):
                render_from_json(f)
    table = compare_experiments(args.experiments, args.names)
    if args.out:
        from audiocl.errors import AudioclError
        from audiocl.fsutil import atomic_write_text

        try:  # temporary file + rename: a full disk leaves the previous table, not half of one
            atomic_write_text(Path(args.out), table)
        except OSError as e:
            raise AudioclError(f"cannot write {args.out}: {e.strerror or e}") from None
        print(f"wrote {args.out}")
    else:
        print(table, end="")
    return 0
