"""Distillation from a frozen teacher model (config section ``distill``, tinyCLAP-style
students) and ``audiocl eval speed``: a real teacher trained here on the FSDD store of
tests/train_store.py, a student with another audio encoder trained towards it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from train_store import build_store

from audiocl.cli import main
from audiocl.losses import build_loss, similarity_distill_loss
from audiocl.train.teacher import TeacherTargets, build_teacher_targets

pytestmark = pytest.mark.usefixtures("one_thread")

FRAMES, MELS = 16, 32


@pytest.fixture(scope="module")
def store(shared_dir, tmp_path_factory):
    return build_store(shared_dir, tmp_path_factory.getbasetemp() / "train_store")


def _text() -> dict:
    return {"modality": "text", "encoder": {"type": "small_text", "d_model": 16, "layers": 1, "heads": 2,
                                            "dropout": 0.0, "max_length": 32}, "projection": {"type": "linear"}}


def _teacher_model() -> dict:
    return {"embed_dim": 16, "towers": {
        "audio": {"modality": "audio", "encoder": {"type": "cnn", "variant": "cnn6", "channels": 8, "n_mels": MELS},
                  "projection": {"type": "linear"}}, "text": _text()}}  # fmt: skip


def _student_model() -> dict:
    return {"embed_dim": 16, "towers": {
        "audio": {"modality": "audio", "encoder": {"type": "cnn", "variant": "cnn6", "channels": 4, "n_mels": MELS},
                  "projection": {"type": "linear"}}, "text": _text()}}  # fmt: skip


def _train(capsys, out: Path, store, model: dict, loss: dict, distill: dict | None = None,
           steps: int = 3) -> tuple[int, str]:  # fmt: skip
    store_dir, man = store
    cfg = {"model": model, "loss": loss,
           "data": {"store": str(store_dir), "manifest": str(man), "val_manifest": str(man), "batch_size": 8,
                    "max_frames": FRAMES, "length_policy": "pad+trunc", "val_length_policy": "pad+trunc"},
           "optim": {"lr": 0.01}, "train": {"max_steps": steps, "log_every": 1, "val_every": steps, "seed": 1,
                                             "progress": False, "output_dir": str(out / "train")}}  # fmt: skip
    if distill is not None:
        cfg["distill"] = distill
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.yaml").write_text(yaml.safe_dump(cfg))
    if capsys is None:  # a module fixture has no capsys: the output goes to the terminal
        return main(["train", "--config", str(out / "train.yaml")]), ""
    capsys.readouterr()
    rc = main(["train", "--config", str(out / "train.yaml")])
    cap = capsys.readouterr()
    return rc, cap.out + cap.err


@pytest.fixture(scope="module")
def teacher(store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("teacher")
    rc, _ = _train(None, out, store, _teacher_model(), {"name": "clip"})
    assert rc == 0
    return out / "train" / "model"


def test_targets_follow_the_batch_ids():
    v = torch.arange(6.0).reshape(3, 2)
    t = TeacherTargets(["a", "b", "c"], {"teacher_audio": v}, logit_scale=7.0)
    batch = {"ids": ["c", "a"]}
    t.attach(batch)
    assert batch["teacher_embeddings"]["teacher_audio"].tolist() == [[4.0, 5.0], [0.0, 1.0]]
    assert float(batch["teacher_logit_scale"]) == 7.0
    with pytest.raises(Exception, match="'z' has no teacher embedding"):
        t.attach({"ids": ["z"]}, "data.manifest m.jsonl")


def test_teacher_embeddings_from_store_equal_from_files(store, teacher):
    store_dir, man = store
    from_store = build_teacher_targets(str(teacher), str(man), {"audio": "teacher_audio"}, store=str(store_dir))
    from_files = build_teacher_targets(str(teacher), str(man), {"audio": "teacher_audio"}, store=None)
    a, b = from_store.vectors["teacher_audio"], from_files.vectors["teacher_audio"]
    assert a.shape == (96, 16) and from_store.row == from_files.row
    assert torch.allclose(a, b, atol=1e-4), float((a - b).abs().max())
    assert torch.allclose(a.norm(dim=1), torch.ones(96), atol=1e-5)


def test_kl_mode_takes_the_teachers_scale_from_the_batch():
    g = torch.Generator().manual_seed(0)
    s, y, e = (F.normalize(torch.randn(5, 4, generator=g), dim=1) for _ in range(3))
    loss = build_loss("distill", mode="kl", pair="text", teacher_pair="text")
    out = {"embeddings": {"audio": s, "text": y}, "logit_scale": torch.tensor(3.0)}
    got = loss(out, {"teacher_embeddings": {"teacher_audio": e}, "teacher_logit_scale": torch.tensor(9.0)})
    assert float(got) == pytest.approx(float(similarity_distill_loss(s, y, e, y, 3.0, 9.0)), rel=1e-6)
    assert float(got) != pytest.approx(float(similarity_distill_loss(s, y, e, y, 3.0, 3.0)), rel=1e-3)


def test_student_trains_towards_the_teacher_and_is_timed(capsys, tmp_path, store, teacher):
    store_dir, man = store
    distill = {"teacher": str(teacher), "store": str(store_dir)}
    # tinyCLAP (cosine) + similarity distillation; the student's text tower stands for the teacher's
    terms = [{"name": "distill", "weight": 1.0},
             {"name": "distill", "weight": 1.0, "kwargs": {"mode": "kl", "pair": "text", "teacher_pair": "text"}}]
    rc, out = _train(capsys, tmp_path / "student", store, _student_model(), {"terms": terms}, distill, steps=12)
    assert rc == 0, out
    assert "embedding 96 items" in out, out
    summary = json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])
    # the validation loss is the distillation loss on the val items: an untrained student's
    # is about 1 (1 - cos of unrelated directions) plus the KL term; 12 steps bring it to ~0.2
    assert summary["best_metric"] is not None and 0.0 < summary["best_metric"] < 0.6, summary
    student = tmp_path / "student" / "train" / "model"
    assert (student / "model.safetensors").is_file()

    rc = main(["eval", "speed", "--model", f"teacher={teacher}", "--model", f"student={student}",
               "--baseline", "teacher", "--manifest", str(man), "--clips", "3", "--repeats", "1",
               "--out", str(tmp_path / "speed.json")])  # fmt: skip
    assert rc == 0
    res = json.loads((tmp_path / "speed.json").read_text())
    t, s = res["models"]["teacher"], res["models"]["student"]
    assert res["clips"] == 3 and t["ratio_total"] == 1.0
    assert s["total_ms"] > 0 and s["ratio_total"] == pytest.approx(s["total_ms"] / t["total_ms"], rel=1e-2)
    assert t["audio_params"] == sum(p.numel() for p in _audio_params(teacher))
    capsys.readouterr()
    rc = main(["eval", "speed", "--model", str(student), "--baseline", "nope", "--manifest", str(man),
               "--out", str(tmp_path / "bad.json")])  # fmt: skip
    assert rc == 2 and "--baseline 'nope'" in capsys.readouterr().err


def _audio_params(model_dir: Path):
    from audiocl.models import load_model

    return list(load_model(model_dir).towers["audio"].parameters())


def test_distill_mistakes_are_one_line(capsys, tmp_path, store, teacher):
    model = _student_model()
    rc, out = _train(capsys, tmp_path / "a", store, model, {"name": "distill"})
    assert rc == 2 and "give distill.teacher" in out, out
    rc, out = _train(capsys, tmp_path / "b", store, model, {"name": "clip"}, {"teacher": str(teacher)})
    assert rc == 2 and "no loss term is 'distill'" in out, out
    rc, out = _train(capsys, tmp_path / "c", store, model, {"name": "distill"},
                     {"teacher": str(teacher), "towers": {"text": "teacher_audio"}})
    assert rc == 2 and "teacher tower 'text' is a text tower" in out, out
    rc, out = _train(capsys, tmp_path / "d", store, model, {"name": "distill"}, {"teacher": str(tmp_path / "none")})
    assert rc == 2 and "not a model folder" in out and "Traceback" not in out, out
