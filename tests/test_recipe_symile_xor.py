"""recipes/symile_xor at a reduced budget, through the recipe's own scripts.

The 3-variable XOR task at p = 1 (c = a XOR b): b is independent of a and of c,
so pairwise CLIP can only reach chance (50%) predicting b from (a, c), while
Symile's multilinear score can reach 100%. This runs local/make_data.py and
local/run_grid.py (``audiocl train`` + local/eval_candidates.py) for Symile and
pairwise CLIP with a smaller data set and budget, and checks that split.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "symile_xor"


def _run(*cmd: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(cmd, cwd=RECIPE, capture_output=True, text=True, timeout=timeout, env=env)


def test_make_data_xor_processes(tmp_path: Path) -> None:
    r = _run(sys.executable, "local/make_data.py", "--task", "xor8", "--seed", "3", "--n-train", "300",
             "--n-val", "10", "--n-test", "10", "--out", str(tmp_path / "x8"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    z = np.load(tmp_path / "x8" / "train.npz")
    bits = np.stack([z[k][:, 0] for k in "abcdefgh"]).astype(np.int64)
    assert bits.shape == (8, 300) and (np.bitwise_xor.reduce(bits, axis=0) == 0).all()
    assert 0.35 < bits[:7].mean() < 0.65
    r = _run(sys.executable, "local/make_data.py", "--task", "xor3", "--p", "0.5", "--d-v", "3", "--seed", "1",
             "--n-train", "2000", "--n-val", "10", "--n-test", "10", "--out", str(tmp_path / "x3"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    z = np.load(tmp_path / "x3" / "train.npz")
    a, b, c, i = z["a"].astype(int), z["b"].astype(int), z["c"].astype(int), z["i"]
    assert a.shape == (2000, 3)
    assert (c[i == 1] == (a ^ b)[i == 1]).all() and (c[i == 0] == a[i == 0]).all()
    assert 0.45 < i.mean() < 0.55
    r = _run(sys.executable, "local/make_data.py", "--task", "xor3", "--p", "1.5", "--out", str(tmp_path / "bad"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--p" in r.stderr


def test_symile_solves_xor_clip_stays_at_chance(tmp_path: Path) -> None:
    data, exp = tmp_path / "data", tmp_path / "exp"
    r = _run(sys.executable, "local/make_data.py", "--task", "xor3", "--p", "1", "--d-v", "1", "--seed", "0",
             "--n-train", "2000", "--n-val", "500", "--n-test", "1000", "--out", str(data / "d1_p1.00" / "seed0"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = _run(sys.executable, "local/run_grid.py", "--task", "xor3", "--data", str(data), "--exp", str(exp),
             "--ps", "1", "--seeds", "0", "--losses", "symile", "pairwise", "--epochs", "6", "--nj", "2",
             "--train-args", "data.batch_size=250")  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    acc = {}
    for loss in ("symile", "pairwise"):
        res = json.loads((exp / "d1_p1.00" / loss / "seed0" / "eval" / "b.json").read_text())
        assert res["n"] == 1000 and res["n_candidates"] == 2 and res["chance"] == 0.5
        assert res["bayes_accuracy"] == 1.0  # c = a XOR b on every row: b = a XOR c
        acc[loss] = res["accuracy"]
    assert acc["symile"] > 0.9, acc
    assert abs(acc["pairwise"] - 0.5) < 0.08, acc


def test_bad_override_is_one_line(tmp_path: Path) -> None:
    r = _run(sys.executable, "-m", "audiocl", "train", "--config", "conf/xor3/symile.yaml", "--output", str(tmp_path / "o"),
             "optim.lr_rate=0.1")  # fmt: skip
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "lr_rate" in lines[0] and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("args,needle", [(["--bogus", "1"], "--bogus"), (["--epochs", "x"], "--epochs")])
def test_run_sh_rejects_bad_options(args: list[str], needle: str) -> None:
    r = _run("bash", "run.sh", "--stage", "9", *args)
    assert r.returncode != 0 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
