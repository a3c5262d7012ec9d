"""What a user looks at: curves.png of a run, eval PNGs, --print-config, loggers, progress lines.

Real pieces: 32 FSDD clips extracted with the project's own code (tests/train_store.py),
``audiocl train`` / ``audiocl eval`` through the CLI in process, PNGs opened with
matplotlib's own reader, TensorBoard events read with tensorboard's EventAccumulator.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from train_store import build_store, model_config

from audiocl.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def _png(path: Path, min_side: int = 200) -> np.ndarray:
    """Open a PNG; assert it has a sane size and is not one flat colour."""
    import matplotlib.image as mpimg

    assert path.is_file(), path
    img = mpimg.imread(path)
    assert img.shape[0] >= min_side and img.shape[1] >= min_side, img.shape
    rgb = img[..., :3]
    # drawn: many pixels differ from the background (white)
    assert (np.abs(rgb - 1.0).sum(axis=-1) > 0.1).mean() > 0.01
    assert rgb.std() > 0.05
    return img


@pytest.fixture(autouse=True)
def _loud():
    # `--quiet` silences the whole process; every test starts loud
    from audiocl.progress import set_quiet

    set_quiet(False)
    yield
    set_quiet(False)


SPEAKERS = ("jackson", "nicolas", "theo", "yweweler")


@pytest.fixture(scope="module")
def store(shared_dir, tmp_path_factory):
    # 32 clips: digits 0-7, one take of each of 4 speakers (8 classes, 4 groups)
    names = [f"{d}_{s}_0.wav" for d in range(8) for s in SPEAKERS]
    return build_store(shared_dir, tmp_path_factory.mktemp("ux_store"), names=names)


def _config(tmp: Path, store: tuple[Path, Path], out: str, **train) -> Path:
    store_dir, manifest = store
    cfg = {
        "model": model_config(),
        "loss": {"name": "clip"},
        "data": {"store": str(store_dir), "manifest": str(manifest), "val_manifest": str(manifest),
                 "batch_size": 16, "max_frames": 32, "length_policy": "rand_trunc"},
        "optim": {"lr": 2e-3},
        "schedule": {"warmup_steps": 1},
        "train": {"epochs": 3, "log_every": 1, "seed": 3, "output_dir": str(tmp / out), "progress": True,
                  "best_metric": "val_r1", "best_mode": "max", **train},
    }  # fmt: skip
    p = tmp / f"{out}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def run(store, tmp_path_factory):
    import torch

    tmp = tmp_path_factory.mktemp("ux_run")
    # one thread as in the tests (module fixtures run before the function-scoped one_thread),
    # so the round-trip test's run sums its floats in the same order
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", "--config", str(_config(tmp, store, "a")), "--quiet"]) == 0
    finally:
        torch.set_num_threads(n)
    return tmp


def test_training_writes_curves_png_and_1_based_epochs(run):
    out = run / "a"
    _png(out / "curves.png")
    train, val = _rows(out / "train_log.csv"), _rows(out / "val_log.csv")
    # 32 clips, batch 16: 2 steps an epoch, 3 epochs; epochs numbered from 1 in both logs
    assert [(r["step"], r["epoch"]) for r in train] == [("1", "1"), ("2", "1"), ("3", "2"), ("4", "2"),
                                                        ("5", "3"), ("6", "3")]  # fmt: skip
    assert [(r["step"], r["epoch"]) for r in val] == [("2", "1"), ("4", "2"), ("6", "3")]


def test_tensorboard_has_config_hparams(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ev = EventAccumulator(str(run / "a" / "tensorboard"))
    ev.Reload()
    plugins = ev.PluginTagToContent("hparams")
    assert "_hparams_/experiment" in plugins and "_hparams_/session_start_info" in plugins
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = plugin_data_pb2.HParamsPluginData.FromString(plugins["_hparams_/session_start_info"])
    hp = start.session_start_info.hparams
    assert hp["optim.lr"].number_value == pytest.approx(2e-3) and hp["train.best_metric"].string_value == "val_r1"
    assert "val/r1" in ev.Tags()["scalars"]


def test_print_config_round_trips_to_the_same_run(run, capsys):
    # run a's config with overrides, printed, then trained from the printed text alone
    capsys.readouterr()
    assert main(["train", "--config", str(run / "a.yaml"), "--output", str(run / "b"), "schedule.min_lr=0",
                 "--print-config"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert not (run / "b").exists()  # printed, nothing trained
    resolved = yaml.safe_load(printed)
    assert resolved["train"]["output_dir"] == str(run / "b") and resolved["optim"]["lr"] == 2e-3
    assert resolved["train"]["loggers"] == ["csv", "tensorboard"] and resolved["data"]["batch_size"] == 16
    (run / "printed.yaml").write_text(printed)
    assert main(["train", "--config", str(run / "printed.yaml"), "--quiet"]) == 0
    a, b = _rows(run / "a" / "train_log.csv"), _rows(run / "b" / "train_log.csv")
    assert len(b) == 6 and [(r["loss"], r["lr"]) for r in b] == [(r["loss"], r["lr"]) for r in a]


def test_config_keys_lists_the_schema(capsys):
    assert main(["config", "keys"]) == 0
    text = capsys.readouterr().out
    keys = [line.split()[0] for line in text.splitlines()]
    assert {"optim.lr", "data.batch_size", "train.loggers", "distributed.workers"} <= set(keys)
    from audiocl.train.config import TrainingConfig, flatten_config

    # every leaf of a default config is listed, or the dict holding it (model, data.inputs)
    for leaf in flatten_config(TrainingConfig().to_dict()):
        parts = leaf.split(".")
        assert any(".".join(parts[:i]) in keys for i in range(1, len(parts) + 1)), leaf


def test_missing_tracker_package_is_one_line(run, store, capsys):
    # the test needs wandb to be absent (it is not installed here)
    try:
        import wandb  # noqa: F401

        pytest.skip("wandb is installed")
    except ImportError:
        pass
    cfg = _config(run, store, "w", loggers=["csv", "wandb"])
    assert main(["train", "--config", str(cfg), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("audiocl train: error: train.loggers: wandb needs the optional package 'wandb': "
                       "pip install 'audiocl[wandb]'")  # fmt: skip


def test_eval_plots_and_progress_lines(run, store, capsys):
    store_dir, manifest = store
    model = run / "a" / "model"
    zs = run / "zs.json"
    assert main(["eval", "zeroshot", "--model", str(model), "--manifest", str(manifest), "--store", str(store_dir),
                 "--group-by", "speaker", "--out", str(zs)]) == 0  # fmt: skip
    cap = capsys.readouterr()
    # not a terminal: one plain closing line per embedding step on stdout, no bar characters;
    # stderr stays free for the one-line error of a user mistake
    assert "embed audio: 32 clip in " in cap.out and "\r" not in cap.out and "\x1b[" not in cap.out
    assert cap.err == ""
    res = json.loads(zs.read_text())
    _png(run / "zs.confusion.png")
    _png(run / "zs.groups.png")
    md = (run / "zs.md").read_text()
    assert "zs.confusion.png" in md and "zs.groups.png" in md

    rt = run / "rt.json"
    assert main(["eval", "retrieval", "--model", str(model), "--manifest", str(manifest), "--store", str(store_dir),
                 "--group-by", "speaker", "--out", str(rt), "--quiet"]) == 0  # fmt: skip
    assert "embed" not in capsys.readouterr().out  # --quiet
    res = json.loads(rt.read_text())
    curve = res["recall_curve"]
    # each curve runs to its gallery: 32 clips for a caption, 64 captions for a clip
    assert curve["text_to_audio"]["k"] == [1, 2, 5, 10, 20, 32] and curve["audio_to_text"]["k"][-1] == 64
    for d in ("text_to_audio", "audio_to_text"):
        ks, rec = curve[d]["k"], curve[d]["recall"]
        for k in (1, 5, 10):
            assert rec[ks.index(k)] == res[d][f"R@{k}"]
        assert rec == sorted(rec) and rec[-1] == 1.0  # never falls with k; all found within the gallery
    _png(run / "rt.recall.png")
    _png(run / "rt.groups.png")


def test_confusion_png_scales_to_many_classes(tmp_path):
    from audiocl import plots

    rng = np.random.default_rng(0)
    for n in (10, 89):
        cm = np.diag(rng.integers(3, 9, n))
        # a few confusions, the largest known
        for _ in range(3 * n):
            i, j = rng.integers(0, n, 2)
            cm[i, j] += 1 if i != j else 0
        cm[3, 7] += 20
        names = [f"class_{i:03d}" for i in range(n)]
        p = tmp_path / f"cm{n}.png"
        plots.confusion(cm.tolist(), names, p, title="test")
        img = _png(p)
        if n > plots.MATRIX_MAX_CLASSES:
            # the top-confusions chart: wider than tall per bar, not a 89x89 grid
            assert img.shape[0] < 2000
    with pytest.raises(ValueError):
        plots.confusion([[1, 0], [0, 1]], ["a"], tmp_path / "bad.png")
    # 100 groups: the lowest MAX_GROUPS drawn, still one readable PNG
    per = {f"spk{i:03d}": {"top1": float(v), "n_items": 5} for i, v in enumerate(rng.uniform(0, 1, 100))}
    img = _png(plots.group_bars({"speaker": {"per_group": per}}, tmp_path / "g.png", ["top1"]))
    assert img.shape[1] < 3000


def test_plain_progress_lines_when_not_a_tty(capsys):
    from audiocl.progress import progress, set_quiet

    with progress(5, "work", unit="item") as bar:
        bar.every_s = 0.0
        for _ in range(5):
            bar.update(1)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("work: 1/5 item (20%)") and "eta" in out[0]
    assert out[-1].startswith("work: 5 item in 0:00:0") and len(out) == 5
    set_quiet(True)
    try:
        with progress(5, "work") as bar:
            bar.update(5)
    finally:
        set_quiet(False)
    assert capsys.readouterr().out == ""
