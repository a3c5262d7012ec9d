#!/usr/bin/env python3
"""Zero-shot prediction of one variable from the others, the Symile paper's protocol.

For a target tower ``t`` whose input is a d_v-bit vector, the candidates are
all 2^d_v possible values of that vector (not the N test items): each is
embedded with the target tower, each test row's query is the tuple of its
other variables, and the prediction is the candidate with the highest score::

    mip    (Symile):   s[i, k] = sum_d cand_k[d] * prod_{m != t} x_m,i[d]
    cosine (pairwise): s[i, k] = sum_{m != t} cos(x_m,i, cand_k)
    volume (GRAM):     s[i, k] = -V(cand_k, x_m1,i, x_m2,i, ...)

(the library's score rule, ``audiocl.eval.multiway.candidate_scores``; every
tower output is unit-norm, as in training). ``--loss NAME`` picks the score
matching a training loss (``audiocl.eval.multiway.score_for_loss``). ``accuracy = mean_i [argmax_k s[i, k] == index of the true value]``;
ties go to the first candidate (all-zero bits), so a model whose score ignores
the query predicts the constant 0 and scores the frequency of 0 (chance).
Chance is 1 / 2^d_v. The JSON also holds the Bayes-optimal accuracy on the
same test rows for the xor3 process (given a and c: b = a XOR c if c != a, else
the most likely value, 0...0) and the accuracy of predicting the majority value.

    python local/eval_candidates.py --model exp/.../model --arrays data/xor8/seed0/test.npz \
        --targets a h --method mip --out-dir exp/.../eval        # writes eval/a.json, eval/h.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np


def support(d_v: int) -> np.ndarray:
    """All 2^d_v binary vectors, float32 [2^d_v, d_v], in binary counting order."""
    return np.array(list(itertools.product([0, 1], repeat=d_v)), dtype=np.float32)


def value_index(x: np.ndarray) -> np.ndarray:
    """Row index of each binary row of ``x`` [N, d_v] in :func:`support` order."""
    bits = np.rint(x).astype(np.int64)
    if not np.isin(bits, (0, 1)).all() or not np.allclose(x, bits):
        raise ValueError("the target array must hold 0/1 values only")
    weights = 1 << np.arange(x.shape[1] - 1, -1, -1)
    return bits @ weights


def scores(method: str, cand, given: list):
    """[N, C] scores of the N query tuples ``given`` (each [N, d]) against candidates [C, d]."""
    from audiocl.eval.multiway import candidate_scores

    return candidate_scores(method, given, cand)


def bayes_xor3(arrays: dict[str, np.ndarray], target: str) -> float | None:
    """Bayes-optimal accuracy for b given (a, c) under the xor3 process, on these rows."""
    if target != "b" or not {"a", "b", "c", "i"} <= set(arrays):
        return None
    a, b, c = (np.rint(arrays[k]).astype(np.int64) for k in "abc")
    differs = (a != c).any(axis=1)
    pred = np.where(differs[:, None], np.bitwise_xor(a, c), 0)
    return float((pred == b).all(axis=1).mean())


def evaluate(model, model_dir: Path, arrays: dict[str, np.ndarray], arrays_path: Path, target: str, method: str) -> dict:
    """Accuracy of predicting ``target`` among all its possible values (see module docstring)."""
    import torch

    from audiocl.eval.embed import embed_arrays

    if target not in model.towers:
        raise ValueError(f"no tower named {target!r}; towers: {model.tower_names}")
    others = [t for t in model.tower_names if t != target]
    y = arrays[target].reshape(len(arrays[target]), -1)
    d_v = y.shape[1]
    cand_values = support(d_v)
    emb = embed_arrays(model, arrays, towers=others)
    cand = embed_arrays(model, {target: cand_values}, towers=[target])[target]
    s = scores(method, cand, [emb[t] for t in others])
    if not torch.isfinite(s).all():
        raise ValueError("non-finite scores (a NaN in the model?)")
    pred = s.argmax(dim=1).numpy()
    truth = value_index(y)
    correct = pred == truth
    counts = np.bincount(truth, minlength=len(cand_values))
    return {
        "model": str(model_dir),
        "arrays": str(arrays_path),
        "target": target,
        "given": others,
        "method": method,
        "n": int(len(truth)),
        "n_candidates": len(cand_values),
        "accuracy": float(correct.mean()),
        "chance": 1.0 / len(cand_values),
        "majority_accuracy": float(counts.max() / counts.sum()),
        "bayes_accuracy": bayes_xor3(arrays, target),
        "predicted_value_counts": np.bincount(pred, minlength=len(cand_values)).tolist(),
        "logit_scale": float(model.scale().detach()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--arrays", type=Path, required=True, help="test .npz (one array per tower)")
    ap.add_argument("--targets", nargs="+", required=True, help="towers to predict, one at a time (the others are the query)")
    how = ap.add_mutually_exclusive_group(required=True)
    how.add_argument("--method", choices=("mip", "cosine", "volume"))
    how.add_argument("--loss", help="score as this training loss does (symile: mip, gram: volume, others: cosine)")
    ap.add_argument("--out-dir", type=Path, required=True, help="writes <target>.json here")
    args = ap.parse_args(argv)
    import torch

    from audiocl.errors import AudioclError
    from audiocl.eval.multiway import score_for_loss
    from audiocl.models import load_model

    torch.set_num_threads(1)
    try:
        method = args.method or score_for_loss(args.loss)
        model = load_model(args.model)
        with np.load(args.arrays) as z:
            arrays = {k: z[k] for k in z.files}
        results = [evaluate(model, args.model, arrays, args.arrays, t, method) for t in args.targets]
        for res in results:
            res["loss"] = args.loss
    except (AudioclError, ValueError, KeyError, OSError) as err:
        print(f"eval_candidates.py: {err}", file=sys.stderr)
        return 2
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for res in results:
        (args.out_dir / f"{res['target']}.json").write_text(json.dumps(res, indent=1) + "\n")
        print(json.dumps({k: res[k] for k in ("target", "method", "accuracy", "chance")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
