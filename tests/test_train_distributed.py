"""Two Ray Train CPU workers (gloo, DDP) take the same steps as one process.

The global batch of 16 is split 8 + 8 over two workers, each of which also
splits its 8 into gradient-cached micro-batches of 4; the single process
takes the 16 at once. With the losses' gather-with-grad and DDP averaging,
the loss, the gradient norm and the parameters after two AdamW steps must
match the single process (1e-5), and so must the validation metrics. The towers have no dropout or BatchNorm, so
per-rank randomness and batch statistics do not enter. One Ray start.
"""

from __future__ import annotations

import csv
import math

import pytest
import torch
from safetensors.torch import load_file
from train_store import build_store

from audiocl.train.config import TrainingConfig
from audiocl.train.distributed import train_distributed
from audiocl.train.run import train


@pytest.fixture(scope="module")
def store(shared_dir, tmp_path_factory):
    return build_store(shared_dir, tmp_path_factory.getbasetemp() / "train_store")


def _cfg(store, out, **dist) -> TrainingConfig:
    store_dir, manifest = store
    frames, mels = 16, 32
    return TrainingConfig.model_validate(
        {
            "model": {
                "embed_dim": 16,
                "towers": {
                    "audio": {
                        "modality": "audio",
                        "encoder": {"type": "mlp", "input_dim": frames * mels, "hidden": [32]},
                        "projection": {"type": "linear"},
                    },
                    "text": {
                        "modality": "text",
                        "encoder": {"type": "small_text", "d_model": 16, "layers": 1, "heads": 2, "dropout": 0.0, "max_length": 32},
                        "projection": {"type": "linear"},
                    },
                },
            },
            "loss": {"name": "clip"},
            "data": {"store": str(store_dir), "manifest": str(manifest), "batch_size": 16,
                     "val_manifest": str(manifest),
                     "max_frames": frames, "length_policy": "rand_trunc", **dist.pop("data", {})},
            # eps=1 makes Adam's first steps depend on the gradient's scale
            "optim": {"lr": 0.05, "eps": 1.0, "weight_decay": 0.1},
            "train": {"max_steps": 2, "log_every": 1, "ckpt_every": 1, "output_dir": str(out), "progress": False,
                      "grad_clip": None, "seed": 3},
            "distributed": dist,
        }
    )  # fmt: skip


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_two_ray_workers_match_one_process(store, tmp_path, capfd):
    torch.set_num_threads(1)
    single = _cfg(store, tmp_path / "single")
    one = train(single)
    multi = _cfg(store, tmp_path / "ray", workers=2, data={"micro_batch_size": 4})
    capfd.readouterr()
    summary = train_distributed(multi)
    out, err = capfd.readouterr()
    assert summary["model_dir"] is not None
    # the same summary as one process: steps, last training loss, best validation metric
    assert summary.keys() == one.keys() and summary["steps"] == one["steps"] == 2
    assert summary["epochs"] == one["epochs"]
    for key in ("last_loss", "best_metric"):
        assert isinstance(summary[key], float) and math.isclose(summary[key], one[key], rel_tol=1e-5), key
    # output not on a terminal: rank 0's lines plain (no Ray prefix, no colour codes);
    # Ray's own lines (its controller, the PlacementGroupCleaner, C++ logs) in ray.log
    assert "training: 2 steps" in out and "\x1b" not in out + err, (out, err)
    assert "pid=" not in out + err and "core_worker.cc" not in out + err and "PlacementGroupCleaner" not in err
    assert (tmp_path / "ray" / "ray.log").is_file()

    a = _rows(tmp_path / "single" / "train_log.csv")
    b = _rows(tmp_path / "ray" / "train_log.csv")
    assert [r["step"] for r in a] == [r["step"] for r in b] == ["1", "2"]
    for ra, rb in zip(a, b):
        for key in ("loss", "grad_norm", "scale"):
            assert math.isclose(float(ra[key]), float(rb[key]), rel_tol=1e-5), (key, ra[key], rb[key])
    wa = load_file(str(tmp_path / "single" / "checkpoints" / "step_00000002" / "model.safetensors"))
    wb = load_file(str(tmp_path / "ray" / "checkpoints" / "step_00000002" / "model.safetensors"))
    w1 = load_file(str(tmp_path / "single" / "checkpoints" / "step_00000001" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-5, atol=1e-5, msg=k)
    # the second step really moved the parameters (well beyond the tolerance)
    assert max(float((wa[k] - w1[k]).abs().max()) for k in wa) > 1e-2
    assert (tmp_path / "ray" / "model" / "model.safetensors").is_file()
    # validation (sharded over ranks, metrics reduced) equals the single process
    va = _rows(tmp_path / "single" / "val_log.csv")
    vb = _rows(tmp_path / "ray" / "val_log.csv")
    assert len(va) == len(vb) == 1 and va[0].keys() == vb[0].keys()
    for key in va[0]:
        assert math.isclose(float(va[0][key]), float(vb[0][key]), rel_tol=1e-5, abs_tol=1e-7), key
