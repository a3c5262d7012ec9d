"""recipes/trimodal_audio on a reduced corpus: real espeak-ng speech and fluidsynth notes
through the recipe's own scripts (corpus, pooled features, tuple arrays, class-level
evaluation), checking that arrays and labels agree and that the task is higher-order."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "trimodal_audio"
SF2 = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("fluidsynth") is None or not SF2.is_file(),
    reason="needs espeak-ng, fluidsynth and fluid-soundfont-gm (apt-get install espeak-ng fluidsynth fluid-soundfont-gm)",
)


def _local(name: str):
    """A module of the recipe's local/ folder (they import each other by folder)."""
    # other recipes' tests load local/ modules of the same plain names (build_corpus, ...):
    # hide those while this recipe's modules import their siblings, then put them back
    stems = {p.stem for p in (RECIPE / "local").glob("*.py")}
    saved = {n: sys.modules.pop(n) for n in stems if n in sys.modules}
    sys.path.insert(0, str(RECIPE / "local"))
    try:
        spec = importlib.util.spec_from_file_location(f"trimodal_{name}", RECIPE / "local" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(RECIPE / "local"))
        for n in stems:
            sys.modules.pop(n, None)
        sys.modules.update(saved)


def _script(name: str, *args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, str(RECIPE / "local" / f"{name}.py"), *args], capture_output=True, text=True,
                       timeout=120, env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin",
                                         "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert r.returncode == 0, f"{name}: {r.stderr[-2000:]}"
    return r


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from audiocl.audio.frontend import get_preset
    from audiocl.data.extract import extract

    tmp = tmp_path_factory.mktemp("trimodal")
    corpus = tmp / "corpus"
    _script("build_corpus", "--out", str(corpus), "--clips-per-class", "6", "--jobs", "2")
    # the recipe extracts with `audiocl extract` (Ray); the same shard code in-process here
    extract(corpus / "speech.jsonl", tmp / "store_speech", get_preset("speech16k"), workers=1, progress=False,
            runner="inline")  # fmt: skip
    extract(corpus / "notes.jsonl", tmp / "store_notes",
            get_preset("laion_clap", sample_rate=16000, n_fft=512, win_length=512, hop_length=160, f_max=8000,
                       clip_samples=80000), workers=1, progress=False, runner="inline")  # fmt: skip
    feats = tmp / "features"
    _script("pool_features", "--manifest", str(corpus / "speech.jsonl"), "--store", str(tmp / "store_speech"),
            "--name", "speech", "--out", str(feats / "speech.npz"))  # fmt: skip
    _script("pool_features", "--manifest", str(corpus / "notes.jsonl"), "--store", str(tmp / "store_notes"),
            "--name", "note", "--out", str(feats / "note.npz"))  # fmt: skip
    _script("make_arrays", "--features", str(feats), "--out", str(tmp / "arrays"), "--tuples", "train=300", "val=40",
            "test=60", "--missing-prob", "0.5")  # fmt: skip
    return {"corpus": corpus, "features": feats, "arrays": tmp / "arrays"}


def _task() -> dict:
    return yaml.safe_load((RECIPE / "conf" / "task.yaml").read_text())


def test_corpus_clips_are_real_and_labelled(built: dict[str, Path]) -> None:
    import soundfile as sf

    from audiocl.data.manifest import read_manifest

    task = _task()
    for manifest, classes in (("speech.jsonl", task["languages"]), ("notes.jsonl", list(task["instruments"]))):
        items = list(read_manifest(built["corpus"] / manifest))
        assert sorted({it.labels[0] for it in items}) == sorted(classes)
        for c in classes:
            mine = [it for it in items if it.labels[0] == c]
            assert len(mine) == 6 and {it.split for it in mine} == {"train", "val", "test"}
        for it in items[::7]:
            x, sr = sf.read(it.path, dtype="float32")
            assert sr == it.sampling_rate and len(x) == it.num_samples
            assert np.sqrt(np.mean(x**2)) > 1e-3, f"{it.id} is (nearly) silent"
    speech = list(read_manifest(built["corpus"] / "speech.jsonl"))
    assert all(it.language == it.labels[0] and it.custom["voice"].startswith(it.language + "+") for it in speech)
    # filler words of the speech's own language only
    for it in speech[::5]:
        tokens = {t for w in task["words"][it.language] for t in w.split()}
        assert set(it.texts[0].split()) <= tokens, (it.language, it.texts)


