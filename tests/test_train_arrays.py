"""Training and evaluating on paired arrays (``data.arrays``), through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from audiocl.data.arrays import ArrayDataset, collate_arrays, load_arrays
from audiocl.errors import InputError


def _views(n: int, seed: int) -> dict[str, np.ndarray]:
    """Three noisy linear views of one 4-d latent: any pair identifies the item."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 4))
    mix = np.random.default_rng(123)  # the same mixing for every split
    out = {}
    for name, dim in (("a", 6), ("b", 5), ("c", 7)):
        w = mix.standard_normal((4, dim))
        out[name] = (z @ w + 0.05 * rng.standard_normal((n, dim))).astype(np.float32)
    out["labels"] = np.array([f"k{int(v > 0)}" for v in z[:, 0]])
    return out


def _config(tmp: Path, loss: str) -> Path:
    towers = {
        name: {"modality": "vector", "encoder": {"type": "mlp", "input_dim": dim, "hidden": [32]},
               "projection": {"type": "linear"}}
        for name, dim in (("a", 6), ("b", 5), ("c", 7))
    }  # fmt: skip
    cfg = {
        "model": {"embed_dim": 8, "towers": towers},
        "loss": {"name": loss, "kwargs": {"modalities": ["a", "b", "c"]}},
        "data": {"arrays": str(tmp / "train.npz"), "val_arrays": str(tmp / "val.npz"), "batch_size": 100,
                 "inputs": {"a": "a", "b": "b", "c": "c"}},
        "optim": {"lr": 1e-2, "weight_decay": 0.0},
        "train": {"epochs": 8, "seed": 0, "log_every": 50, "device": "cpu", "progress": False,
                  "best_metric": "val_loss", "best_mode": "min"},
    }  # fmt: skip
    path = tmp / f"{loss}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "audiocl", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture()
def arrays(tmp_path: Path) -> Path:
    for split, n, seed in (("train", 1000, 0), ("val", 200, 1), ("test", 200, 2)):
        np.savez(tmp_path / f"{split}.npz", **_views(n, seed))
    return tmp_path


@pytest.mark.parametrize("loss,method", [("pairwise", "cosine"), ("symile", "mip")])
def test_train_and_multiway_from_arrays(arrays: Path, loss: str, method: str) -> None:
    cfg = _config(arrays, loss)
    out = arrays / f"exp_{loss}"
    r = _cli("train", "--config", str(cfg), "--output", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 80
    model = out / "model"
    assert (model / "model.safetensors").is_file() and not (model / "frontend.json").exists()
    res_path = arrays / f"mw_{loss}.json"
    r = _cli("eval", "multiway", "--model", str(model), "--arrays", str(arrays / "test.npz"),
             "--method", method, "--out", str(res_path))  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(res_path.read_text())
    # chance is 1/200; a linear latent shared by all views is easy for both objectives
    assert res["accuracy_mean"] > 0.5, res
    assert set(res["targets"]) == {"a", "b", "c"}


def test_probe_and_input_mapping_from_arrays(arrays: Path) -> None:
    cfg = _config(arrays, "pairwise")
    out = arrays / "exp"
    assert _cli("train", "--config", str(cfg), "--output", str(out), "train.epochs=2").returncode == 0
    test = dict(np.load(arrays / "test.npz"))
    test["view_a"] = test.pop("a")
    np.savez(arrays / "renamed.npz", **test)
    res_path = arrays / "probe.json"
    r = _cli("eval", "probe", "--model", str(out / "model"), "--arrays", str(arrays / "renamed.npz"),
             "--inputs", "a=view_a", "--tower", "a", "--k", "2", "--out", str(res_path))  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(res_path.read_text())["tower"] == "a"
    # a tower mapped to an array that does not exist: one line naming it
    r = _cli("eval", "multiway", "--model", str(out / "model"), "--arrays", str(arrays / "renamed.npz"),
             "--inputs", "a=nope", "--out", str(arrays / "x.json"))  # fmt: skip
    assert r.returncode == 2 and "'nope'" in r.stderr and "Traceback" not in r.stderr


def test_bad_arrays_are_named(tmp_path: Path) -> None:
    good = _views(10, 0)
    bad = {**good, "b": good["b"].copy()}
    bad["b"][3, 1] = np.nan
    np.savez(tmp_path / "nan.npz", **bad)
    with pytest.raises(InputError) as e:
        load_arrays(tmp_path / "nan.npz")
    assert e.value.field == "b" and e.value.line == 4 and "nan.npz" in str(e.value)

    np.savez(tmp_path / "short.npz", a=good["a"], b=good["b"][:7])
    with pytest.raises(InputError, match="7 rows"):
        load_arrays(tmp_path / "short.npz")
    np.savez(tmp_path / "obj.npz", a=np.array([{"x": 1}] * 3, dtype=object))
    with pytest.raises(InputError, match="pickle"):
        load_arrays(tmp_path / "obj.npz")
    with pytest.raises(InputError, match="no array named 'zz'"):
        load_arrays(tmp_path / "short.npz", ["zz"])


def test_collate_strings_and_ids(tmp_path: Path) -> None:
    np.savez(tmp_path / "t.npz", x=np.arange(6, dtype=np.int64).reshape(3, 2), text=np.array(["a", "bb", "c"]),
             ids=np.array(["u", "v", "w"]))  # fmt: skip
    ds = ArrayDataset(tmp_path / "t.npz")
    batch = collate_arrays([ds[2], ds[0]])
    assert batch["ids"] == ["w", "u"] and batch["text"] == ["c", "a"]
    assert batch["x"].dtype.is_floating_point and batch["x"].tolist() == [[4.0, 5.0], [0.0, 1.0]]


def test_arrays_and_store_together_is_refused(arrays: Path) -> None:
    cfg = _config(arrays, "pairwise")
    r = _cli("train", "--config", str(cfg), "data.store=somewhere")
    assert r.returncode == 2 and "not both" in r.stderr and "Traceback" not in r.stderr
