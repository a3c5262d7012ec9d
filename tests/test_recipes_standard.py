"""The standard-dataset recipes end to end, on a few clips made in each dataset's published layout.

recipes/clap_audiocaps_clotho trains a tiny CLAP (2 steps) and evaluates retrieval;
its model folder then goes through recipes/esc50_zeroshot (5 folds, with the Ray
feature store) and recipes/urbansound8k_zeroshot (10 folds). Each recipe is
copied to a temporary folder (its data/ and exp/ land there), its data paths
are written to its conf/paths.sh as a user would, and a second run must skip
every finished stage. The clips are tones, so no accuracy is asserted: the
point is that the real layouts go through every stage and the results hold
the protocol's entries.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import make_tone
from test_importers import AC_HEADER, CLOTHO_HEADER, US8K_HEADER, write_csv

REPO = Path(__file__).resolve().parents[1]
RETRIEVAL = ("R@1", "R@5", "R@10", "mAP@10")


def _wav(path: Path, seconds: float, sample_rate: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sf.write(str(path), make_tone(seconds, sample_rate, freq=float(rng.uniform(200, 2000)), seed=seed),
             sample_rate)


def _copy_recipe(name: str, dest: Path, paths: dict[str, str]) -> Path:
    """recipes/<name> and recipes/utils under dest/recipes, conf/paths.sh pointing at the data."""
    for sub in ("utils", name):
        shutil.copytree(REPO / "recipes" / sub, dest / "recipes" / sub,
                        ignore=shutil.ignore_patterns("data", "exp", "__pycache__"))
    recipe = dest / "recipes" / name
    conf = recipe / "conf" / "paths.sh"
    assert conf.is_file(), "each recipe sets its data paths in conf/paths.sh"
    conf.write_text(conf.read_text() + "".join(f"{k}={v}\n" for k, v in paths.items()))
    return recipe


def _run(recipe: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env.pop("VIRTUAL_ENV", None)
    r = subprocess.run(["bash", str(recipe / "run.sh"), *args], capture_output=True, text=True, env=env,
                       timeout=300, cwd=cwd)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _skipped(stderr: str) -> int:
    return stderr.count("done before, skipped")


# ------------------------------------------------------------------ AudioCaps + Clotho


def make_audiocaps(root: Path) -> None:
    """CSVs as in github.com/cdjkim/audiocaps (train: 1 caption a clip, val/test: 5), wavs as {split}/{ytid}.wav."""
    rows = {"train": [], "val": [], "test": []}
    n_clips = {"train": 5, "val": 2, "test": 3}
    cid = 1000
    for split, n in n_clips.items():
        for k in range(n):
            ytid = f"{split[:2]}Yt{k:04d}xQ"
            for j in range(1 if split == "train" else 5):
                rows[split].append([cid, ytid, 30 * k, f"{split} clip {k}: a sound, caption {j}"])
                cid += 1
            _wav(root / split / f"{ytid}.wav", 1.0, 32000, seed=cid)
        write_csv(root / f"{split}.csv", AC_HEADER, rows[split])
    # a clip whose YouTube video is gone: skipped and counted, as for real downloads
    write_csv(root / "train.csv", AC_HEADER, rows["train"] + [[cid, "goneVideo00", 0, "vanished"]])


def make_clotho(root: Path) -> None:
    """Clotho v2.1 as unpacked from Zenodo: clotho_captions_{split}.csv, {split}/*.wav (names with spaces)."""
    for split, n in (("development", 4), ("validation", 2), ("evaluation", 3)):
        rows = []
        for k in range(n):
            name = f"{split} sound {k}.wav"
            rows.append([name] + [f"{split} {k} caption {j}, with a comma" for j in range(5)])
            _wav(root / split / name, 1.5, 44100, seed=100 + k + 10 * len(split))
        write_csv(root / f"clotho_captions_{split}.csv", CLOTHO_HEADER, rows)


@pytest.fixture(scope="module")
def clap_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    base = tmp_path_factory.mktemp("clap_ac_clotho")
    make_audiocaps(base / "audiocaps" / "dataset")
    make_clotho(base / "clotho")
    recipe = _copy_recipe("clap_audiocaps_clotho", base, {
        "audiocaps_root": str(base / "audiocaps" / "dataset"), "clotho_root": str(base / "clotho")})
    r = _run(recipe, "--nj", "1", "--train-args",
             "train.max_steps=2 data.batch_size=4 data.max_frames=64 train.device=cpu model.embed_dim=384")
    return recipe, r


def test_clap_audiocaps_clotho_end_to_end(clap_run) -> None:
    recipe, first = clap_run
    exp = recipe / "exp" / "clap_audiocaps_clotho"
    counts = json.loads((exp / "split_counts.json").read_text())
    assert counts == {"train": 5 + 4, "val": 2 + 2, "audiocaps_test": 3, "clotho_evaluation": 3, "all": 19}
    for split in ("train", "val", "audiocaps_test", "clotho_evaluation"):
        assert (recipe / "data" / "manifests" / f"{split}.jsonl").is_file()
    assert (exp / "train" / "model" / "frontend.json").is_file()
    res = json.loads((exp / "results.json").read_text())
    assert set(res["benchmarks"]) == {"audiocaps_test", "clotho_evaluation"}
    for b in res["benchmarks"].values():
        assert b["n_audio"] == 3 and b["n_text"] == 15 and b["captions_per_clip"] == 5.0
        for d in ("text_to_audio", "audio_to_text"):
            assert set(b[d]) == set(RETRIEVAL)
            assert all(0.0 <= b[d][m] <= 1.0 for m in RETRIEVAL)
        # a gallery of 3 clips: every caption finds its clip within the top 5
        assert b["text_to_audio"]["R@5"] == b["text_to_audio"]["R@10"] == 1.0
    ev = json.loads((exp / "eval" / "audiocaps_test.json").read_text())
    assert res["benchmarks"]["audiocaps_test"]["text_to_audio"]["R@1"] == ev["text_to_audio"]["R@1"]
    md = (exp / "results.md").read_text()
    assert "audiocaps_test" in md and "clotho_evaluation" in md and "./run.sh --nj 1" in md
    again = _run(recipe)
    assert _skipped(again.stderr) == 5 and "stage 2: training" not in again.stderr


# ------------------------------------------------------------------ ESC-50 and UrbanSound8K


ESC50_HEADER = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
ESC50 = [(0, "dog"), (1, "rooster"), (10, "rain"), (19, "thunderstorm"), (41, "chainsaw")]


def make_esc50(root: Path) -> None:
    """github.com/karolpiczak/ESC-50: audio/{fold}-{src}-{take}-{target}.wav, meta/esc50.csv; 2 clips a fold."""
    rows = []
    for fold in range(1, 6):
        for k in range(2):
            target, category = ESC50[(fold + k) % len(ESC50)]
            src = f"{100000 + 10 * fold + k}"
            name = f"{fold}-{src}-A-{target}.wav"
            _wav(root / "audio" / name, 1.0, 44100, seed=fold * 7 + k)
            rows.append([name, fold, target, category, str(target in (0, 1, 10, 41)), src, "A"])
    write_csv(root / "meta" / "esc50.csv", ESC50_HEADER, rows)


def make_urbansound8k(parent: Path) -> None:
    """UrbanSound8K/audio/fold1..10/{fsID}-{classID}-{occ}-{slice}.wav and metadata/UrbanSound8K.csv."""
    classes = ["air_conditioner", "car_horn", "children_playing", "dog_bark", "drilling",
               "engine_idling", "gun_shot", "jackhammer", "siren", "street_music"]
    rows = []
    for fold in range(1, 11):
        cls = (fold * 3) % 10
        fsid = 7000 + fold
        name = f"{fsid}-{cls}-0-{fold}.wav"
        _wav(parent / "UrbanSound8K" / "audio" / f"fold{fold}" / name, 0.8, 22050, seed=fold)
        rows.append([name, fsid, 1.0 * fold, 1.0 * fold + 0.8, 1, fold, cls, classes[cls]])
    write_csv(parent / "UrbanSound8K" / "metadata" / "UrbanSound8K.csv", US8K_HEADER, rows)


def _model_exp(recipe: Path) -> Path:
    """The one per-model output folder (exp/<parent>_<name>-<path hash>/)."""
    dirs = list((recipe / "exp").iterdir())
    assert len(dirs) == 1 and dirs[0].name.startswith("train_model-"), dirs
    return dirs[0]


def _check_zeroshot(recipe: Path, model: Path, n_folds: int, n_classes: int, n_items: int) -> dict:
    exp = _model_exp(recipe)
    res = json.loads((exp / "results.json").read_text())
    assert res["model"] == str(model)
    assert list(res["folds"]) == [str(f) for f in range(1, n_folds + 1)] and res["folds_missing"] == []
    assert res["n_classes"] == n_classes and res["n_items"] == n_items
    for v in res["folds"].values():
        assert set(v) == {"top1", "top5"} and 0.0 <= v["top1"] <= v["top5"] <= 1.0
    top1 = [v["top1"] for v in res["folds"].values()]
    assert res["mean"]["top1"] == pytest.approx(float(np.mean(top1)))
    assert res["std"]["top1"] == pytest.approx(float(np.std(top1)))
    md = (exp / "results.md").read_text()
    assert "mean ± std" in md and md.count("\n| ") == n_folds + 2
    return res


def test_esc50_zeroshot_with_feature_store(clap_run, tmp_path: Path) -> None:
    model = clap_run[0] / "exp" / "clap_audiocaps_clotho" / "train" / "model"
    make_esc50(tmp_path / "ESC-50-master")
    recipe = _copy_recipe("esc50_zeroshot", tmp_path, {"esc50_root": str(tmp_path / "ESC-50-master")})
    first = _run(recipe, "--model", str(model), "--extract", "true", "--nj", "1")
    assert "stage 1: feature store" in first.stderr and _skipped(first.stderr) == 0
    assert (_model_exp(recipe) / "store").is_dir()
    # scored against all 50 ESC-50 classes even though the copy holds 5 of them
    _check_zeroshot(recipe, model, n_folds=5, n_classes=50, n_items=10)
    again = _run(recipe, "--model", str(model), "--extract", "true")
    assert _skipped(again.stderr) == 4


def test_urbansound8k_zeroshot(clap_run, tmp_path: Path) -> None:
    model = clap_run[0] / "exp" / "clap_audiocaps_clotho" / "train" / "model"
    make_urbansound8k(tmp_path / "us8k")
    # the folder that contains UrbanSound8K/ works as the root
    recipe = _copy_recipe("urbansound8k_zeroshot", tmp_path, {"urbansound8k_root": str(tmp_path / "us8k")})
    # a relative --model is taken relative to where run.sh is started
    first = _run(recipe, "--model", "model", cwd=model.parent)
    assert "stage 1" not in first.stderr  # no feature store unless asked for
    res = _check_zeroshot(recipe, model, n_folds=10, n_classes=10, n_items=10)
    # one clip a fold: each fold's top-1 is 0 or 1
    assert all(v["top1"] in (0.0, 1.0) for v in res["folds"].values())
    again = _run(recipe, "--model", str(model))
    assert _skipped(again.stderr) == 3


def test_zeroshot_recipe_user_mistakes(tmp_path: Path) -> None:
    recipe = _copy_recipe("esc50_zeroshot", tmp_path, {})
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    r = subprocess.run(["bash", str(recipe / "run.sh")], capture_output=True, text=True, env=env)
    assert r.returncode != 0 and "--model DIR is required" in r.stderr
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    r = subprocess.run(["bash", str(recipe / "run.sh"), "--model", str(tmp_path / "m")],
                       capture_output=True, text=True, env=env)
    assert r.returncode != 0 and "set its path in conf/paths.sh" in r.stderr
    r = subprocess.run(["bash", str(recipe / "run.sh"), "--modle", "x"], capture_output=True, text=True, env=env)
    assert r.returncode != 0 and "unknown option --modle" in r.stderr