def test_arrays_agree_with_the_clips_and_words(built: dict[str, Path]) -> None:
    task = _task()
    langs, instruments = task["languages"], list(task["instruments"])
    info = json.loads((built["arrays"] / "arrays_info.json").read_text())
    ma = _local("make_arrays")
    feats = {m: np.load(built["features"] / f"{m}.npz") for m in ("speech", "note")}
    meta = {m: np.load(built["features"] / f"{m}.meta.npz") for m in ("speech", "note")}
    row_of = {m: {str(i): r for r, i in enumerate(meta[m]["ids"])} for m in meta}
    for cfg_name in ("symile", "gram", "pairwise"):
        cfg = yaml.safe_load((RECIPE / "conf" / f"{cfg_name}.yaml").read_text())
        assert {t: cfg["model"]["towers"][t]["encoder"]["input_dim"] for t in ("speech", "note", "text")} == info["dims"]
    for task_name in ("higher", "control"):
        d = np.load(built["arrays"] / f"{task_name}_train.npz")
        n = len(d["lang"])
        assert n == 300 and d["speech"].shape == (n, info["dims"]["speech"]) and d["text"].shape == (n, info["dims"]["text"])
        assert ma.valid(d["lang"], d["instr"], d["slots"]).all()
        for m in ("speech", "note", "text"):
            assert np.all(d[m][:, -1] == 0) and np.isfinite(d[m]).all()
        for i in range(0, n, 17):
            sid, nid = str(d["ids"][i]).split(":", 1)[1].split("+")
            # the speech row is a clip of the tuple's language, the note row one of its instrument
            assert feats["speech"]["labels"][row_of["speech"][sid]] == langs[d["lang"][i]]
            assert feats["note"]["labels"][row_of["note"][nid]] == instruments[d["instr"][i]]
            assert meta["speech"]["split"][row_of["speech"][sid]] == "train"
            # the clip's pooled vector, standardised with the training clips' statistics
            x, tr = feats["speech"]["speech"].astype(np.float64), meta["speech"]["split"] == "train"
            want = (x[row_of["speech"][sid]] - x[tr].mean(0)) / (x[tr].std(0) + 1e-6)
            assert np.allclose(d["speech"][i, :-1], want, atol=1e-4)
            words = str(d["words"][i]).split(" | ")
            for j, w in enumerate(words):
                s = d["slots"][i, j]
                assert (w == task["blank"]) if s < 0 else (w in task["instruments"][instruments[s]]["names"][langs[j]])
            if task_name == "higher":
                assert sorted(d["slots"][i]) == list(range(len(langs)))  # every instrument named once
            else:
                assert (d["slots"][i] >= 0).sum() == 1
        # equal word, equal slot vector: the text array is the words' frozen MiniLM vectors
        dim = info["word_dim"]
        slot0 = d["text"][:, :dim]
        w0 = np.array([str(w).split(" | ")[0] for w in d["words"]])
        for w in set(w0):
            rows = slot0[w0 == w]
            assert np.allclose(rows, rows[0]) and abs(np.linalg.norm(rows[0]) - 1) < 1e-4
        assert len({tuple(np.round(slot0[w0 == w][0], 4)) for w in set(w0)}) == len(set(w0))
    # the missingness files: flagged rows are zeroed, the drop rate is near p = 0.5
    miss = np.load(built["arrays"] / "higher_train_miss.npz")
    for m in ("speech", "note", "text"):
        flag = miss[m][:, -1] == 1
        assert 0.35 < flag.mean() < 0.65
        assert np.all(miss[m][flag, :-1] == 0) and not np.all(miss[m][~flag, :-1] == 0)
    gone = np.load(built["arrays"] / "higher_test_no_speech.npz")
    assert np.all(gone["speech"][:, -1] == 1) and np.all(gone["note"][:, -1] == 0)


