"""What a command writes into a file (a recipe's log, CI): plain lines, ours only.

``audiocl train`` runs as a user's shell runs it, in a subprocess with stdout and stderr
redirected to one file (not a terminal): 2 steps of a model with the frozen
all-MiniLM-L6-v2 text tower (loaded with transformers, whose "Loading weights" bar is
a line of carriage returns in a file unless it is turned off) on 32 real FSDD clips.
The file must hold no ESC byte (colour codes), no carriage return, no library bar and
no line of Ray's own, and must hold our progress lines and the summary. (The Ray path,
where most of that noise came from, is checked in tests/test_train_distributed.py.)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml
from train_store import build_store

# lines Ray prints of its own: forwarded "(name pid=N)" prefixes, C++ logs, Ray Train's helpers
RAY_LINE = re.compile(r"\((?:\w+ )?pid=\d+|\.cc:\d+|PlacementGroupCleaner|TrainController|\[\d{4}-\d\d-\d\d [\d:,]+ [DIWEF] ")


def test_train_output_in_a_file_is_plain(shared_dir, tmp_path):
    names = [f"{d}_{s}_0.wav" for d in range(8) for s in ("jackson", "nicolas", "theo", "yweweler")]
    store, manifest = build_store(shared_dir, tmp_path / "store", names=names)
    cfg = {
        "model": {
            "embed_dim": 16,
            "towers": {
                "audio": {"modality": "audio", "encoder": {"type": "mlp", "input_dim": 16 * 32, "hidden": [32]},
                          "projection": {"type": "linear"}},
                "text": {"modality": "text", "encoder": {"type": "hf_text"}, "frozen": True, "cache": True,
                         "projection": {"type": "linear"}},
            },
        },
        "loss": {"name": "clip"},
        "data": {"store": str(store), "manifest": str(manifest), "val_manifest": str(manifest),
                 "batch_size": 16, "max_frames": 16, "length_policy": "rand_trunc"},
        "train": {"max_steps": 2, "log_every": 1, "output_dir": str(tmp_path / "run"), "progress": True},
    }  # fmt: skip
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    log = tmp_path / "train.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)  # the command must turn the bars off itself
    with open(log, "wb") as f:
        rc = subprocess.run(
            [sys.executable, "-m", "audiocl", "train", "--config", str(path)],
            stdout=f, stderr=subprocess.STDOUT, env=env, timeout=300,
        ).returncode  # fmt: skip
    raw = log.read_bytes()
    text = raw.decode("utf-8")
    assert rc == 0, text
    assert b"\x1b" not in raw and b"\r" not in raw, text
    assert "Loading weights" not in text and not any(RAY_LINE.search(line) for line in text.splitlines()), text
    lines = text.splitlines()
    assert any(line.startswith("training: 2 steps") for line in lines), text
    assert any(line.startswith("step 2/2 epoch 1 loss ") for line in lines), text
    summary = json.loads(lines[-1])
    assert summary["steps"] == 2 and isinstance(summary["last_loss"], float), summary
    assert isinstance(summary["best_metric"], float) and Path(summary["model_dir"]).is_dir()
