"""``audiocl export webdataset|lhotse|hf``: a corpus as WebDataset tars, lhotse manifests or
a Hugging Face dataset folder."""

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
    lh = sub.add_parser(
        "lhotse",
        help="lhotse manifests: cuts.jsonl.gz, or recordings.jsonl.gz + supervisions.jsonl.gz",
        description="Write a manifest's items as lhotse manifests pointing at the same files "
        "(no audio is copied); audiocl prepare lhotse reads them back.",
    )
    lh.add_argument("--manifest", required=True, help="the audiocl manifest")
    lh.add_argument("--out", required=True, help="folder for the lhotse manifests")
    lh.add_argument("--format", dest="format_", choices=("cuts", "recordings"), default="cuts",
                    help="a CutSet (default), or a RecordingSet + SupervisionSet")
    hf = sub.add_parser(
        "hf",
        help="a Hugging Face save_to_disk folder with an Audio column (audio embedded)",
        description="Write a manifest's items as a datasets.DatasetDict (one split per manifest "
        "split) with the audio bytes embedded; audiocl prepare hf reads it back.",
    )
    hf.add_argument("--manifest", required=True, help="the audiocl manifest")
    hf.add_argument("--out", required=True, help="folder to create (new or empty)")


def run(args: argparse.Namespace) -> int:
    if args.format == "hf":
        from audiocl.data.hf_export import export_hf

        print(json.dumps(export_hf(args.manifest, args.out)))
        return 0
    if args.format == "lhotse":
        from audiocl.data.lhotse_export import export_lhotse

        print(json.dumps(export_lhotse(args.manifest, args.out, format=args.format_)))
        return 0
    from audiocl.data.webdataset import export_webdataset

    summary = export_webdataset(
        args.store, args.manifest, args.out, samples_per_tar=args.samples_per_tar,
        sample_rate=args.sample_rate, text_template=args.text_template,
    )
    print(json.dumps(summary))
    return 0
