"""``audiocl info PATH``: counts, durations and histograms of a manifest or feature store."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path",
        help="a manifest (.jsonl / .jsonl.gz), a feature store folder, or a corpus read in place: "
        "WebDataset tars (folder, tar or pattern), a Hugging Face save_to_disk folder or "
        "parquet/arrow files, a lhotse cuts or recordings manifest",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--top", type=int, default=20, help="labels to list (default 20)")
    parser.add_argument("--verify", action="store_true",
                        help="feature store: re-hash every file against its shard marker "
                        "(reads the whole store; the cheap checks run on every open)")


def _lines(d: Any, indent: int = 0) -> list[str]:
    pad = "  " * indent
    out: list[str] = []
    for key, value in d.items():
        if isinstance(value, dict) and value:
            out.append(f"{pad}{key}:")
            out.extend(_lines(value, indent + 1))
        elif isinstance(value, float):
            out.append(f"{pad}{key}: {value:.4g}")
        else:
            out.append(f"{pad}{key}: {value}")
    return out


def run(args: argparse.Namespace) -> int:
    from audiocl.errors import AudioclError

    if args.top < 0:
        raise AudioclError("--top must be >= 0")
    from audiocl.data.importers import detect_source

    source = None if os.path.isfile(os.path.join(args.path, "features.json")) else detect_source(args.path)
    if source is not None:
        if args.verify:
            raise AudioclError(f"--verify checks a feature store; {args.path} is a {source} corpus")
        from audiocl.data.importers import prepare
        from audiocl.data.manifest import format_manifest_summary, summarize_items

        # the importer's items, read in place (nothing written): what prepare would list
        summary = summarize_items(prepare(source, args.path), args.path, top=args.top, kind=source)
        text = format_manifest_summary(summary)
    elif os.path.isdir(args.path):
        try:
            from audiocl.data.store import summarize_store
        except ImportError as err:
            raise AudioclError(f"{args.path} is a folder, and the store summary is unavailable ({err})") from None
        summary = summarize_store(args.path, verify=args.verify)
        text = "\n".join(_lines(summary))
    else:
        if args.verify:
            raise AudioclError(f"--verify checks a feature store; {args.path} is not a folder")
        from audiocl.data.manifest import format_manifest_summary, summarize_manifest

        summary = summarize_manifest(args.path, top=args.top)
        text = format_manifest_summary(summary)
    print(json.dumps(summary, indent=2, default=str) if args.json else text)
    return 0
