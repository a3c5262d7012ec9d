"""Training config: unknown keys are rejected by name, overrides parse as YAML."""

from __future__ import annotations

import pytest

from audiocl.cli import main
from audiocl.errors import AudioclError, InputError
from audiocl.train.config import apply_overrides, load_config, parse_override


def _write(tmp_path, text: str):
    p = tmp_path / "train.yaml"
    p.write_text(text)
    return p


def test_unknown_key_named_with_file(tmp_path):
    p = _write(tmp_path, "optim:\n  lr: 1e-3\n  lr_rate: 2\n")
    with pytest.raises(InputError) as e:
        load_config(p)
    msg = str(e.value)
    assert "optim.lr_rate" in msg and str(p) in msg and "unknown key" in msg


def test_unknown_section_and_override_key(tmp_path):
    p = _write(tmp_path, "trainn: {epochs: 2}\n")
    with pytest.raises(InputError, match="unknown key 'trainn'"):
        load_config(p)
    ok = _write(tmp_path, "train: {epochs: 2}\n")
    with pytest.raises(InputError, match=r"command line.*unknown key 'data.batchsize'"):
        load_config(ok, ["data.batchsize=3"])


def test_overrides_parse_values(tmp_path):
    p = _write(tmp_path, "optim: {lr: 0.1}\nmodel: {embed_dim: 8}\n")
    cfg = load_config(
        p,
        [
            "optim.lr=1e-3", "data.batch_size=64", "train.precision=bf16",
            "optim.betas=[0.8, 0.9]", "data.micro_batch_size=null", "model.towers.audio.frozen=true",
            "train.output_dir=exp/a=b",
        ],
    )  # fmt: skip
    assert cfg.optim.lr == pytest.approx(1e-3)
    assert cfg.data.batch_size == 64 and cfg.data.micro_batch_size is None
    assert cfg.train.precision == "bf16"
    assert cfg.optim.betas == (0.8, 0.9)
    assert cfg.model == {"embed_dim": 8, "towers": {"audio": {"frozen": True}}}
    assert cfg.train.output_dir == "exp/a=b"


def test_bad_values_and_override_syntax(tmp_path):
    p = _write(tmp_path, "train: {precision: fp16}\n")
    with pytest.raises(InputError, match="train.precision"):
        load_config(p)
    with pytest.raises(AudioclError, match="key=value"):
        parse_override("optim.lr")
    with pytest.raises(AudioclError, match="'optim.lr' is not a section"):
        apply_overrides({"optim": {"lr": 1.0}}, ["optim.lr.x=2"])
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])


def test_cli_prints_one_line(tmp_path, capsys):
    p = _write(tmp_path, "data: {batch_size: 4, shufle: true}\n")
    assert main(["train", "--config", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown key 'data.shufle'" in err[0] and str(p) in err[0]
