#!/usr/bin/env python3
"""Stage 5 of trimodal_audio: zero-shot multi-way retrieval scored by class (Symile-M3's protocol).

For a target modality ``t``, each test tuple's query is its two other
modalities; the candidates are the ``t`` inputs of ALL test tuples, scored with
audiocl's multi-way similarity (``audiocl.eval.multiway.multiway_scores``:
``mip`` for Symile, ``volume`` for GRAM, summed ``cosine`` for pairwise CLIP;
``--loss NAME`` picks it with ``audiocl.eval.multiway.score_for_loss``).
As in Symile-M3 (predict the image's class from audio and text, the candidates
being all test images), the top candidate counts as right when it has the right
class, which here means the completed triple is valid: text slot ``lang`` names
instrument ``instr`` (for the text target: any text whose slot of the query's
language names the query's instrument). Tied top scores count fractionally.
Chance (a random candidate's accuracy, reported per target) is about 1/5 here,
except for the control task's text target (1/25: only one text fits); a model that uses only pairs
cannot beat it on the ``higher`` task (see data/arrays/structure.json).

Item-level retrieval (the exact clip among N candidates) is what ``audiocl eval
multiway`` reports; with N/5 candidates of the right class for each query, its
R@1 is bounded by about 5/N, so the recipe reports it only as a secondary check.

    python local/evaluate.py --model exp/higher/symile_s0/train/model --method mip \
        --arrays test=data/arrays/higher_test.npz no_speech=data/arrays/higher_test_no_speech.npz \
        --out exp/higher/symile_s0/eval/classlevel.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audiocl.errors import AudioclError

MODALITIES = ("speech", "note", "text")


def valid_candidates(lang: np.ndarray, instr: np.ndarray, slots: np.ndarray, target: str, rows: np.ndarray) -> np.ndarray:
    """``ok [Q, N]``: whether candidate j's ``target`` completes query row i's other two into a valid triple."""
    if target == "note":
        return slots[rows, lang[rows]][:, None] == instr[None, :]
    if target == "speech":
        return slots[rows][:, lang] == instr[rows][:, None]
    return slots[:, lang[rows]].T == instr[rows][:, None]


def class_level_accuracy(
    emb: dict[str, torch.Tensor], lang: np.ndarray, instr: np.ndarray, slots: np.ndarray, target: str, method: str,
    chunk: int = 512,
) -> tuple[float, float]:  # fmt: skip
    """(accuracy, chance): the mean over queries of the fraction of top-scoring candidates
    that complete a valid triple, and of all candidates that do (a random ranking's accuracy)."""
    from audiocl.eval.multiway import multiway_scores

    n = len(lang)
    total = chance = 0.0
    for q0 in range(0, n, chunk):
        rows = np.arange(q0, min(q0 + chunk, n))
        s = multiway_scores(emb, target, method, slice(q0, q0 + len(rows))).double()
        if not torch.isfinite(s).all():
            raise AudioclError(f"non-finite {method} scores for target {target}")
        top = (s == s.max(dim=1, keepdim=True).values).numpy()  # [Q, N] ties at the top
        ok = valid_candidates(lang, instr, slots, target, rows)
        total += float(((top & ok).sum(1) / top.sum(1)).sum())
        chance += float(ok.mean(1).sum())
    return total / n, chance / n


def evaluate(model_dir: str, arrays: dict[str, str], method: str, targets: list[str] | None) -> dict[str, Any]:
    from audiocl.eval.embed import embed_arrays
    from audiocl.models import load_model

    model = load_model(model_dir)
    out: dict[str, Any] = {"eval": "multiway_classlevel", "model": model_dir, "method": method, "sets": {}}
    for name, path in arrays.items():
        d = np.load(path)
        missing = [m for m in MODALITIES if m not in d.files]
        if missing or any(k not in d.files for k in ("lang", "instr", "slots")):
            raise AudioclError(f"{path}: not a trimodal_audio arrays file (needs {MODALITIES}, lang, instr, slots)")
        with torch.no_grad():
            emb = embed_arrays(model, {m: d[m] for m in MODALITIES})
        # a modality missing from every tuple cannot be a target: its candidates are all alike
        gone = [m for m in MODALITIES if np.all(d[m][:, -1] == 1)]
        res = {}
        for t in targets or MODALITIES:
            if t in gone:
                continue
            acc, chance = class_level_accuracy(emb, d["lang"], d["instr"], d["slots"], t, method)
            res[t] = {"accuracy": acc, "chance": chance, "n_items": int(len(d["lang"]))}
        out["sets"][name] = {"path": path, "missing": gone, "targets": res}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    how = ap.add_mutually_exclusive_group(required=True)
    how.add_argument("--method", choices=["mip", "volume", "cosine"])
    how.add_argument("--loss", help="score as this training loss does (symile: mip, gram: volume, others: cosine)")
    ap.add_argument("--arrays", nargs="+", required=True, metavar="NAME=PATH")
    ap.add_argument("--target", action="append", default=None, choices=MODALITIES)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    from audiocl.eval.multiway import score_for_loss

    torch.set_num_threads(1)
    try:
        method = args.method or score_for_loss(args.loss)
        sets = {}
        for a in args.arrays:
            name, sep, path = a.partition("=")
            if not sep:
                raise AudioclError(f"--arrays {a!r}: expected NAME=PATH")
            sets[name] = path
        res = evaluate(args.model, sets, method, args.target)
        if args.loss:
            res["loss"] = args.loss
    except AudioclError as e:
        print(f"evaluate: error: {e}", file=sys.stderr)
        return 2
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    for name, s in res["sets"].items():
        accs = "  ".join(f"{t} {v['accuracy']:.3f} (chance {v['chance']:.3f})" for t, v in s["targets"].items())
        print(f"{name} ({method}): {accs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