def test_pairs_do_not_determine_the_target() -> None:
    """On 20000 drawn tuples: in the higher-order task no single modality's class predicts
    any other's beyond chance while the other two together always do; in the control
    task the text alone does."""
    ma = _local("make_arrays")
    pools = {m: {c: np.arange(3) for c in range(5)} for m in ("speech", "note")}
    for task, single_max in (("higher", 0.23), ("control", None)):
        train = ma.draw_tuples(task, 20000, 5, pools, 3, seed=1)
        test = ma.draw_tuples(task, 5000, 5, pools, 3, seed=2)
        acc = ma.plugin_accuracy(train, test)
        for target, res in acc.items():
            joint = "+".join(m for m in ("speech", "note", "text") if m != target)
            assert res[joint] == 1.0, (task, target, res)
            for given, v in res.items():
                if given == joint:
                    continue
                if single_max is not None:
                    assert v < single_max, (task, target, given, v)
                elif "text" in (given, target):
                    # control: the text tells language and instrument, each of which pins down the other side
                    assert v == 1.0 or target == "text", (task, target, given, v)
        mi = ma.mutual_information(train["lang"].tolist(), [tuple(r) for r in train["slots"].tolist()])
        assert (mi < 0.05) if task == "higher" else (mi > 2.0), (task, mi)


def test_class_level_accuracy_counts_valid_triples(built: dict[str, Path]) -> None:
    """An oracle embedding whose MIP is exactly [slot l names k] scores 1 on every target;
    shuffled candidates score near chance; the scorer can tell them apart."""
    ev = _local("evaluate")
    d = np.load(built["arrays"] / "higher_test.npz")
    lang, instr, slots = d["lang"], d["instr"], d["slots"]
    L = slots.shape[1]
    eye = torch.eye(L, dtype=torch.float64)
    speech = torch.stack([torch.outer(eye[a], torch.ones(L, dtype=torch.float64)).flatten() for a in lang])
    note = torch.stack([torch.outer(torch.ones(L, dtype=torch.float64), eye[k]).flatten() for k in instr])
    text = torch.stack([sum(torch.outer(eye[j], eye[s]) for j, s in enumerate(row)).flatten() for row in slots])
    emb = {"speech": speech, "note": note, "text": text}
    for t in ("note", "speech", "text"):
        acc, chance = ev.class_level_accuracy(emb, lang, instr, slots, t, "mip", chunk=16)
        assert acc == pytest.approx(1.0), t
        assert 0.1 < chance < 0.35, (t, chance)
    perm = np.random.default_rng(0).permutation(len(lang))
    acc, chance = ev.class_level_accuracy({**emb, "note": note[perm]}, lang, instr, slots, "note", "mip")
    assert acc < 0.5
    # equal scores everywhere: ties count fractionally, i.e. exactly the chance level
    flat = {m: torch.ones(len(lang), 4) for m in emb}
    acc, chance = ev.class_level_accuracy(flat, lang, instr, slots, "speech", "cosine")
    assert acc == pytest.approx(chance)


def test_the_three_objectives_share_everything_but_the_loss() -> None:
    cfgs = {n: yaml.safe_load((RECIPE / "conf" / f"{n}.yaml").read_text()) for n in ("symile", "gram", "pairwise")}
    for n, c in cfgs.items():
        assert c["loss"]["name"] == n
        assert c["loss"]["kwargs"]["modalities"][0] == "text"
        c.pop("loss")
    assert cfgs["symile"] == cfgs["gram"] == cfgs["pairwise"]


def test_tuple_counts_per_task_and_clear_errors(tmp_path: Path) -> None:
    """conf/task.yaml may give a split one count for every task or one per task; --tuples
    overrides every task; a missing task or a non-count names the field."""
    ma = _local("make_arrays")
    conf = _task()["tuples"]
    assert ma.tuple_counts(conf, "higher", {})["train"] > ma.tuple_counts(conf, "control", {})["train"]
    assert ma.tuple_counts(conf, "higher", {"train": 300}) == {"train": 300, "val": conf["val"], "test": conf["test"]}
    for bad in ({"train": {"higher": 10}, "val": 5, "test": 5}, {"train": 10, "val": "many", "test": 5},
                {"train": 10, "val": 0, "test": 5}):  # fmt: skip
        with pytest.raises(ma.AudioclError, match=r"tuples\.(train|val)"):
            ma.tuple_counts(bad, "control", {})
    r = subprocess.run([sys.executable, str(RECIPE / "local" / "make_arrays.py"), "--features", "/nonexistent",
                        "--out", str(tmp_path / "arrays"), "--tuples", "train"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2 and "--tuples 'train': expected SPLIT=COUNT" in r.stderr and "Traceback" not in r.stderr
