"""``audiocl config keys``: every training config key with its type and default."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="config_command", metavar="WHAT", required=True)
    sub.add_parser("keys", help="dotted key, type, default and description of every training config key")


def run(args: argparse.Namespace) -> int:
    from audiocl.train.config_info import keys_text

    print(keys_text(), end="")
    return 0
