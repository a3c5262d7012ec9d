"""Helpers written once (issue 13 step 4/5): override syntax, config errors, validation R@1, combined loss."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from audiocl.commands.extract import parse_overrides
from audiocl.config_schema import StrictModel, format_validation_error
from audiocl.errors import AudioclError
from audiocl.losses import CombinedLoss, build_loss
from audiocl.train.config import load_config
from audiocl.train.validate import text_match_r1


def test_extract_and_train_overrides_parse_values_the_same_way():
    pairs = ["n_mels=80", "f_max=null", "window=hann", "fmin=8.5e1", "mono=true", "pad="]
    assert parse_overrides(pairs) == {"n_mels": 80, "f_max": None, "window": "hann", "fmin": 85.0,
                                      "mono": True, "pad": None}
    cfg = load_config(None, ["optim.lr=8.5e1", "data.batch_size=80", "loss.kwargs.modalities=[a, b]"])
    assert cfg.optim.lr == 85.0 and cfg.data.batch_size == 80 and cfg.loss.kwargs["modalities"] == ["a", "b"]
    with pytest.raises(AudioclError, match="expected key=value"):
        parse_overrides(["n_mels"])
    with pytest.raises(AudioclError, match="not valid YAML"):
        parse_overrides(["n_mels=[80"])


def test_one_formatter_names_every_key_by_dotted_path():
    class Inner(StrictModel):
        n: int = 1

    class Outer(StrictModel):
        inner: Inner = Inner()

    with pytest.raises(ValidationError) as e:
        Outer.model_validate({"inner": {"n": "x", "m": 2}})
    msg = format_validation_error(e.value, "model")
    assert "\n" not in msg and "unknown key 'model.inner.m'" in msg and "'model.inner.n':" in msg


def _r1_brute(a, t, labels):
    """A query hits iff no item of another label scores >= its best own-label item."""
    sim = a @ t.T
    hits = []
    for q in range(len(labels)):
        own = max(float(sim[q, g]) for g in range(len(labels)) if labels[g] == labels[q])
        other = [float(sim[q, g]) for g in range(len(labels)) if labels[g] != labels[q]]
        hits.append(all(o < own for o in other))
    return sum(hits) / len(hits)


def test_validation_r1_counts_ties_against_the_model():
    # every embedding equal: all scores tie, so no query is a hit (argmax gave 1/3)
    a = torch.ones(6, 4)
    t = torch.ones(6, 4)
    labels = ["x", "y", "z", "x", "y", "z"]
    assert text_match_r1(a, t, labels) == (0.0, 0.0)
    # one label only: nothing to confuse it with, every query hits
    assert text_match_r1(a, t, ["x"] * 6) == (1.0, 1.0)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        a, t = torch.randn(12, 3, generator=g).round(), torch.randn(12, 3, generator=g).round()  # ties
        labels = [str(int(i)) for i in torch.randint(0, 4, (12,), generator=g)]
        a2t, t2a = text_match_r1(a, t, labels)
        assert a2t == pytest.approx(_r1_brute(a, t, labels))
        assert t2a == pytest.approx(_r1_brute(t, a, labels))


def test_combined_loss_names_terms_and_keeps_only_the_last_values():
    out = {"embeddings": {"audio": torch.nn.functional.normalize(torch.randn(4, 3), dim=1),
                          "text": torch.nn.functional.normalize(torch.randn(4, 3), dim=1)},
           "logit_scale": torch.tensor(10.0)}
    clip, sig = build_loss("clip"), build_loss("dcl")
    comb = CombinedLoss([("clip", 1.0, clip), ("dcl", 0.5, sig)])
    total = comb(out)
    assert set(comb.last_terms) == {"clip", "dcl"}
    assert float(total) == pytest.approx(float(clip(out)) + 0.5 * float(sig(out)), rel=1e-6)
    twice = CombinedLoss([("clip", 1.0, clip), ("clip", 2.0, clip)])
    twice(out)
    assert set(twice.last_terms) == {"0_clip", "1_clip"}


def test_require_names_the_extra() -> None:
    from audiocl.errors import AudioclError
    from audiocl.extras import require

    assert require("json", "none").dumps([1]) == "[1]"
    with pytest.raises(AudioclError, match=r"audiocl prepare x needs the optional package "
                       r"'no_such_pkg_xyz': pip install 'audiocl\[x\]'"):
        require("no_such_pkg_xyz.sub", "x", feature="audiocl prepare x")
