"""The ``audiocl`` command line: one subcommand per stage of the data flow.

Subcommands live in ``audiocl/commands/<name>.py``; each module defines
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only
when their subcommand runs, so ``audiocl --help`` does not import torch or Ray.
The command modules hold no logic of their own: they parse arguments and call
the library.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys

from audiocl import __version__
from audiocl.errors import AudioclError

# name -> (module under audiocl.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("prepare", "turn a dataset on disk into a JSONL manifest"),
    "extract": ("extract", "extract features from a manifest into a sharded store (Ray)"),
    "info": ("info", "counts, durations and histograms of a manifest or feature store"),
    "export": ("export", "export a corpus to WebDataset tars, lhotse manifests or a Hugging Face dataset"),
    "train": ("train", "train a multi-tower contrastive model from a YAML config"),
    "eval": ("eval", "zero-shot classification, retrieval, multi-way retrieval, probes"),
    "report": ("report", "put several experiments side by side in one Markdown table"),
    "convert": ("convert", "convert LAION-CLAP / Hugging Face checkpoints"),
    "config": ("config", "list the training config keys (types, defaults)"),
}


def _available() -> dict[str, tuple[str, str]]:
    out = {}
    for name, (module, helptext) in COMMANDS.items():
        if importlib.util.find_spec(f"audiocl.commands.{module}") is not None:
            out[name] = (module, helptext)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="audiocl",
        description="Contrastive learning on audio and paired modalities.",
    )
    parser.add_argument("--version", action="version", version=f"audiocl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, helptext) in _available().items():
        sub.add_parser(name, help=helptext, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = _available()
    parser = build_parser()
    if not argv or argv[0] not in commands:
        # let argparse print help / the "invalid choice" message
        parser.parse_args(argv or ["--help"])
        return 2
    name = argv[0]
    module = importlib.import_module(f"audiocl.commands.{commands[name][0]}")
    sub = argparse.ArgumentParser(prog=f"audiocl {name}", description=commands[name][1])
    module.add_arguments(sub)
    args = sub.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except AudioclError as err:
        print(f"audiocl {name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"audiocl {name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `audiocl info M | head` closes the pipe early: not an error.
        # Point stdout at devnull so the interpreter's final flush stays quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
