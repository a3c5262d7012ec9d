"""Files that pip packages ship (pretrained weights, recordings), found without importing them.

Several weight packages must never be imported (``aisfx`` pins numpy 1.23 and
librosa 0.9; others run code on import), so their folder is located with
``importlib.util.find_spec``, which reads the import system's metadata only.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from audiocl.errors import AudioclError


def package_dir(package: str, needed_for: str) -> Path:
    """The installed folder of top-level package ``package``; one ``AudioclError`` line
    naming ``needed_for`` (what wants it, and how to install it) when it is absent."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise AudioclError(needed_for)
    return Path(next(iter(spec.submodule_search_locations)))
