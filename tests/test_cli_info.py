"""``audiocl info`` on manifests (text and JSON) and on feature stores."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from audiocl.cli import main as cli_main
from audiocl.data.importers import prepare_fsdd
from audiocl.data.manifest import AudioItem, write_manifest


@pytest.fixture
def fsdd_manifest(shared_dir: Path, tmp_path: Path) -> tuple[Path, list[AudioItem]]:
    root = shared_dir / "data" / "fsdd-dev"
    if not root.is_dir():
        pytest.skip("fsdd-dev absent")
    items = list(prepare_fsdd(root))
    out = tmp_path / "fsdd.jsonl.gz"
    write_manifest(items, out)
    return out, items


def test_info_manifest_text(fsdd_manifest, capsys) -> None:
    path, items = fsdd_manifest
    assert cli_main(["info", str(path), "--top", "3"]) == 0
    out = capsys.readouterr().out
    total = sum(it.duration for it in items)
    assert "items: 2000" in out
    assert f"total {total:.1f} s" in out
    assert "sampling rates: 8000: 2000" in out and "channels: 1: 2000" in out
    assert "splits: test: 200, train: 1800" in out
    assert "labels: 10 distinct, 2000 assigned" in out
    assert "top 3 labels:" in out and out.count("  200") == 3


def test_info_manifest_json(fsdd_manifest, capsys) -> None:
    path, items = fsdd_manifest
    assert cli_main(["info", str(path), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    durs = [it.duration for it in items]
    assert s["kind"] == "manifest" and s["items"] == 2000
    assert s["duration"]["total_s"] == pytest.approx(sum(durs))
    assert s["duration"]["mean_s"] == pytest.approx(np.mean(durs))
    assert s["duration"]["min_s"] == min(durs) and s["duration"]["max_s"] == max(durs)
    assert s["labels"]["top"] == dict(Counter(it.labels[0] for it in items))
    assert s["texts"]["per_item"] == {"1": 2000}
    assert s["sources"] == {"fsdd": 2000}


def test_info_missing_path_one_line(tmp_path: Path, capsys) -> None:
    assert cli_main(["info", str(tmp_path / "none.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "none.jsonl" in err and err.strip().count("\n") == 0


def test_info_on_a_folder_that_is_not_a_store(tmp_path: Path, capsys) -> None:
    assert cli_main(["info", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a feature store" in err and err.strip().count("\n") == 0


def test_info_on_a_feature_store(tmp_path: Path, capsys) -> None:
    store_mod = pytest.importorskip("audiocl.data.store")
    params = store_mod.StoreParams(
        frontend={"sample_rate": 16000, "n_mels": 4, "hop_length": 160}, frontend_hash="h"
    )
    writer = store_mod.StoreWriter.create(tmp_path / "store", params)
    mels = [np.zeros((5, 4), np.float32), np.ones((7, 4), np.float32)]
    writer.write_shard(
        0, "spec", [{"id": "a"}, {"id": "b"}], mels, None,
        [{"id": "c", "path": "/c.wav", "reason": "silent", "message": "all zeros"}],
    )
    writer.finalize(1)
    assert cli_main(["info", str(tmp_path / "store"), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["kind"] == "feature_store" and s["items"] == 2 and s["failed"] == 1
    assert s["frames"]["total"] == 12
    assert cli_main(["info", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out
    assert "items: 2" in out and "silent: 1" in out
