"""The encoder registry has no import circle: each built-in encoder module, imported
first (every ``audiocl`` module unloaded before, as in a fresh interpreter), leaves
every built-in registered."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

MODULES = ("base", "aisfx", "cnn", "hf_text", "htsat", "small_text", "speech", "vector", "whisper")
BUILTIN = ["aisfx", "cnn", "hf_speech", "hf_text", "htsat", "mlp", "small_text", "speech_cnn", "whisper"]


def _unload_audiocl() -> None:
    for name in [n for n in sys.modules if n == "audiocl" or n.startswith("audiocl.")]:
        del sys.modules[name]


@pytest.mark.parametrize("module", MODULES)
def test_each_encoder_module_imports_first_without_a_circle(module: str) -> None:
    saved = {n: m for n, m in sys.modules.items() if n == "audiocl" or n.startswith("audiocl.")}
    try:
        _unload_audiocl()
        importlib.import_module(f"audiocl.models.encoders.{module}")
        base = sys.modules["audiocl.models.encoders.base"]
        assert base.encoder_names() == BUILTIN
    finally:
        # the rest of the suite keeps the module objects (and error classes) it imported
        _unload_audiocl()
        sys.modules.update(saved)


def test_base_imports_no_encoder() -> None:
    src = (Path(__file__).resolve().parents[1] / "audiocl/models/encoders/base.py").read_text()
    assert "BuildFn" not in src and "from audiocl.models.encoders import" not in src
