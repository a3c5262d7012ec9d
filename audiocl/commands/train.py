"""``audiocl train --config FILE [key=value ...]``: train a multi-tower model.

``--print-config`` prints the resolved config (YAML) and exits; the keys
are listed by ``audiocl config keys``.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="training config (YAML)")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value",
        help="override config values by dotted path, e.g. optim.lr=1e-3 data.batch_size=64 "
             "(values are YAML)",
    )  # fmt: skip
    parser.add_argument(
        "--set", dest="set_overrides", action="append", default=[], metavar="key=value",
        help="the same override as a positional key=value (repeatable), as `audiocl extract --set`",
    )  # fmt: skip
    parser.add_argument(
        "--resume", action="store_true",
        help="continue from the latest complete checkpoint in train.output_dir",
    )  # fmt: skip
    parser.add_argument(
        "--overwrite", action="store_true",
        help="replace the previous run in train.output_dir (its checkpoints, model and logs)",
    )  # fmt: skip
    parser.add_argument(
        "--force", action="store_true",
        help="with --resume: continue even though the config differs from the checkpoint's",
    )  # fmt: skip
    parser.add_argument("--workers", type=int, help="Ray Train workers (sets distributed.workers)")
    parser.add_argument("--gpus", type=int, help="GPUs per worker (sets distributed.gpus)")
    parser.add_argument("--address", help="Ray cluster to join (sets distributed.address)")
    parser.add_argument("--output", help="output folder (sets train.output_dir)")
    parser.add_argument(
        "--print-config", action="store_true",
        help="print the resolved config (file + overrides + defaults, paths absolute) as YAML and exit; "
             "the output is a valid --config for the same run",
    )  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress bar or progress lines")
    parser.epilog = "every config key, with its type and default: audiocl config keys"


def run(args: argparse.Namespace) -> int:
    from audiocl.errors import AudioclError
    from audiocl.train.config import load_config

    if args.force and not args.resume:
        raise AudioclError("--force only applies with --resume")

    overrides = [*args.overrides, *args.set_overrides]
    for flag, key in (("workers", "distributed.workers"), ("gpus", "distributed.gpus"),
                      ("address", "distributed.address"), ("output", "train.output_dir")):  # fmt: skip
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    cfg = load_config(args.config, overrides)
    if args.print_config:
        from audiocl.train.config_info import resolved_yaml

        print(resolved_yaml(cfg), end="")
        return 0
    if args.quiet:
        from audiocl.progress import set_quiet

        set_quiet()
    from audiocl.train.trackers import check_available

    check_available(cfg.train.loggers)
    print(f"audiocl train: outputs go to {cfg.train.output_dir} (model folder: {cfg.train.output_dir}/model)", flush=True)
    if cfg.distributed.workers > 1 or cfg.distributed.address:
        from audiocl.train.distributed import train_distributed

        summary = train_distributed(cfg, resume=args.resume, overwrite=args.overwrite, force=args.force)
    else:
        from audiocl.train.run import train

        summary = train(cfg, resume=args.resume, overwrite=args.overwrite, force=args.force)
    print(json.dumps(summary))
    return 0
