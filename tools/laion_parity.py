#!/usr/bin/env python
"""Print how closely an audiocl-converted LAION-CLAP checkpoint reproduces laion_clap.

Usage: python tools/laion_parity.py [REFERENCE_DIR]
(default REFERENCE_DIR: ../shared/reference/laion_clap next to the repository)

The reference folder holds a LAION-layout ``checkpoint.pt`` and ``io.npz`` with
the waveforms, token ids and the embeddings that the ``laion_clap`` package
itself computed. The checkpoint is converted with ``audiocl convert laion`` and
the max absolute differences of audio and text embeddings are printed as JSON.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str]) -> int:
    import numpy as np
    import torch

    from audiocl.cli import main as cli
    from audiocl.models import embed_texts, embed_waveforms, load_model

    ref = Path(argv[0]) if argv else Path(__file__).resolve().parents[2] / "shared" / "reference" / "laion_clap"
    if not (ref / "checkpoint.pt").is_file():
        print(f"laion_parity: no checkpoint.pt under {ref}", file=sys.stderr)
        return 2
    io = dict(np.load(ref / "io.npz"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model"
        if cli(["convert", "laion", "--checkpoint", str(ref / "checkpoint.pt"), "--out", str(out)]) != 0:
            return 1
        model = load_model(out)
        # laion_clap feeds int16 / 32767.0; the 3 s clip goes through repeatpad
        wavs = [io[k].astype(np.float32) / 32767.0 for k in ("audio_10s_int16", "audio_3s_int16")]
        audio = embed_waveforms(model, wavs, 48000).numpy()
        text = embed_texts(model, {"input_ids": torch.from_numpy(io["input_ids"]),
                                   "attention_mask": torch.from_numpy(io["attention_mask"])}).numpy()
    want_audio = np.concatenate([io["audio_embed_10s"], io["audio_embed_3s"]])
    print(json.dumps({
        "audio_max_abs_diff": float(np.abs(audio - want_audio).max()),
        "text_max_abs_diff": float(np.abs(text - io["text_embed"]).max()),
        "audio_bound": 1e-4,
        "text_bound": 1e-5,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
