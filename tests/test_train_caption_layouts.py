"""Caption layouts for the multipositive and hardneg losses (data.caption_sampling=all,
data.hard_negatives=K): what ModelInputs hands the model and the loss, and a short
real training with each (FSDD store of tests/train_store.py, tiny towers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from train_store import build_store

from audiocl.cli import main
from audiocl.losses import MultiPositiveLoss, clip_loss
from audiocl.train.run import ModelInputs

FRAMES, MELS = 16, 32


@pytest.fixture(scope="module")
def store(shared_dir, tmp_path_factory):
    return build_store(shared_dir, tmp_path_factory.getbasetemp() / "train_store")


def test_all_captions_make_a_positives_mask():
    batch = {"ids": ["a", "b", "c"], "texts": [["dog", "a dog"], ["cat"], ["a dog", "pup"]]}
    inputs = ModelInputs({"text": "texts"}, {"text": "text"}, "all")(batch, (0, 0, 0))
    assert inputs["text"] == ["dog", "a dog", "cat", "pup"]  # each distinct caption once
    assert batch["text_positives"].tolist() == [
        [True, True, False, False], [False, False, True, False], [False, True, False, True]]
    # one caption per clip (P = I): the multipositive loss is the CLIP loss
    x, y = F.normalize(torch.randn(3, 4), dim=1), F.normalize(torch.randn(3, 4), dim=1)
    out = {"embeddings": {"audio": x, "text": y}, "logit_scale": torch.tensor(5.0)}
    got = MultiPositiveLoss()(out, {"text_positives": torch.eye(3, dtype=torch.bool)})
    assert float(got) == pytest.approx(float(clip_loss(x, y, 5.0)), rel=1e-6)


def test_hard_negative_blocks_are_padded_and_masked():
    batch = {"ids": ["a", "b"], "texts": [["a then b"], ["c with d"]],
             "hard_negatives": [["b then a", "a with b"], ["c then d"]]}
    inputs = ModelInputs({"text": "texts"}, {"text": "text"}, "first", hard_negatives=2)(batch, (0, 0, 0))
    assert inputs["text"] == ["a then b", "b then a", "a with b", "c with d", "c then d", "c with d"]
    assert batch["hard_negative_mask"].tolist() == [[True, True, True], [True, True, False]]


def _model() -> dict:
    return {"embed_dim": 16, "towers": {
        "audio": {"modality": "audio", "encoder": {"type": "mlp", "input_dim": FRAMES * MELS, "hidden": [32]},
                  "projection": {"type": "linear"}},
        "text": {"modality": "text", "encoder": {"type": "small_text", "d_model": 16, "layers": 1, "heads": 2,
                                                   "dropout": 0.0, "max_length": 32}, "projection": {"type": "linear"}},
    }}  # fmt: skip


def _train(capsys, tmp_path: Path, store, loss: dict, data: dict, manifest: Path | None = None) -> tuple[int, str]:
    store_dir, man = store
    man = manifest or man
    cfg = {"model": _model(), "loss": loss,
           "data": {"store": str(store_dir), "manifest": str(man), "val_manifest": str(man), "batch_size": 8,
                    "max_frames": FRAMES, "length_policy": "pad+trunc", "val_length_policy": "pad+trunc", **data},
           "optim": {"lr": 0.01}, "train": {"max_steps": 3, "log_every": 1, "val_every": 3, "seed": 1,
                                             "progress": False, "output_dir": str(tmp_path / "out")}}  # fmt: skip
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    rc = main(["train", "--config", str(path)])
    cap = capsys.readouterr()
    return rc, cap.out + cap.err


def test_training_with_each_layout(capsys, tmp_path, store):
    rc, out = _train(capsys, tmp_path / "mp", store, {"name": "multipositive"}, {"caption_sampling": "all"})
    assert rc == 0, out
    summary = json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])
    assert summary["best_metric"] is not None and summary["best_metric"] == summary["best_metric"]  # not NaN
    # hard negatives: the other digit's words, from a manifest field
    store_dir, man = store
    rows = [json.loads(ln) for ln in man.read_text().splitlines()]
    for r in rows:
        r["hard_negatives"] = [f"the word {'one' if r['labels'][0] != 'one' else 'two'}"]
    hn = tmp_path / "hn.jsonl"
    hn.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rc, out = _train(capsys, tmp_path / "hn", store, {"name": "hardneg", "kwargs": {"num_negatives": 2}},
                     {"hard_negatives": 2}, hn)
    assert rc == 0, out
    # the loss and the data must agree on the block size; multipositive needs every caption
    rc, out = _train(capsys, tmp_path / "bad", store, {"name": "hardneg", "kwargs": {"num_negatives": 1}},
                     {"hard_negatives": 2}, hn)
    assert rc == 2 and "data.hard_negatives=1" in out, out
    rc, out = _train(capsys, tmp_path / "bad2", store, {"name": "multipositive"}, {})
    assert rc == 2 and "caption_sampling=all" in out, out
