"""The extraction's Ray actor pool: same bytes as the in-process path, no Ray Data,
phases reported, and an actor that cannot start is one line.

Real FSDD recordings (8 kHz WAV) plus one missing file, 3 shards, one local Ray
started in a subprocess (as the CLI does).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from audiocl.audio.frontend import get_preset
from audiocl.data.extract import extract
from audiocl.data.store import content_hash

SCRIPT = r"""
import json, sys
from audiocl.audio.frontend import get_preset
from audiocl.data.extract import ShardActorPool, extract
from audiocl.errors import AudioclError
from audiocl.ray_init import start_ray

s = extract(sys.argv[1], sys.argv[2], get_preset("laion_clap"), workers=2, shard_size=4, progress=False)
out = {"summary": s, "ray_data_imported": "ray.data" in sys.modules}
# an actor whose store folder does not exist: its shard fails as one line, Ray stays up
import ray
from audiocl.data.extract import ShardWorker
start_ray(None, 1)
try:
    with ShardActorPool(ShardWorker, {"store_dir": sys.argv[2] + "-absent"}, 1) as pool:
        pool.run([{"shard": 0, "spec": "x", "spec_hash": "y"}], lambda row: None,
                 what="extraction", retry="run again")
    out["error"] = None
except AudioclError as err:
    out["error"] = str(err)
ray.shutdown()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("pool")
    wavs = sorted((shared_dir / "data" / "fsdd-dev" / "recordings").glob("*.wav"))[:9]
    rows = [{"id": p.stem, "path": str(p)} for p in wavs]
    rows.insert(5, {"id": "missing", "path": str(root / "missing.wav")})
    path = root / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_ray_pool_gives_the_in_process_bytes_without_ray_data(manifest: Path, tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    extract(manifest, ref, get_preset("laion_clap"), shard_size=4, use_ray=False, progress=False)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("RAY_ADDRESS", None)
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(manifest), str(tmp_path / "ray")],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    s = got["summary"]
    assert (s["done"], s["failed"], s["shards"], s["failed_by_reason"]) == (9, 1, 3, {"missing": 1})
    assert content_hash(tmp_path / "ray") == content_hash(ref)
    assert not got["ray_data_imported"]  # plain actors: Ray Data's executor is not started
    p = s["phases_seconds"]
    assert 0 < p["ray_init"] <= p["first_shard"] <= p["last_shard"] <= s["wall_seconds"]
    assert p["teardown"] > 0
    err = got["error"]
    assert err is not None and "\n" not in err
    assert err.startswith("extraction failed under Ray (") and "run again" in err
    assert "-absent" in err  # the reason names the folder the actor could not read
