"""Object-first evaluation with per-group results, and the one loss -> score map.

Real FSDD recordings (four speakers' spoken digits) and a tiny untrained
model: the numbers are meaningless, but a group's numbers must be exactly
those of evaluating that group's items alone.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from audiocl.cli import main
from audiocl.errors import AudioclError

DIGITS = ("zero", "one", "two", "three")
SR = 16000


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    from audiocl.audio.frontend import get_preset
    from audiocl.models import MultiTowerModel

    torch.manual_seed(1)
    cfg = {
        "embed_dim": 16,
        "towers": {
            "audio": {"modality": "audio", "encoder": {"type": "cnn", "variant": "cnn6", "channels": 8}},
            "text": {"modality": "text", "encoder": {"type": "small_text", "d_model": 32, "layers": 1, "heads": 2}},
        },
    }
    fe = get_preset("laion_clap", sample_rate=SR, f_max=8000.0, hop_length=160, clip_samples=SR,
                    length_policy="repeatpad+trunc")
    return MultiTowerModel.from_config(cfg, frontend=fe, prompts=["the digit {}"]).eval()


@pytest.fixture(scope="module")
def items(shared_dir):
    from audiocl.data.manifest import AudioItem

    rec = shared_dir / "data" / "fsdd-dev" / "recordings"
    out = []
    for d, word in enumerate(DIGITS):
        for spk in ("jackson", "nicolas", "theo"):
            for i in range(2):
                out.append(AudioItem(id=f"{d}_{spk}_{i}", path=str(rec / f"{d}_{spk}_{i}.wav"), labels=[word],
                                     texts=[word, f"the number {word}"], speaker=spk,
                                     language="en" if spk != "theo" else "xx", custom={"take": i}))
    return out


@pytest.fixture(scope="module")
def audio(model, items):
    from audiocl.eval.embed import embed_items_audio

    return embed_items_audio(model, items)


def test_zeroshot_groups_equal_each_group_alone(model, items, audio):
    from audiocl.eval.zeroshot import zeroshot, zeroshot_metrics

    res, scores = zeroshot(model, items, group_by=["speaker", "take"], audio=audio)
    assert res["n_classes"] == 4 and res["n_items"] == 24 and res["prompts"] == ["the digit {}"]
    sp = res["groups"]["speaker"]
    assert sp["n_groups"] == 3 and list(sp["per_group"]) == ["jackson", "nicolas", "theo"]
    classes = sorted(DIGITS)
    for spk, block in sp["per_group"].items():
        rows = [i for i, it in enumerate(items) if it.speaker == spk]
        alone = zeroshot_metrics(scores[rows], [items[i].labels for i in rows], classes)
        for k in ("top1", "top5", "MRR", "mean_rank", "n_items"):
            assert block[k] == alone[k], (spk, k)
    tops = [b["top1"] for b in sp["per_group"].values()]
    assert sp["mean"]["top1"] == pytest.approx(np.mean(tops)) and sp["min"]["top1"] == min(tops)
    # a custom field groups too (its values are ints in the manifest, keys in JSON)
    assert set(res["groups"]["take"]["per_group"]) == {"0", "1"}
    # the precomputed audio gives the numbers embedding would
    res2, scores2 = zeroshot(model, items, audio=None)
    assert torch.allclose(scores, scores2, atol=1e-6) and res2["top1"] == res["top1"]


def test_zeroshot_names_and_refusals(model, items, audio):
    from audiocl.eval.zeroshot import zeroshot

    # other words for the same classes (another language's digit names) change the scores, not the labels
    res, s = zeroshot(model, items, list(DIGITS), ["{}"], names=["null", "eins", "zwei", "drei"], audio=audio)
    assert res["class_names"] == ["null", "eins", "zwei", "drei"] and list(res["per_class"]) == list(DIGITS)
    with pytest.raises(AudioclError, match="at least 2 classes"):
        zeroshot(model, items[:6], audio=audio[:6])  # all "zero"
    with pytest.raises(AudioclError, match="no 'gender'"):
        zeroshot(model, items, group_by="gender", audio=audio)
    with pytest.raises(AudioclError, match="exactly one"):
        zeroshot(model, items, templates=["{0} {1}"], audio=audio)
    with pytest.raises(AudioclError, match="batch size"):
        zeroshot(model, items, batch_size=0)


def test_retrieval_groups_are_within_group(model, items, audio):
    import torch.nn.functional as F

    from audiocl.eval.embed import embed_strings
    from audiocl.eval.retrieval import retrieval, retrieval_metrics

    res = retrieval(model, items, audio=audio, group_by="language", speech=True)
    assert res["n_audio"] == 24 and res["n_text"] == 48
    per = res["groups"]["language"]["per_group"]
    assert set(per) == {"en", "xx"} and per["en"]["n_audio"] == 16 and per["xx"]["n_text"] == 16
    rows = [i for i, it in enumerate(items) if it.language == "xx"]
    caps = [t for i in rows for t in items[i].texts]
    alone = retrieval_metrics(F.normalize(audio[rows], dim=-1), embed_strings(model, caps),
                              torch.arange(len(rows)).repeat_interleave(2), speech=True)
    assert per["xx"]["text_to_audio"] == alone["text_to_audio"]
    assert per["xx"]["audio_to_text"] == alone["audio_to_text"]
    mean = res["groups"]["language"]["mean"]["text_to_audio"]["HITS@1"]
    assert mean == pytest.approx((per["en"]["text_to_audio"]["HITS@1"] + per["xx"]["text_to_audio"]["HITS@1"]) / 2)


def test_cli_group_by_writes_groups(model, items, tmp_path, capsys):
    from audiocl.data.manifest import write_manifest

    d = tmp_path / "model"
    model.save_pretrained(d)
    m = tmp_path / "m.jsonl"
    write_manifest(items, m)
    out = tmp_path / "z.json"
    assert main(["eval", "zeroshot", "--model", str(d), "--manifest", str(m), "--group-by", "speaker",
                 "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert set(res["groups"]["speaker"]["per_group"]) == {"jackson", "nicolas", "theo"}
    assert sum(v["n_items"] for v in res["groups"]["speaker"]["per_group"].values()) == 24
    md = out.with_suffix(".md").read_text()
    assert "## Per speaker (3 groups)" in md and "| jackson |" in md and "| **mean** |" in md
    # without --group-by the keys of earlier versions, no groups
    out2 = tmp_path / "z2.json"
    assert main(["eval", "zeroshot", "--model", str(d), "--manifest", str(m), "--out", str(out2)]) == 0
    res2 = json.loads(out2.read_text())
    assert "groups" not in res2 and res2["top1"] == res["top1"]
    capsys.readouterr()


def test_score_for_loss_is_the_one_map(tmp_path, capsys):
    from audiocl.eval.multiway import candidate_scores, multiway, multiway_all, score_for_loss
    from audiocl.losses.similarity import mip

    assert score_for_loss("symile") == "mip" and score_for_loss("gram") == "volume"
    assert {score_for_loss(x) for x in ("clip", "pairwise", "siglip", "cwcl")} == {"cosine"}
    with pytest.raises(AudioclError, match="unknown loss 'simile'"):
        score_for_loss("simile")
    g = torch.randn(3, 7, 8)
    cand = torch.randn(5, 8)
    assert torch.equal(candidate_scores("mip", [g[0], g[1]], cand), mip([g[0], g[1]], cand))
    # volume: a candidate equal to both query vectors spans no volume, the best score (0)
    s = candidate_scores("volume", [cand[:1], cand[:1]], cand)
    assert s.shape == (1, 5) and int(s.argmax()) == 0 and abs(float(s[0, 0])) < 1e-3

    rng = np.random.default_rng(0)
    base = rng.standard_normal((40, 8)).astype(np.float32)
    emb = {k: torch.from_numpy(base + 0.3 * rng.standard_normal((40, 8)).astype(np.float32)) for k in "abc"}
    assert multiway(embeddings=emb, loss="gram") == multiway_all(emb, "volume")
    npz = tmp_path / "e.npz"
    np.savez(npz, **{k: v.numpy() for k, v in emb.items()})
    a, b = tmp_path / "loss.json", tmp_path / "method.json"
    assert main(["eval", "multiway", "--embeddings", str(npz), "--loss", "gram", "--out", str(a)]) == 0
    assert main(["eval", "multiway", "--embeddings", str(npz), "--method", "volume", "--out", str(b)]) == 0
    ra, rb = json.loads(a.read_text()), json.loads(b.read_text())
    assert ra["method"] == "volume" and ra["loss"] == "gram" and ra["targets"] == rb["targets"]
    assert main(["eval", "multiway", "--embeddings", str(npz), "--loss", "simile", "--out", str(a)]) == 2
    assert "unknown loss 'simile'" in capsys.readouterr().err
