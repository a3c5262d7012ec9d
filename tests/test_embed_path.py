"""One path from audio to embedding: the same clip gives the same valid length and
the same embedding through training collation, a feature store and the file /
waveform path (issue 13).

Real audio: FSDD spoken digits (``../shared/data/fsdd-dev``, 8 kHz, 0.2-0.8 s);
the long clip is four of them concatenated (longer than the 1 s clip length).
Stores are written by the project's own extraction code (in process).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from audiocl.audio.frontend import compute_logmel, get_preset  # noqa: E402
from audiocl.audio.io import load_mono  # noqa: E402
from audiocl.audio.length import valid_length  # noqa: E402
from audiocl.data.manifest import AudioItem, write_manifest  # noqa: E402
from audiocl.models import MultiTowerModel  # noqa: E402

SR = 16000
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _fsdd(shared_dir: Path) -> Path:
    return shared_dir / "data" / "fsdd-dev" / "recordings"


@pytest.fixture(scope="module")
def clips(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[AudioItem]]:
    """A manifest with one short FSDD clip and one long clip (four FSDD clips in a row)."""
    d = tmp_path_factory.mktemp("clips")
    rec = _fsdd(shared_dir)
    short = rec / "3_jackson_0.wav"
    parts = [sf.read(str(rec / f"{k}_theo_1.wav"), dtype="int16") for k in (1, 5, 7, 9)]
    assert all(sr == 8000 for _, sr in parts)
    long_ = d / "long.wav"
    sf.write(str(long_), np.concatenate([x for x, _ in parts]), 8000, subtype="PCM_16")
    items = [AudioItem(id="short", path=str(short), labels=["three"]),
             AudioItem(id="long", path=str(long_), labels=["one"])]
    manifest = d / "clips.jsonl"
    write_manifest(items, manifest)
    return manifest, items


def _cnn(fe) -> MultiTowerModel:
    torch.manual_seed(0)
    cfg = {"embed_dim": 16, "towers": {"audio": {
        "modality": "audio",
        "encoder": {"type": "cnn", "variant": "cnn6", "channels": 4, "n_mels": 32, "dropout": 0.1},
        "projection": {"type": "linear"}}}}
    m = MultiTowerModel.from_config(cfg, frontend=fe)
    m.train()  # non-trivial BatchNorm statistics
    with torch.no_grad():
        m({"audio": torch.randn(8, 60, 32) * 3 - 8})
    return m.eval()


@pytest.mark.parametrize("policy", ["pad+trunc", "repeatpad+rand_trunc"])
def test_same_clip_same_embedding_through_every_path(policy, clips, tmp_path):
    from audiocl.data.extract import extract
    from audiocl.data.loader import FeatureDataset
    from audiocl.data.store import FeatureStore
    from audiocl.eval.embed import embed_items_audio
    from audiocl.models import embed_audio_files
    from audiocl.models.embed import embed_store, embed_waveforms, inference, logmel_pieces
    from audiocl.train.run import FeatureCollate, ModelInputs

    manifest, items = clips
    fe = get_preset("speech16k", n_mels=32, clip_samples=SR, length_policy=policy)
    model = _cnn(fe)
    store = tmp_path / "store"
    extract(manifest, store, fe, runner="inline", progress=False)
    fs = FeatureStore(store)
    ids = [it.id for it in items]
    target = fe.clip_frames
    wavs = [load_mono(it.path, SR) for it in items]
    file_mels = [compute_logmel(w, fe) for w in wavs]
    n_frames = [m.shape[0] for m in file_mels]
    assert n_frames[0] < target < n_frames[1]  # one short clip, one long clip
    for i, m in zip(ids, file_mels):  # the store holds what the model's front-end makes of the file
        assert np.array_equal(np.asarray(fs[i]), m)

    # (a) training collation -> the model's forward, as the trainer feeds it
    ds = FeatureDataset(store, manifest)
    batch = FeatureCollate(target, policy)([ds[ds.ids.index(i)] for i in ids], 0)
    inputs = ModelInputs({"audio": "features"}, {"audio": "audio"}, "first")(batch, (0, 0, 0))
    with inference(model):
        e_train = model(inputs)["embeddings"]["audio"]
    want_len = [valid_length(n, target, policy) for n in n_frames]
    assert batch["lengths"].tolist() == want_len
    if policy.startswith("repeatpad"):
        assert want_len[0] == (target // n_frames[0]) * n_frames[0] < target  # the zero tail is not signal
    else:
        assert want_len[0] == n_frames[0]

    # (b) the store and (c) the waveform / audio-file path, with the front-end's own
    # truncation for the long clip (rand_trunc: the crop seeded by the item id)
    e_store = embed_store(model, fs, ids, long_clips="policy")
    e_wave = embed_waveforms(model, wavs, SR, keys=ids, long_clips="policy")
    e_items = embed_items_audio(model, items, long_clips="policy")
    for e in (e_store, e_wave, e_items):
        torch.testing.assert_close(e, e_train, atol=1e-6, rtol=0)
    torch.testing.assert_close(embed_audio_files(model, [items[0].path])[0], e_train[0], atol=1e-6, rtol=0)
    for mels in ([np.asarray(fs[i]) for i in ids], file_mels):
        pieces, owner = logmel_pieces(model, mels, keys=ids, long_clips="policy")
        assert owner == [0, 1] and [p.length for p in pieces] == want_len
        for p, row in zip(pieces, batch["features"]):
            assert np.array_equal(p.x, row.numpy())
    # deterministic at inference, also for rand_trunc
    assert torch.equal(embed_store(model, fs, ids, long_clips="policy"), e_store)

    # the default for long clips: evenly spaced windows, averaged; store == files
    w_store = embed_store(model, fs, ids)
    w_items = embed_items_audio(model, items, store=store)
    w_files = embed_items_audio(model, items)
    torch.testing.assert_close(w_files, w_store, atol=1e-6, rtol=0)
    torch.testing.assert_close(w_items, w_store, atol=1e-6, rtol=0)
    torch.testing.assert_close(w_store[0], e_train[0], atol=1e-6, rtol=0)  # short: one piece, same as training
    pieces, owner = logmel_pieces(model, file_mels, keys=ids)
    k = -(-n_frames[1] // target)
    assert owner == [0] + [1] * k and [p.length for p in pieces] == [want_len[0]] + [target] * k
    if policy.startswith("pad"):
        # counting the padding as signal would give another embedding: the lengths matter
        # (repeatpad's 3-frame tail here vanishes in the CNN's 16x time pooling)
        with inference(model):
            padded_all = model.towers.audio(batch["features"][:1], torch.tensor([target]))
        assert (padded_all[0] - e_train[0]).abs().max() > 1e-4


def _clap_sfx_model(shared_dir: Path) -> MultiTowerModel:
    """The main job's from-scratch architecture (recipes/clap_sfx/conf/train_scratch.yaml), randomly initialised,
    with the recipe's front-end (its run.sh: laion_clap at 16 kHz, 10 ms hop, 5 s clips)."""
    import yaml

    conf = Path(__file__).resolve().parents[1] / "recipes" / "clap_sfx" / "conf" / "train_scratch.yaml"
    cfg = yaml.safe_load(conf.read_text())
    fe = get_preset("laion_clap", sample_rate=16000, n_fft=512, win_length=512, hop_length=160,
                    f_max=8000.0, clip_samples=80000)
    torch.manual_seed(0)
    return MultiTowerModel.from_config(cfg["model"], frontend=fe, prompts=cfg["prompts"])


