"""``audiocl eval {zeroshot,retrieval,multiway,probe,diagnostics}``: evaluate a model.

Every subcommand writes ``--out`` (JSON) first, then ``<out>.md`` and any
PNGs made from that JSON beside it. Protocols: docs/evaluation.md.
"""

from __future__ import annotations

import argparse


def _model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--model", required=required, help="model folder (config.json, model.safetensors, frontend.json)")
    p.add_argument("--manifest", required=required, help="JSONL manifest of the evaluation items")
    p.add_argument("--store", default=None, help="feature store of the manifest's items (default: decode the audio files)")
    p.add_argument("--split", default=None, help="use only items of this split")
    p.add_argument("--batch-size", type=int, default=16, help="clips per forward pass (>= 1)")


def _group_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--group-by", action="append", default=None, metavar="FIELD",
                   help="also report results per value of this manifest field (speaker, language, split, "
                        "fold, any custom field); repeatable")


def _out_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="results JSON path (Markdown and PNGs go beside it)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or progress lines")


def _emb_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--embeddings", default=None,
                   help=".npz with one [N, d] array per modality (+ optional 'labels', 'fold'), instead of --model/--manifest")
    _model_args(p, required=False)
    p.add_argument("--arrays", default=None,
                   help=".npz of paired tower inputs (as in training's data.arrays), embedded with --model")
    p.add_argument("--inputs", nargs="+", default=None, metavar="TOWER=ARRAY",
                   help="which array each tower reads from --arrays (default: the array named like the tower)")


