"""audiocl <-> Hugging Face ClapModel, on the converted LAION reference checkpoint.

The reference checkpoint has a 1000-token vocabulary and no tokenizer, so a
byte-level BPE tokenizer is trained here, offline, on a few sentences (ids
stay below 1000) and shipped with the converted model: the weights are the
real LAION-converted ones, only the string -> id step is local. Checks:

- the HF folder loads with ``ClapModel.from_pretrained`` and gives the same
  audio/text embeddings as the audiocl folder (and as laion_clap's);
- audiocl -> HF -> audiocl leaves weights, config, front-end, prompts and
  embeddings unchanged;
- ``pipeline("zero-shot-audio-classification")`` on the HF folder gives the
  same scores as ``audiocl.eval.zeroshot.run_zeroshot`` on the audiocl folder
  (softmax of ``exp(logit_scale) * cosine``) for the ESC-50 sample clips.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from audiocl.cli import main  # noqa: E402
from audiocl.errors import AudioclError  # noqa: E402

torch.set_num_threads(1)

PROMPT = "This is a sound of {}."


def _train_tokenizer(out: Path, sentences: list[str]) -> Path:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(sentences, vocab_size=900, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok = RobertaTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>",
                               pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
                               cls_token="<s>", sep_token="</s>")
    # RoBERTa's special ids are what LAION's text branch was built around
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id) == (0, 1, 2)
    tok.save_pretrained(str(out))
    return out


def _esc50(shared: Path) -> tuple[Path, list[dict[str, str]]]:
    root = shared / "data" / "esc50-sample"
    with open(root / "meta" / "esc50.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return root, rows


@pytest.fixture(scope="module")
def dirs(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("hf")
    _, rows = _esc50(shared_dir)
    cats = sorted({r["category"].replace("_", " ") for r in rows})
    sentences = [PROMPT.format(c) for c in cats] + ["a dog barks", "rain falls on a roof", "birds sing"]
    tok = _train_tokenizer(base / "tok", sentences * 3)
    ckpt = shared_dir / "reference" / "laion_clap" / "checkpoint.pt"
    d = {"laion": base / "laion", "hf": base / "hf", "back": base / "back"}
    assert main(["convert", "laion", "--checkpoint", str(ckpt), "--out", str(d["laion"]), "--tokenizer", str(tok)]) == 0
    assert main(["convert", "hf", "--model", str(d["laion"]), "--out", str(d["hf"])]) == 0
    assert main(["convert", "from-hf", "--model", str(d["hf"]), "--out", str(d["back"])]) == 0
    return d


def _ref_waves(shared: Path) -> list[np.ndarray]:
    io = np.load(shared / "reference" / "laion_clap" / "io.npz")
    return [io["audio_10s_int16"].astype(np.float32) / 32767.0, io["audio_3s_int16"].astype(np.float32) / 32767.0]


def test_hf_folder_loads_and_matches(dirs: dict[str, Path], shared_dir: Path) -> None:
    from transformers import ClapModel

    from audiocl.audio.frontend import LogMel
    from audiocl.audio.length import apply_length_policy
    from audiocl.models import load_model

    ours = load_model(dirs["laion"])
    hf = ClapModel.from_pretrained(str(dirs["hf"]), local_files_only=True).eval()
    wavs = [apply_length_policy(w, 480000, "repeatpad") for w in _ref_waves(shared_dir)]
    mel = LogMel(ours.frontend)(torch.from_numpy(np.stack(wavs)))
    with torch.no_grad():
        a_hf = hf.get_audio_features(input_features=mel[:, None]).pooler_output
    a_ours = ours.embed_audio(mel)
    assert torch.allclose(a_hf, a_ours, atol=1e-6, rtol=0)
    io = np.load(shared_dir / "reference" / "laion_clap" / "io.npz")
    laion = np.concatenate([io["audio_embed_10s"], io["audio_embed_3s"]])
    assert np.abs(a_hf.numpy() - laion).max() < 1e-4
    with torch.no_grad():
        t_hf = hf.get_text_features(input_ids=torch.from_numpy(io["input_ids"]),
                                    attention_mask=torch.from_numpy(io["attention_mask"])).pooler_output
    assert np.abs(t_hf.numpy() - io["text_embed"]).max() < 1e-5
    # strings through the shipped tokenizer: same ids and embeddings on both sides
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(dirs["hf"]), local_files_only=True)
    texts = ["This is a sound of cow.", "a dog barks"]
    with torch.no_grad():
        s_hf = hf.get_text_features(**tok(texts, padding=True, return_tensors="pt")).pooler_output
    assert torch.allclose(s_hf, ours.embed_text(texts), atol=1e-6, rtol=0)
    assert float(hf.logit_scale_a.detach()) == pytest.approx(float(ours.logit_scale.detach()), abs=1e-7)
    fx = json.loads((dirs["hf"] / "preprocessor_config.json").read_text())
    assert (fx["truncation"], fx["padding"], fx["frequency_min"], fx["frequency_max"]) == ("rand_trunc", "repeatpad", 50.0, 14000.0)


def test_round_trip_is_lossless(dirs: dict[str, Path], shared_dir: Path) -> None:
    from audiocl.models import embed_waveforms, load_model

    a, b = load_model(dirs["laion"]), load_model(dirs["back"])
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.frontend == b.frontend and a.frontend.hash() == b.frontend.hash()
    assert a.prompts == b.prompts
    ca, cb = a.config.to_dict(), b.config.to_dict()
    assert ca["towers"]["audio"] == cb["towers"]["audio"]
    assert ca["logit_scale"] == cb["logit_scale"] and ca["embed_dim"] == cb["embed_dim"]
    assert a.towers["text"].encoder.max_length == b.towers["text"].encoder.max_length == 77
    wavs = _ref_waves(shared_dir)
    assert torch.equal(embed_waveforms(a, wavs, 48000), embed_waveforms(b, wavs, 48000))
    texts = ["This is a sound of rain.", "birds sing"]
    assert torch.equal(a.embed_text(texts), b.embed_text(texts))


def test_pipeline_scores_match_zeroshot(dirs: dict[str, Path], shared_dir: Path, tmp_path: Path) -> None:
    from transformers import pipeline

    from audiocl.audio.io import load_mono
    from audiocl.data.manifest import AudioItem, write_manifest
    from audiocl.eval.zeroshot import run_zeroshot
    from audiocl.models import load_model

    root, rows = _esc50(shared_dir)
    items = [AudioItem(id=r["filename"], path=str(root / "audio" / r["filename"]), labels=[r["category"]],
                       custom={"fold": int(r["fold"])}) for r in rows]
    manifest = tmp_path / "esc.jsonl"
    write_manifest(items, manifest)
    res, scores = run_zeroshot(dirs["laion"], manifest, prompt=PROMPT)
    scale = float(load_model(dirs["laion"]).scale().detach())
    ours = torch.softmax(scale * scores, dim=1).numpy()

    clf = pipeline("zero-shot-audio-classification", model=str(dirs["hf"]))
    names = res["class_names"]
    got = np.zeros_like(ours)
    for i, it in enumerate(items):
        wav = load_mono(it.path, 48000)  # the pipeline takes arrays at its feature extractor's rate
        for r in clf(wav, candidate_labels=names, hypothesis_template=PROMPT):
            got[i, names.index(r["label"])] = r["score"]
    # measured 9e-8: the HF feature extractor and our LogMel agree to float rounding here
    assert np.abs(got - ours).max() < 1e-5
    # the tiny reference model's scores are close to uniform; their spread must still
    # dwarf the tolerance, or the comparison above would say nothing
    assert (ours.max(axis=1) - ours.min(axis=1)).min() > 1e-3
    assert (got.argmax(axis=1) == ours.argmax(axis=1)).all()


def test_refuses_non_clap_models(dirs: dict[str, Path], tmp_path: Path) -> None:
    from audiocl.audio.frontend import get_preset
    from audiocl.interop.hf import model_to_hf
    from audiocl.models import load_model

    m = load_model(dirs["laion"])
    m.frontend = get_preset("speech16k")
    with pytest.raises(AudioclError, match="ClapFeatureExtractor"):
        model_to_hf(m, tmp_path / "x")
    m = load_model(dirs["laion"])
    m.logit_bias = torch.nn.Parameter(torch.tensor(-10.0))
    with pytest.raises(AudioclError, match="logit bias"):
        model_to_hf(m, tmp_path / "y")
    assert main(["convert", "from-hf", "--model", str(tmp_path), "--out", str(tmp_path / "z")]) == 2


def test_fusion_model_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A (random) aff_2d fusion model: fusion front-end <-> ClapFeatureExtractor(fusion), 4-view input."""
    from transformers import ClapModel

    from audiocl.audio.frontend import get_preset
    from audiocl.models import MultiTowerModel, load_model

    torch.manual_seed(0)
    cfg = {
        "embed_dim": 24,
        "towers": {
            "audio": {"modality": "audio", "projection": {"type": "mlp"},
                      "encoder": {"type": "htsat", "embed_dim": 16, "depths": [1, 1], "num_heads": [1, 2],
                                  "enable_fusion": True, "fusion_type": "aff_2d"}},
            "text": {"modality": "text", "projection": {"type": "mlp"},
                     "encoder": {"type": "hf_text", "pooling": "pooler", "pretrained": False,
                                 "hf_config": {"model_type": "roberta", "vocab_size": 100, "hidden_size": 32,
                                               "num_hidden_layers": 1, "num_attention_heads": 2,
                                               "intermediate_size": 37, "max_position_embeddings": 40}}},
        },
    }
    model = MultiTowerModel.from_config(cfg, frontend=get_preset("laion_clap_fusion"))
    with torch.no_grad():  # non-trivial BatchNorm statistics, so dropping them would show
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    src = model.save_pretrained(tmp_path / "m")
    assert main(["convert", "hf", "--model", str(src), "--out", str(tmp_path / "hf")]) == 0
    assert "no tokenizer" in capsys.readouterr().out
    assert main(["convert", "from-hf", "--model", str(tmp_path / "hf"), "--out", str(tmp_path / "back")]) == 0
    fx = json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())
    assert fx["truncation"] == "fusion"
    a, b = load_model(src), load_model(tmp_path / "back")
    hf = ClapModel.from_pretrained(str(tmp_path / "hf"), local_files_only=True).eval()
    assert a.frontend == b.frontend
    feats = torch.randn(3, 4, 1001, 64) * 10 - 40
    longer = torch.tensor([True, False, True])
    with torch.no_grad():
        e_hf = hf.get_audio_features(input_features=feats, is_longer=longer[:, None]).pooler_output
        e_a = a.towers["audio"]({"features": feats, "is_longer": longer})
        e_b = b.towers["audio"]({"features": feats, "is_longer": longer})
        ids = {"input_ids": torch.tensor([[0, 5, 9, 2], [0, 7, 2, 1]]), "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])}
        t_hf = hf.get_text_features(**ids).pooler_output
        t_a = a.towers["text"](ids)
    assert torch.allclose(e_hf, e_a, atol=1e-6, rtol=0) and torch.equal(e_a, e_b)
    assert torch.allclose(t_hf, t_a, atol=1e-6, rtol=0)
    # the local crops matter: changing them moves only the is_longer items
    feats2 = feats.clone()
    feats2[:, 1:] += 5
    with torch.no_grad():
        e2 = a.towers["audio"]({"features": feats2, "is_longer": longer})
    assert torch.equal(e2[1], e_a[1]) and not torch.allclose(e2[0], e_a[0])