def test_zeroshot_store_and_files_agree(shared_dir, tmp_path):
    from audiocl.cli import main
    from audiocl.data.extract import extract
    from audiocl.eval.embed import embed_items_audio

    rec = _fsdd(shared_dir)
    items = [AudioItem(id=f"{k}_{s}_{r}", path=str(rec / f"{k}_{s}_{r}.wav"), labels=[DIGITS[k]])
             for k in range(10) for s, r in (("jackson", 2), ("nicolas", 3))]
    manifest = tmp_path / "fsdd.jsonl"
    write_manifest(items, manifest)
    model = _clap_sfx_model(shared_dir)
    model.save_pretrained(tmp_path / "model")
    store = tmp_path / "store"
    extract(manifest, store, model.frontend, runner="inline", progress=False)
    res = {}
    for name, extra in (("files", []), ("store", ["--store", str(store)])):
        out = tmp_path / f"{name}.json"
        rc = main(["eval", "zeroshot", "--model", str(tmp_path / "model"), "--manifest", str(manifest),
                   "--out", str(out), *extra])
        assert rc == 0
        res[name] = json.loads(out.read_text())
    assert res["files"]["n_items"] == res["store"]["n_items"] == 20
    assert res["files"]["top1"] == res["store"]["top1"]
    assert res["files"]["per_class"] == res["store"]["per_class"]
    assert res["store"]["audio_source"] == "store" and res["files"]["audio_source"] == "files"
    # not just the same accuracies: the same embeddings
    from audiocl.models import load_model

    m = load_model(tmp_path / "model")
    torch.testing.assert_close(embed_items_audio(m, items, store=store), embed_items_audio(m, items),
                               atol=1e-6, rtol=0)


