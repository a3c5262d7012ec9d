"""``audiocl prepare <dataset> --root DIR --out FILE``: a dataset on disk to a manifest."""

from __future__ import annotations

import argparse
import sys

_DATASETS = "esc50, fsdd, urbansound8k, audiocaps, clotho, folder, webdataset, hf, lhotse"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help=f"dataset name: {_DATASETS}")
    parser.add_argument(
        "--root", default=None,
        help="the dataset's folder, in its published layout (webdataset: a folder, tar or "
        "pattern of tars; hf: a save_to_disk folder or parquet/arrow files; lhotse: a cuts manifest)",
    )
    parser.add_argument("--out", required=True, help="manifest to write (.jsonl or .jsonl.gz)")
    parser.add_argument(
        "--no-probe", action="store_true",
        help="do not read file headers (sampling_rate, num_samples, duration, channels stay empty)",
    )
    parser.add_argument(
        "--on-missing", choices=("error", "skip"), default=None,
        help="metadata rows whose audio file is absent: fail, or skip and report "
        "(default: error; skip for audiocaps)",
    )
    parser.add_argument(
        "--relative-paths", action="store_true",
        help="write audio paths under the manifest's folder relative to it",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    g = parser.add_argument_group("audiocaps / clotho")
    g.add_argument("--splits", help="comma-separated splits to import (default: all present)")
    g.add_argument("--audio-dir", help="folder holding the audio (default: --root)")
    g.add_argument(
        "--filename-pattern",
        help="audiocaps: audio path under --audio-dir, with {split} {youtube_id} "
        "{start_time} {audiocap_id}, e.g. '{split}/{youtube_id}.wav'",
    )
    g = parser.add_argument_group("folder")
    g.add_argument("--captions", help="sidecar captions.csv (file,caption) or captions.json")
    g.add_argument("--labels-from", choices=("auto", "dirs", "none"), help="labels from folder names")
    g.add_argument("--extensions", help="comma-separated sound file extensions (default wav,flac,ogg,mp3)")
    g.add_argument("--name", help="dataset name used in ids and as source (default: folder)")
    g.add_argument("--license", help="licence of the files, recorded on every item")
    g.add_argument("--split", help="split recorded on every item")
    g.add_argument("--language", help="language recorded on every item")
    g = parser.add_argument_group("hf")
    g.add_argument("--audio-column", help="the Audio column (default: audio, or the only Audio column)")
    g.add_argument("--text-column", help="captions/transcripts (default: text when present)")
    g.add_argument("--label-column", help="labels, e.g. a ClassLabel (default: label when present)")
    g.add_argument("--id-column", help="item ids (default: id when present)")
    g = parser.add_argument_group("lhotse")
    g.add_argument("--recordings", help="a RecordingSet manifest (instead of --root CUTS)")
    g.add_argument("--supervisions", help="the SupervisionSet for --recordings")


_OPTIONAL = (
    "on_missing", "splits", "audio_dir", "filename_pattern", "captions", "labels_from",
    "extensions", "name", "license", "split", "language",
    "audio_column", "text_column", "label_column", "id_column", "recordings", "supervisions",
)


def run(args: argparse.Namespace) -> int:
    from audiocl.data.importers import prepare_manifest
    from audiocl.errors import AudioclError

    if args.root is None and not (args.dataset == "lhotse" and args.recordings):
        raise AudioclError("--root is required" + (" (or --recordings)" if args.dataset == "lhotse" else ""))
    kw = {k: getattr(args, k) for k in _OPTIONAL if getattr(args, k) is not None}
    if args.no_probe:
        kw["probe"] = False
    bar = None
    progress = None
    if not args.quiet and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(desc=f"prepare {args.dataset}", unit=" items", file=sys.stderr, mininterval=0.5)

        def progress(n: int) -> None:
            bar.update(1)

    try:
        stats = prepare_manifest(
            args.dataset, args.root, args.out,
            relative_paths=args.relative_paths, progress=progress, **kw,
        )
    finally:
        if bar is not None:
            bar.close()
    print(f"wrote {stats.items} items to {args.out}")
    if stats.missing:
        print(f"missing audio: {stats.missing} skipped (e.g. {stats.missing_examples[0]})")
    if stats.unprobed:
        print(
            f"unreadable headers: {stats.unprobed} listed without duration "
            f"(e.g. {stats.unprobed_examples[0]})"
        )
    for note in stats.notes:
        print(f"note: {note}")
    return 0
