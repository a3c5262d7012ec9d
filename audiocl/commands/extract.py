"""``audiocl extract``: manifest -> sharded feature store, with a pool of worker
processes or Ray actors (optionally followed by frozen towers' outputs,
:mod:`audiocl.data.tower_features`)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any

from audiocl.errors import AudioclError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", required=True, help="JSONL manifest (.jsonl or .jsonl.gz)")
    parser.add_argument("--preset", default="laion_clap",
                        help="front-end preset: laion_clap or speech16k (default laion_clap)")
    parser.add_argument("--out", required=True, help="store folder (new or empty, or one to --resume)")
    parser.add_argument("--workers", type=int, default=2,
                        help="worker processes (or Ray actors), one CPU each (default 2)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the finished shards of an interrupted run and do the rest")
    parser.add_argument("--address", default=None,
                        help="join this Ray cluster and run the workers there (host:port; default: "
                             "RAY_ADDRESS; without either the workers are local processes)")
    parser.add_argument("--runner", choices=("auto", "processes", "ray"), default="auto",
                        help="where the workers run: auto (default: Ray with --address/RAY_ADDRESS, else "
                             "local processes), processes, or ray (a local Ray instance without an address)")
    parser.add_argument("--shard-size", type=int, default=256, help="items per shard (default 256)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a front-end parameter, e.g. --set n_mels=80 (repeatable; the value is YAML)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--store-waveform", action="store_true",
                      help="also store the resampled waveform (16-bit FLAC) beside the log-mel")
    what.add_argument("--waveform-only", action="store_true",
                      help="store only the resampled waveform (for waveform-input towers)")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                        help="log-mel storage type (default float32: exact)")
    parser.add_argument("--min-duration", type=float, default=None,
                        help="seconds; shorter items fail with reason too_short")
    parser.add_argument("--max-duration", type=float, default=None,
                        help="seconds; longer items fail with reason too_long")
    parser.add_argument("--frozen-tower", dest="frozen_towers", action="append", default=[], metavar="TOWER",
                        help="also write this frozen tower's encoder output per clip into the store, "
                             "computed once (training then skips the encoder); needs --model-config")
    parser.add_argument("--model-config", default=None,
                        help="model config (YAML/JSON) holding the --frozen-tower towers")
    parser.add_argument("--no-progress", "--quiet", dest="no_progress", action="store_true",
                        help="no progress bar or progress lines")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["n_mels=80", "f_max=null"]`` -> ``{"n_mels": 80, "f_max": None}``: the values
    parsed as YAML by :mod:`audiocl.overrides`, as ``audiocl train`` does."""
    from audiocl.overrides import apply_overrides

    return apply_overrides({}, pairs)


def run(args: argparse.Namespace) -> int:
    from audiocl.audio.frontend_config import get_preset  # no torch in the driver
    from audiocl.data.extract import extract, format_summary

    if args.frozen_towers and not args.model_config:
        raise AudioclError("--frozen-tower needs --model-config (the model config holding that tower)")
    cfg = get_preset(args.preset, **parse_overrides(args.overrides))
    kinds = ("waveform",) if args.waveform_only else (
        ("logmel", "waveform") if args.store_waveform else ("logmel",))
    with contextlib.ExitStack() as stack:
        if args.frozen_towers:
            from audiocl.data.shard_pool import one_ray_for_all

            # both steps on one Ray instance, not one each (no-op without Ray)
            stack.enter_context(one_ray_for_all(args.runner, args.address, args.workers))
        summary = extract(
            args.manifest, args.out, cfg,
            workers=args.workers, resume=args.resume, address=args.address, runner=args.runner,
            shard_size=args.shard_size, kinds=kinds, dtype=args.dtype,
            min_duration=args.min_duration, max_duration=args.max_duration,
            # --json keeps stdout for the summary: progress lines go to stderr then
            progress=not args.no_progress, progress_file=sys.stderr if args.json else None,
        )
        if args.frozen_towers:
            from audiocl.data.tower_features import extract_tower_features

            summary["towers"] = [
                extract_tower_features(args.out, args.model_config, t, workers=args.workers,
                                       address=args.address, runner=args.runner,
                                       progress=not args.no_progress,
                                       progress_file=sys.stderr if args.json else None)
                for t in args.frozen_towers
            ]
    print(json.dumps(summary) if args.json else format_summary(summary))
    if args.frozen_towers and not args.json:
        for t in summary["towers"]:
            print(f"tower {t['tower']}: {t['key']}, {t['computed_this_run']} clips "
                  f"({t['cpu_ms_per_clip']:.1f} ms CPU each) in {t['wall_seconds']:.1f} s")
    return 0
