#!/usr/bin/env python3
"""Data of the Symile paper's binary XOR experiments, as paired ``.npz`` arrays.

Two generating processes (Saporta et al., NeurIPS 2024; the authors' repository
rajesh-lab/symile, ``examples/binary_xor.py`` and ``experiments/datasets.py``):

``xor8`` (the repository's example): seven independent bits and their parity::

    a, b, c, d, e, f, g ~ Bernoulli(0.5),   h = a XOR b XOR ... XOR g

so every one of the eight bits is the XOR of the other seven and any seven are
independent: no pair (or set of up to 7) of variables carries information about
any other. Arrays ``a`` .. ``h``, each float32 [N, 1].

``xor3`` (the Section 5.1 sweep over p): d_v-bit vectors, one switch per row::

    a_j, b_j ~ Bernoulli(0.5),  i ~ Bernoulli(p),  c_j = (a_j XOR b_j) if i else a_j

p = 0 makes c a copy of a (b independent of everything); p = 1 makes c the
XOR of a and b (every pair independent, the triple deterministic). b is
independent of a and of c for every p, so a pairwise objective can never
predict b. Arrays ``a``, ``b``, ``c`` float32 [N, d_v] and ``i`` (the switch,
uint8 [N], for analysis only: no tower reads it).

Every split is an independent draw from one ``numpy.random.Generator`` seeded
with ``--seed`` (train, then val, then test), so a seed fixes all three.

    python local/make_data.py --task xor8 --seed 0 --out data/xor8/seed0
    python local/make_data.py --task xor3 --p 0.5 --d-v 1 --seed 0 --out data/xor3/d1_p0.5/seed0
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

XOR8_NAMES = tuple("abcdefgh")


def xor8(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Eight paired bit arrays ``{a..h: float32 [n, 1]}``, h the parity of a..g."""
    free = rng.integers(0, 2, size=(7, n), dtype=np.int64)
    bits = np.concatenate([free, np.bitwise_xor.reduce(free, axis=0)[None]], axis=0)
    return {name: bits[k][:, None].astype(np.float32) for k, name in enumerate(XOR8_NAMES)}


def xor3(n: int, p: float, d_v: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``{a, b, c: float32 [n, d_v], i: uint8 [n]}`` with c = a XOR b where i = 1, else c = a."""
    a = rng.integers(0, 2, size=(n, d_v), dtype=np.int64)
    b = rng.integers(0, 2, size=(n, d_v), dtype=np.int64)
    i = (rng.random(n) < p).astype(np.uint8)
    c = np.where(i[:, None] == 1, np.bitwise_xor(a, b), a)
    return {"a": a.astype(np.float32), "b": b.astype(np.float32), "c": c.astype(np.float32), "i": i}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", choices=("xor8", "xor3"), required=True)
    ap.add_argument("--out", type=Path, required=True, help="folder for train.npz, val.npz, test.npz")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--p", type=float, default=1.0, help="xor3: probability that c = a XOR b")
    ap.add_argument("--d-v", type=int, default=1, help="xor3: bits per variable")
    ap.add_argument("--n-train", type=int, default=10000)
    ap.add_argument("--n-val", type=int, default=1000)
    ap.add_argument("--n-test", type=int, default=5000)
    args = ap.parse_args(argv)
    if not 0.0 <= args.p <= 1.0:
        print(f"make_data.py: --p must lie in [0, 1], got {args.p}", file=sys.stderr)
        return 2
    if not 1 <= args.d_v <= 12:
        print(f"make_data.py: --d-v must lie in [1, 12] (the candidates are all 2^d_v values), got {args.d_v}",
              file=sys.stderr)  # fmt: skip
        return 2
    if min(args.n_train, args.n_val, args.n_test) < 1:
        print("make_data.py: every split needs at least one row", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    info = {"task": args.task, "seed": args.seed}
    if args.task == "xor3":
        info.update(p=args.p, d_v=args.d_v)
    for split, n in (("train", args.n_train), ("val", args.n_val), ("test", args.n_test)):
        arrays = xor8(n, rng) if args.task == "xor8" else xor3(n, args.p, args.d_v, rng)
        tmp = args.out / f".{split}.tmp.npz"
        np.savez(tmp, **arrays)
        tmp.replace(args.out / f"{split}.npz")  # atomic: an interrupted run leaves no half file
        info[f"n_{split}"] = n
    (args.out / "info.json").write_text(json.dumps(info, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
