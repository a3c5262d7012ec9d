"""The extraction's worker pools (audiocl.data.shard_pool): local processes (the
default) and Ray actors give the in-process store's bytes; a local run never
imports Ray; a worker that dies or cannot start is one line naming it; progress
arrives per item, before the shard's result.

Real FSDD recordings (8 kHz WAV) plus one missing file, 3 shards. The pool tests
use tiny worker classes written to a temporary module, run in real child
processes (no torch: ~0.3 s a child).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from audiocl.audio.frontend import get_preset
from audiocl.data.extract import extract
from audiocl.data.shard_pool import ProcessShardPool, resolve_runner, shard_pool
from audiocl.data.store import content_hash
from audiocl.errors import AudioclError

REPO = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, sys
from audiocl.audio.frontend_config import get_preset
from audiocl.data.extract import extract
s = extract(sys.argv[1], sys.argv[2], get_preset("laion_clap"), workers=2, shard_size=4, progress=False,
            runner=sys.argv[3])
out = {"summary": s, "ray_imported": "ray" in sys.modules, "ray_data_imported": "ray.data" in sys.modules,
       "torch_imported": "torch" in sys.modules}
if sys.argv[3] == "ray":
    # an actor whose store folder does not exist: its shard fails as one line
    from audiocl.data.extract import ShardWorker
    from audiocl.data.shard_pool import ShardActorPool
    from audiocl.errors import AudioclError
    from audiocl.ray_init import start_ray, stop_ray
    start_ray(None, 1)
    pool = ShardActorPool(ShardWorker, {"store_dir": sys.argv[2] + "-absent"}, 1)
    try:
        pool.run([{"shard": 0, "spec": "x", "spec_hash": "y"}], lambda row: None,
                 what="extraction", retry="run again")
        out["error"] = None
    except AudioclError as err:
        out["error"] = str(err)
    pool.close()
    stop_ray()
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


def _run(manifest: Path, out: Path, runner: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(manifest), str(out), runner],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("runner", ["processes", "ray"])
def test_pool_gives_the_in_process_bytes(manifest: Path, tmp_path: Path, runner: str) -> None:
    ref = tmp_path / "ref"
    extract(manifest, ref, get_preset("laion_clap"), shard_size=4, runner="inline", progress=False)
    got = _run(manifest, tmp_path / runner, runner)
    s = got["summary"]
    assert (s["done"], s["failed"], s["shards"], s["failed_by_reason"]) == (9, 1, 3, {"missing": 1})
    assert (s["runner"], s["workers"]) == (runner, 2)
    assert content_hash(tmp_path / runner) == content_hash(ref)
    p = s["phases_seconds"]
    assert 0 < p["first_shard"] <= p["last_shard"] <= s["wall_seconds"]
    assert p["teardown"] > 0
    if runner == "processes":
        # the driver plans and collects: neither Ray nor torch is imported in it
        assert not got["ray_imported"] and not got["torch_imported"]
    else:
        assert not got["ray_data_imported"]  # plain actors: Ray Data's executor is not started
        assert 0 < p["start"] <= p["first_shard"]
        err = got["error"]
        assert err is not None and "\n" not in err
        assert err.startswith("extraction failed under Ray (") and "run again" in err
        assert "-absent" in err  # the reason names the folder the actor could not read


WORKERS = textwrap.dedent('''
    import os, signal, sys
    import numpy as np

    class Counting:
        """Calls on_item once per item of the row's 'n', then returns the shard and its pid."""
        def __init__(self, single_thread=True):
            self.on_item = None
        def __call__(self, batch):
            for _ in range(int(batch["n"][0])):
                if self.on_item is not None:
                    self.on_item()
            return {"shard": batch["shard"], "pid": np.asarray([os.getpid()])}

    class DiesOnShard1(Counting):
        def __call__(self, batch):
            if int(batch["shard"][0]) == 1:
                print("about to die", file=sys.stderr, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            return super().__call__(batch)

    class CannotStart:
        def __init__(self, single_thread=True):
            raise FileNotFoundError("no such store: /nowhere")
''')


@pytest.fixture()
def workers_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "poolworkers.py").write_text(WORKERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    import importlib

    return importlib.import_module("poolworkers")


def test_process_pool_ticks_per_item_before_each_result(workers_module) -> None:
    events: list[tuple] = []
    rows = [{"shard": s, "n": n} for s, n in enumerate([3, 1, 4, 2, 5])]
    with shard_pool(workers_module.Counting, {}, 2, runner="processes",
                    on_tick=lambda s, n: events.append(("tick", s, n))) as pool:
        pool.run(rows, lambda r: events.append(("result", r["shard"], r["pid"])), what="test", retry="again")
    results = [e for e in events if e[0] == "result"]
    assert sorted(e[1] for e in results) == [0, 1, 2, 3, 4]
    assert len({e[2] for e in results}) == 2  # both children worked
    for s, n in enumerate([3, 1, 4, 2, 5]):
        ticks = [i for i, e in enumerate(events) if e[:2] == ("tick", s)]
        assert len(ticks) == n and max(ticks) < events.index(next(e for e in results if e[1] == s))


def test_dead_or_unstartable_worker_is_one_line(workers_module, tmp_path: Path) -> None:
    log = tmp_path / "workers.log"  # the children's stderr, quoted in the error
    pool = ProcessShardPool(workers_module.DiesOnShard1, {}, 1, log_path=log)
    try:
        with pytest.raises(AudioclError) as err:
            pool.run([{"shard": 0, "n": 1}, {"shard": 1, "n": 1}], lambda r: None,
                     what="extraction", retry="run again with --resume")
    finally:
        pool.close()
    msg = str(err.value)
    assert "\n" not in msg and "killed by SIGKILL while working on shard 1" in msg
    assert f"its last output line: 'about to die'; all in {log})" in msg
    assert msg.endswith("finished shards are kept: run again with --resume")

    with pytest.raises(AudioclError, match=r"could not start: FileNotFoundError: no such store: /nowhere$"):
        with shard_pool(workers_module.CannotStart, {}, 2, runner="processes") as pool:
            pool.run([{"shard": 0, "n": 1}], lambda r: None, what="extraction", retry="again")


def test_runner_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert resolve_runner("auto", None) == "processes"
    assert resolve_runner("auto", "10.0.0.1:6379") == "ray"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert resolve_runner("auto", None) == "ray"
    assert resolve_runner("processes", None) == "processes"
    with pytest.raises(AudioclError, match="address .10.0.0.2:1. was given with runner 'processes'"):
        resolve_runner("processes", "10.0.0.2:1")
    with pytest.raises(AudioclError, match="unknown runner 'threads'"):
        resolve_runner("threads", None)