def _inputs(pairs: list[str] | None) -> dict[str, str] | None:
    from audiocl.errors import AudioclError

    if not pairs:
        return None
    out: dict[str, str] = {}
    for pair in pairs:
        tower, sep, name = pair.partition("=")
        if not sep or not tower or not name:
            raise AudioclError(f"--inputs {pair!r}: expected TOWER=ARRAY, e.g. text=text_slots")
        out[tower] = name
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="eval_command", metavar="EVAL", required=True)

    p = sub.add_parser("zeroshot", help="zero-shot classification from class-name prompts")
    _model_args(p)
    p.add_argument("--prompt", default=None, help='one template with {} for the class name, e.g. "This is a sound of {}."')
    p.add_argument("--prompts-file", default=None, help="templates (JSON list or one a line), averaged as an ensemble")
    p.add_argument("--classes", default=None, help="class list file (one label a line); default: the manifest's labels")
    p.add_argument("--audio-tower", default=None)
    p.add_argument("--text-tower", default=None)
    _group_arg(p)
    _out_arg(p)

    p = sub.add_parser("retrieval", help="text-to-audio / audio-to-text retrieval (LAION multi-caption protocol)")
    _model_args(p)
    p.add_argument("--speech", action="store_true", help="also report CLASP's HITS@1, MRR and meanR")
    p.add_argument("--laion-map-order", action="store_true",
                   help="audio-to-text mAP@10 with captions in caption order, as LAION-CLAP's code does (default: sorted)")
    p.add_argument("--chunk", type=int, default=16384, help="gallery chunk for the chunked top-k")
    p.add_argument("--audio-tower", default=None)
    p.add_argument("--text-tower", default=None)
    _group_arg(p)
    _out_arg(p)

    p = sub.add_parser("multiway", help="predict one modality from the others (MIP, volume or summed cosine)")
    _emb_args(p)
    p.add_argument("--method", choices=["mip", "volume", "cosine"], default=None,
                   help="score (default mip, or the one matching --loss)")
    p.add_argument("--loss", default=None,
                   help="score the way this training loss does (symile: mip, gram: volume, others: cosine)")
    p.add_argument("--target", action="append", default=None, help="target modality (repeatable; default: each)")
    p.add_argument("--towers", nargs="+", default=None, help="modalities to use (default: all)")
    _out_arg(p)

    p = sub.add_parser("probe", help="linear probe (logistic regression, k-fold) on frozen embeddings")
    _emb_args(p)
    p.add_argument("--tower", default=None, help="which embedding to probe (default: the audio/speech tower, or the only array)")
    p.add_argument("--k", type=int, default=5, help="folds when the items carry no 'fold'")
    p.add_argument("--ignore-folds", action="store_true", help="use k stratified folds even if items carry 'fold'")
    p.add_argument("--l2", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    _out_arg(p)

    p = sub.add_parser("speed", help="CPU ms per clip of models' audio side (front-end, tower), side by side")
    p.add_argument("--model", action="append", required=True, metavar="[NAME=]FOLDER",
                   help="a model folder; repeat for several (timed in turn, in this process)")
    p.add_argument("--manifest", required=True, help="JSONL manifest; its first --clips items are timed")
    p.add_argument("--split", default=None, help="use only items of this split")
    p.add_argument("--clips", type=int, default=32, help="clips timed (default 32)")
    p.add_argument("--baseline", default=None, metavar="NAME", help="report each model's times over this one's")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--repeats", type=int, default=3, help="passes over the clips per model; the median is kept")
    _out_arg(p)

    p = sub.add_parser("diagnostics", help="modality gap, alignment, uniformity, 2-D projection plot")
    _emb_args(p)
    p.add_argument("--towers", nargs="+", default=None)
    _out_arg(p)


def _named_models(pairs: list[str]) -> dict[str, str]:
    """``NAME=FOLDER`` or ``FOLDER`` (named by the folder) for ``eval speed --model``."""
    from pathlib import Path

    from audiocl.errors import AudioclError

    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, folder = pair.partition("=")
        if not sep:
            name, folder = Path(pair).name or pair, pair
        if not name or not folder:
            raise AudioclError(f"--model {pair!r}: expected NAME=FOLDER or FOLDER")
        if name in out:
            raise AudioclError(f"--model: the name {name!r} is given twice (use NAME=FOLDER)")
        out[name] = folder
    return out


def _check_sizes(args: argparse.Namespace) -> None:
    from audiocl.errors import AudioclError

    for opt in ("batch_size", "chunk", "clips", "threads", "repeats"):
        v = getattr(args, opt, None)
        if v is not None and v < 1:
            raise AudioclError(f"--{opt.replace('_', '-')} must be >= 1, got {v}")


def run(args: argparse.Namespace) -> int:
    from audiocl.eval.report import write_results
    from audiocl.progress import quiet_library_bars, set_quiet

    _check_sizes(args)
    if args.quiet:
        set_quiet()
    quiet_library_bars()  # no "Loading weights" bar in a log file
    cmd = args.eval_command
    if cmd in ("zeroshot", "retrieval") and args.group_by:
        # a results table per group is only readable with a name per group
        args.group_by = list(dict.fromkeys(args.group_by))
    if cmd == "zeroshot":
        from audiocl.eval.zeroshot import run_zeroshot

        res, _ = run_zeroshot(
            args.model, args.manifest, store=args.store, prompt=args.prompt, prompts_file=args.prompts_file,
            classes_file=args.classes, split=args.split, audio_tower=args.audio_tower,
            text_tower=args.text_tower, batch_size=args.batch_size, group_by=args.group_by,
        )
        summary = f"top1 {res['top1']:.4f}  top5 {res['top5']:.4f}  ({res['n_items']} items, {res['n_classes']} classes)"
    elif cmd == "retrieval":
        from audiocl.eval.retrieval import run_retrieval

        res = run_retrieval(
            args.model, args.manifest, store=args.store, split=args.split, speech=args.speech,
            a2t_map_sorted=not args.laion_map_order, audio_tower=args.audio_tower,
            text_tower=args.text_tower, batch_size=args.batch_size, chunk=args.chunk, group_by=args.group_by,
        )
        ta, at = res["text_to_audio"], res["audio_to_text"]
        summary = (f"t2a R@1 {ta['R@1']:.4f} R@10 {ta['R@10']:.4f} mAP@10 {ta['mAP@10']:.4f} | "
                   f"a2t R@1 {at['R@1']:.4f} R@10 {at['R@10']:.4f} mAP@10 {at['mAP@10']:.4f}")
    elif cmd == "multiway":
        from audiocl.eval.embed import gather_embeddings
        from audiocl.eval.multiway import multiway

        if args.method is not None and args.loss is not None:
            from audiocl.errors import AudioclError

            raise AudioclError("give --method or --loss, not both")
        if args.loss is not None:
            from audiocl.eval.multiway import score_for_loss

            score_for_loss(args.loss)  # an unknown loss is refused before anything is embedded
        emb, _, _, meta = gather_embeddings(
            embeddings=args.embeddings, model_dir=args.model, manifest=args.manifest, store=args.store,
            split=args.split, towers=args.towers, batch_size=args.batch_size,
            arrays=args.arrays, inputs=_inputs(args.inputs),
        )
        res = {**multiway(embeddings=emb, method=args.method, loss=args.loss, targets=args.target), **meta}
        if args.loss is not None:
            res["loss"] = args.loss
        summary = f"{res['method']}: mean accuracy {res['accuracy_mean']:.4f} over targets {list(res['targets'])}"
    elif cmd == "probe":
        from audiocl.eval.probe import run_probe

        res = run_probe(
            embeddings=args.embeddings, model_dir=args.model, manifest=args.manifest, store=args.store,
            split=args.split, tower=args.tower, k=args.k, use_folds=not args.ignore_folds, l2=args.l2,
            seed=args.seed, batch_size=args.batch_size, arrays=args.arrays, inputs=_inputs(args.inputs),
        )
        summary = f"accuracy {res['accuracy_mean']:.4f} +- {res['accuracy_std']:.4f} over {res['k']} folds"
    elif cmd == "diagnostics":
        from audiocl.eval.diagnostics import diagnostics
        from audiocl.eval.embed import gather_embeddings

        emb, labels, _, meta = gather_embeddings(
            embeddings=args.embeddings, model_dir=args.model, manifest=args.manifest, store=args.store,
            split=args.split, towers=args.towers, batch_size=args.batch_size,
            arrays=args.arrays, inputs=_inputs(args.inputs),
        )
        res = {**diagnostics(emb, labels), **meta}
        summary = "; ".join(f"{k}: gap {v['gap']:.4f} alignment {v['alignment']:.4f}" for k, v in res["pairs"].items())
    elif cmd == "speed":
        from audiocl.eval.speed import run_speed

        res = run_speed(_named_models(args.model), args.manifest, clips=args.clips, split=args.split,
                        baseline=args.baseline, threads=args.threads, repeats=args.repeats)  # fmt: skip
        summary = "; ".join(
            f"{name}: {r['total_ms']:.2f} ms a clip (front-end {r['frontend_ms']:.2f}, tower {r['tower_ms']:.2f})"
            + (f", {r['ratio_total']:.3f}x {args.baseline}" if args.baseline else "")
            for name, r in res["models"].items()
        )
    else:  # argparse's choices make this unreachable
        raise AssertionError(cmd)
    json_path, md_path = write_results(res, args.out)
    print(summary)
    print(f"wrote {json_path} and {md_path}")
    return 0