def test_readme_python_snippet_runs_verbatim(shared_dir, tmp_path, monkeypatch):
    """README's "LAION-CLAP and Hugging Face" Python block, run as written, in a folder
    where ``clap630k`` is a saved audiocl model and the two files are real ESC-50 clips."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "embed_audio_files" in b]
    assert len(blocks) == 1
    esc = shared_dir / "data" / "esc50-sample" / "audio"
    x, sr = sf.read(str(esc / "3-132852-A-10.wav"))  # ESC-50 class 10: rain
    sf.write(str(tmp_path / "rain.flac"), x, sr)
    (tmp_path / "dog.wav").write_bytes((esc / "2-103426-A-3.wav").read_bytes())
    torch.manual_seed(0)
    cfg = {"embed_dim": 16, "towers": {
        "audio": {"modality": "audio", "encoder": {"type": "cnn", "variant": "cnn6", "channels": 4}},
        "text": {"modality": "text", "encoder": {"type": "small_text", "d_model": 16, "layers": 1, "heads": 2}}}}
    MultiTowerModel.from_config(cfg, frontend=get_preset("laion_clap", clip_samples=48000 * 2)).save_pretrained(
        tmp_path / "clap630k")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), scope)
    a, t = scope["a"], scope["t"]
    assert a.shape == (2, 16) and t.shape == (2, 16)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(2))
    assert not torch.allclose(a[0], a[1])


def test_valid_length_rule_and_inference_pieces():
    from audiocl.audio.length import clip_pieces

    assert [valid_length(30, 100, p) for p in ("pad", "repeat", "repeatpad", "repeatpad+rand_trunc")] == [30, 100, 90, 90]
    assert valid_length(250, 100, "repeatpad") == 100 and valid_length(250, None, "pad") == 250
    mel = np.arange(250 * 2, dtype=np.float32).reshape(250, 2)
    win = clip_pieces(mel, 100, "repeatpad+rand_trunc")
    assert [int(p.x[0, 0]) // 2 for p in win] == [0, 75, 150] and [p.length for p in win] == [100] * 3
    crop = clip_pieces(mel, 100, "repeatpad+rand_trunc", long="policy", key="a")
    assert len(crop) == 1 and crop[0].length == 100
    assert np.array_equal(crop[0].x, clip_pieces(mel, 100, "repeatpad+rand_trunc", long="policy", key="a")[0].x)
    (short,) = clip_pieces(mel[:30], 100, "repeatpad", pad_value=-100.0)
    assert short.length == 90 and np.array_equal(short.x[:90], np.tile(mel[:30], (3, 1)))
    assert (short.x[90:] == -100.0).all()
    (fused,) = clip_pieces(mel, 100, "repeatpad", long="fusion", key="a")
    assert fused.x.shape == (4, 100, 2) and fused.is_longer


def test_waveform_fitted_model_refuses_a_logmel_store(clips, tmp_path):
    """HTSAT fits clips as waveforms (LAION's rule): a log-mel-only store cannot give its input."""
    from audiocl.data.extract import extract
    from audiocl.data.store import FeatureStore
    from audiocl.errors import AudioclError
    from audiocl.models.embed import embed_store

    manifest, items = clips
    fe = get_preset("speech16k", n_mels=16, clip_samples=SR, length_policy="repeatpad")
    cfg = {"embed_dim": 8, "towers": {"audio": {"modality": "audio", "encoder": {
        "type": "htsat", "embed_dim": 8, "depths": [1, 1], "num_heads": [1, 2], "window_size": 4,
        "spec_size": 64, "n_mels": 16}}}}
    model = MultiTowerModel.from_config(cfg, frontend=fe).eval()
    extract(manifest, tmp_path / "store", fe, runner="inline", progress=False)
    with pytest.raises(AudioclError, match="fits clips as waveforms"):
        embed_store(model, FeatureStore(tmp_path / "store"), [it.id for it in items])
