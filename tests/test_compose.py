"""Two-event clips for the compositional test (audiocl.data.compose) and the caption
choice that scores them (audiocl.eval.compositional), on real FSDD recordings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiocl.data.compose import EVENT_DBFS, captions_for, make_compositions
from audiocl.data.manifest import AudioItem
from audiocl.errors import AudioclError
from audiocl.eval.compositional import caption_choice

SR, EVENT_S = 8000, 0.25


def _items(shared: Path) -> list[AudioItem]:
    rec = shared / "data" / "fsdd-dev" / "recordings"
    return [AudioItem(id=f, path=str(rec / f), texts=[w], labels=[w], split="train", source="fsdd",
                      license="CC BY-SA 4.0" if w != "two" else "CC0")
            for f, w in (("0_jackson_0.wav", "zero"), ("1_jackson_0.wav", "one"), ("2_jackson_0.wav", "two"))]


def test_compositions_are_deterministic_and_as_captioned(shared_dir, tmp_path):
    items = _items(shared_dir)
    rows = make_compositions(items, tmp_path / "a", 6, seed=3, sample_rate=SR, event_seconds=EVENT_S)
    again = make_compositions(items, tmp_path / "b", 6, seed=3, sample_rate=SR, event_seconds=EVENT_S)
    win = int(EVENT_S * SR)
    for r, r2 in zip(rows, again):
        assert Path(r.path).read_bytes() == Path(r2.path).read_bytes()
        a, b = r.labels
        assert a != b
        kind = r.custom["composition"]
        # a mix carries both recordings' licences, each once
        assert r.source == "fsdd"
        want = {"two": "CC0; CC BY-SA 4.0"}.get(a) or {"two": "CC BY-SA 4.0; CC0"}.get(b) or "CC BY-SA 4.0"
        assert r.license == want, (a, b, r.license)
        assert (r.texts[0], r.custom["hard_negatives"]) == captions_for(kind, a, b)
        y, sr = sf.read(r.path, dtype="float32")
        assert sr == SR and y.shape[0] == (2 * win if kind == "sequence" else win) == r.num_samples
        if kind == "sequence":  # each half is one event at the set level (16-bit rounding aside)
            for half in (y[:win], y[win:]):
                assert 20 * np.log10(np.sqrt(np.mean(half.astype(np.float64) ** 2))) == pytest.approx(EVENT_DBFS, abs=0.1)
    assert [r.custom["composition"] for r in rows] == ["sequence", "overlap"] * 3
    assert captions_for("sequence", "dog", "cat") == ("dog followed by cat", ["cat followed by dog", "dog and cat at the same time"])
    with pytest.raises(AudioclError, match="two labels"):
        make_compositions(items[:1], tmp_path / "c", 2, sample_rate=SR, event_seconds=EVENT_S)


def test_caption_choice_counts_a_tie_as_wrong():
    audio = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    caps = torch.tensor([
        [[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]],    # right caption closest: correct
        [[1.0, 1.0], [1.0, 0.0], [0.0, 1.0]],    # a negative closer: wrong
        [[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]],    # tie with a valid negative: wrong
    ])  # fmt: skip
    correct, _ = caption_choice(audio, caps)
    assert correct.tolist() == [True, False, False]
    valid = torch.tensor([[True, True, True], [True, True, True], [True, False, True]])
    assert caption_choice(audio, caps, valid)[0].tolist() == [True, False, True]  # the tie was padding
