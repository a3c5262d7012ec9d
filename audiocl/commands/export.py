"""``audiocl export webdataset``: a feature store's audio as WebDataset tars."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="format", metavar="FORMAT", required=True)
    wds = sub.add_parser(
        "webdataset",
        help="<key>.flac + <key>.json tars with sizes.json (LAION-CLAP / open_clip layout)",
        description="Write the store's items (audio from the store's waveforms, or decoded "
        "again from the manifest) as WebDataset tars.",
    )
    wds.add_argument("--store", default=None,
                     help="feature store: export only its items, audio from its waveforms if stored")
    wds.add_argument("--manifest", required=True, help="manifest with the items' texts and labels")
    wds.add_argument("--out", required=True, help="folder for the tars (new or empty)")
    wds.add_argument("--samples-per-tar", type=int, default=1000)
    wds.add_argument("--sample-rate", type=int, default=48000)
    wds.add_argument("--text-template", default=None,
                     help='caption for items without texts, from their labels, e.g. "This is a sound of {}."')


def run(args: argparse.Namespace) -> int:
    from audiocl.data.webdataset import export_webdataset

    summary = export_webdataset(
        args.store, args.manifest, args.out, samples_per_tar=args.samples_per_tar,
        sample_rate=args.sample_rate, text_template=args.text_template,
    )
    print(json.dumps(summary))
    return 0
