"""Feature extraction with a pool of warm workers: manifest -> sharded feature store.

The manifest is streamed once by the driver and cut into fixed shards: shard
``i`` is items ``[i*K, (i+1)*K)``, so the store's bytes do not depend on the
number of workers, on where they run, or on which shards an earlier,
interrupted run finished. Each shard's item list goes to a small spec file in
the store's ``.work/`` folder; only ``{shard, spec path, spec hash}`` rows travel
to the workers, which read audio from and write shards to the (shared) file
system themselves, so no audio or feature array is ever pickled between processes.

The workers (:class:`ShardWorker`, one CPU and one torch thread each) run in
local child processes by default, or as Ray actors on a cluster
(:mod:`audiocl.data.shard_pool` says how the pool is chosen and why a local run
does not start Ray). Each does decode -> check -> mono -> resample -> log-mel
for a whole shard and writes it atomically (see :mod:`audiocl.data.store`).
Every per-item failure is caught and recorded with its reason, so one bad file
never costs its shard.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from audiocl.data.shard_pool import ShardProgress, resolve_runner, shard_pool
from audiocl.data.store import (
    SHARDS_DIR,
    ShardResult,
    StoreParams,
    StoreWriter,
    canonical_json,
    read_params,
    shard_name,
)
from audiocl.errors import AudioclError
from audiocl.fsutil import atomic_write_bytes, remove_stale_tmp

WORK_DIR = ".work"


# --------------------------------------------------------------------------- the worker


class ShardWorker:
    """Turns one shard spec (a row ``{"shard", "spec", "spec_hash"}``) into one written shard.

    Built once per worker process or actor, so the front-end (mel filters, window)
    is built once; ``__call__`` gets a batch of one row and returns the shard's
    counts. ``on_item``, when the pool sets it, is called after every item (per-clip
    progress).
    """

    def __init__(self, store_dir: str, single_thread: bool = True) -> None:
        import torch

        if single_thread:
            # one thread per worker: the pool, not torch, provides the parallelism
            torch.set_num_threads(1)
        import audiocl.audio.io  # noqa: F401  (decode + resample, imported while the driver plans)
        from audiocl.audio.frontend import FrontendConfig, LogMel

        # parameters come from the store itself (shared file system), not from the driver
        self.params = read_params(store_dir)
        self.writer = StoreWriter(store_dir, self.params)
        self.cfg = FrontendConfig.from_dict(self.params.frontend)
        # cheap to build (numpy filterbank, no librosa): built here, during warm-up
        self.logmel = LogMel(self.cfg).eval() if "logmel" in self.params.kinds else None
        self.on_item: Callable[[], None] | None = None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = []
        for shard, spec, spec_hash in zip(batch["shard"], batch["spec"], batch["spec_hash"]):
            try:
                r = self.process(int(shard), str(spec), str(spec_hash))
                results.append({"shard": r.shard, "done": r.done, "failed": r.failed,
                                "reasons": canonical_json(r.reasons), "cpu": canonical_json(r.cpu),
                                "t_start": r.t_start, "t_end": r.t_end, "error": ""})
            except Exception as err:  # a shard-level failure (disk full, ...) is reported, not dropped
                results.append({"shard": int(shard), "done": 0, "failed": 0, "reasons": "{}",
                                "cpu": "{}", "t_start": 0.0, "t_end": 0.0,
                                "error": f"{type(err).__name__}: {err}"})
        return {k: np.asarray([r[k] for r in results]) for k in results[0]}

    def process(self, shard: int, spec: str, spec_hash: str) -> ShardResult:
        with open(spec, encoding="utf-8") as f:
            items = [json.loads(line) for line in f]
        return process_shard(items, shard, spec_hash, self.writer, self.cfg, self.logmel, self.on_item)


def _decode_item(item: dict[str, Any], params: StoreParams) -> tuple[np.ndarray, int]:
    """Decode and check one item: ``([channels, samples], sr)``; AudioDecodeError on failure."""
    from audiocl.audio.io import check_waveform
    from audiocl.data.sources import item_name, load_item

    # a file, a tar member or an arrow row (the item's "ref"), read by this worker itself
    x, sr = load_item(item, max_duration=params.max_duration)
    check_waveform(
        x, sr, min_duration=params.min_duration, max_duration=params.max_duration,
        path=item_name(item),
    )
    return x, sr


def _where(item: dict[str, Any]) -> str:
    from audiocl.data.sources import item_name

    return item_name(item)


def process_shard(
    items: list[dict[str, Any]],
    shard: int,
    spec_hash: str,
    writer: StoreWriter,
    cfg: Any,
    logmel: Any | None,
    on_item: Callable[[], None] | None = None,
) -> ShardResult:
    """Extract the items of one shard, one at a time, and write it; per-item errors
    are recorded in manifest order with their reason; ``on_item()`` after each item.

    Runs in a worker process, a Ray actor or in-process alike: it only touches the
    file system. Log-mel is computed per clip (batching equal-length
    clips measured no faster on CPU, and per-clip output is bit-identical to
    :func:`~audiocl.audio.frontend.compute_logmel`).
    """
    import torch

    from audiocl.audio.io import AudioDecodeError, resample, to_mono
    from audiocl.errors import AudioclError

    t_start = time.time()
    params = writer.params
    builder = writer.begin_shard(shard, spec_hash)
    cpu = dict.fromkeys(("decode", "resample", "logmel", "write"), 0.0)
    clock = time.process_time
    for item in items:
        t0 = clock()
        stage = "decode"
        try:
            x, sr = _decode_item(item, params)
            t1 = clock()
            cpu["decode"] += t1 - t0
            stage = "resample"
            wav = resample(to_mono(x), sr, int(cfg.sample_rate))
            t2 = clock()
            cpu["resample"] += t2 - t1
            mel = None
            if logmel is not None:
                stage = "logmel"
                try:
                    with torch.inference_mode():
                        mel = logmel(torch.from_numpy(wav)).numpy()
                except AudioclError as err:  # shorter than the STFT's padding
                    raise AudioDecodeError(item["path"], "too_short", str(err)) from None
                if mel.shape[0] == 0:
                    raise AudioDecodeError(item["path"], "too_short", "the front-end made 0 frames")
                if not np.isfinite(mel).all():
                    raise AudioDecodeError(item["path"], "nonfinite", "non-finite log-mel values")
            t3 = clock()
            cpu["logmel"] += t3 - t2
            builder.add({"id": item["id"]}, mel, wav if "waveform" in params.kinds else None)
            cpu["write"] += clock() - t3
        except AudioDecodeError as err:
            builder.fail({"id": item["id"], "path": _where(item), "reason": err.reason,
                          "message": err.detail})
        except (MemoryError, OSError) as err:
            if isinstance(err, OSError) and stage == "decode":
                builder.fail({"id": item["id"], "path": _where(item), "reason": "unreadable",
                              "message": f"{type(err).__name__}: {err}"})
            else:
                builder.abort()  # no temporary file of this shard is left behind
                raise  # disk full, out of memory: the shard fails and is reported
        except Exception as err:  # any other per-item failure must not cost the shard
            builder.fail({"id": item["id"], "path": _where(item), "reason": "error",
                          "message": f"{stage}: {type(err).__name__}: {err}"})
        if on_item is not None:
            on_item()
    t0 = clock()
    try:
        result = builder.commit()
    except BaseException:
        builder.abort()
        raise
    cpu["write"] += clock() - t0
    result.cpu = cpu
    result.t_start, result.t_end = t_start, time.time()
    return result


# --------------------------------------------------------------------------- the driver


def plan_shards(
    manifest: str | os.PathLike, work_dir: Path, shard_size: int
) -> Iterator[tuple[int, Path, str, int]]:
    """Stream the manifest into shard spec files; yields ``(shard, spec, spec_hash, n)``.

    The spec holds only what a worker needs (id, path, start, duration, and ``ref``
    for an item inside a tar or arrow file); its
    sha256 identifies the shard's input, and resume compares it with the marker.
    """
    from audiocl.data.manifest import read_manifest

    work_dir.mkdir(parents=True, exist_ok=True)
    buf: list[str] = []
    shard = 0

    def flush() -> tuple[int, Path, str, int]:
        body = "".join(buf).encode("utf-8")
        path = work_dir / f"{shard_name(shard)}.spec.jsonl"
        atomic_write_bytes(path, body, fsync=False)  # redone by every run: no fsync
        return shard, path, hashlib.sha256(body).hexdigest(), len(buf)

    for item in read_manifest(Path(manifest).resolve()):
        spec = {"id": item.id, "path": item.path, "start": item.start, "duration": item.duration}
        if item.ref is not None:  # a tar member / arrow row: part of the shard's identity
            spec["ref"] = item.ref
        buf.append(canonical_json(spec) + "\n")
        if len(buf) == shard_size:
            yield flush()
            buf = []
            shard += 1
    if buf:
        yield flush()


@contextlib.contextmanager
def _store_lock(out: Path) -> Iterator[None]:
    """Exclusive lock on the store for this run: two extractions into one folder
    would overwrite each other's shards. The kernel drops it if the process dies."""
    import fcntl

    fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AudioclError(f"another extraction is writing to {out} right now") from None
        yield
    finally:
        os.close(fd)


def extract(
    manifest: str | os.PathLike,
    out: str | os.PathLike,
    frontend: Any,
    *,
    workers: int = 2,
    resume: bool = False,
    address: str | None = None,
    shard_size: int = 256,
    kinds: tuple[str, ...] = ("logmel",),
    dtype: str = "float32",
    min_duration: float | None = None,
    max_duration: float | None = None,
    progress: bool = True,
    progress_file: TextIO | None = None,
    runner: str = "auto",
) -> dict[str, Any]:
    """Extract every item of ``manifest`` into the store at ``out``; returns the summary.

    ``frontend`` is a ``FrontendConfig``. ``runner``: where the ``workers`` run
    (:func:`audiocl.data.shard_pool.shard_pool`): ``"auto"`` (Ray on the cluster at
    ``address``/``RAY_ADDRESS``, else local processes), ``"processes"``, ``"ray"``
    (a local Ray instance without an address) or ``"inline"`` (this process).
    The store's bytes are the same whichever runs it. ``progress``: a bar on a
    terminal, else a plain line every few seconds (:mod:`audiocl.progress`) on
    ``progress_file`` (default stdout).
    """
    t0 = time.perf_counter()
    if int(workers) < 1:
        raise AudioclError(f"--workers must be >= 1, not {workers}")
    runner = resolve_runner(runner, address)  # before anything is written
    params = StoreParams.from_frontend(
        frontend, kinds=tuple(kinds), dtype=dtype, shard_size=int(shard_size),
        min_duration=min_duration, max_duration=max_duration,
    )
    out = Path(out).resolve()
    existed = out.exists()
    try:
        writer = StoreWriter.create(out, params, resume=resume)
    except OSError as err:  # disk full or read-only before the first shard
        raise _write_error(out, err) from None
    with _store_lock(out), contextlib.ExitStack() as pool_stack:
        work = out / WORK_DIR
        # left by a killed run (the lock says no other run is writing)
        remove_stale_tmp(out / SHARDS_DIR)
        remove_stale_tmp(out)
        work_existed = work.exists()
        todo: list[dict[str, Any]] = []
        skipped: list[ShardResult] = []
        spec_hashes: list[str] = []
        total_items = 0
        try:
            for shard, spec, spec_hash, n in plan_shards(manifest, work, params.shard_size):
                spec_hashes.append(spec_hash)
                total_items += n
                if resume and writer.is_done(shard, spec_hash):
                    skipped.append(writer.shard_result(shard))
                else:
                    todo.append({"shard": shard, "spec": str(spec), "spec_hash": spec_hash, "n": n})
            num_shards = len(spec_hashes)
            if num_shards == 0:
                raise AudioclError(f"manifest {manifest} has no items")
            if resume:
                # before anything in the store changes: a resumed store must come from
                # the same manifest, or its index and last shard would be rewritten
                writer.check_resume(spec_hashes, manifest)
        except (AudioclError, OSError) as err:
            # a bad manifest writes nothing: remove what this run created
            if not work_existed:
                shutil.rmtree(work, ignore_errors=True)
            if not existed:
                shutil.rmtree(out, ignore_errors=True)
            if isinstance(err, OSError):
                raise _write_error(out, err) from None
            raise
        if todo:
            writer.invalidate_index()

        results: list[ShardResult] = []
        failures: list[str] = []
        t_work = time.perf_counter()
        if progress and skipped:
            print(f"resume: {len(skipped)} of {num_shards} shards already done", file=sys.stderr)
        bar = ShardProgress({t["shard"]: t["n"] for t in todo}, f"extract -> {out.name}",
                            enabled=progress, file=progress_file)

        timing: dict[str, float] = {"start": 0.0, "first_shard": 0.0, "last_shard": 0.0}

        def record(row: dict[str, Any]) -> None:
            now = time.perf_counter() - t0
            timing["first_shard"] = timing["first_shard"] or now
            timing["last_shard"] = now
            shard = int(row["shard"])
            if row["error"]:
                failures.append(f"{shard_name(shard)}: {row['error']}")
            else:
                results.append(ShardResult(shard, int(row["done"]), int(row["failed"]),
                                           json.loads(str(row["reasons"])), cpu=json.loads(str(row["cpu"])),
                                           t_start=float(row["t_start"]), t_end=float(row["t_end"])))
            bar.shard_done(shard)

        try:
            if todo:
                # the pool starts once the manifest is known to be good and to hold work
                try:
                    pool = pool_stack.enter_context(shard_pool(
                        ShardWorker, {"store_dir": str(out)}, min(int(workers), len(todo)),
                        runner=runner, address=address, on_tick=bar.tick, timing=timing,
                        # kept if the run fails (with the rest of .work), removed with it otherwise
                        log_path=work / "workers.log"))
                except AudioclError:
                    # Ray could not start or be joined: a store this run created and
                    # that holds no finished shard is removed
                    if not existed and not any((out / SHARDS_DIR).glob("*.done")):
                        shutil.rmtree(out, ignore_errors=True)
                    raise
                pool.run([{"shard": t["shard"], "spec": t["spec"], "spec_hash": t["spec_hash"]}
                          for t in todo], record,
                         what="extraction", retry="fix the cause and run again with --resume")
                ready = getattr(pool, "ready_at", None)  # worker processes report it; Ray does not
                if ready:
                    timing["workers_ready"] = max(ready) - t0
            bar.close()
        except BaseException as err:
            # the pool sees the error (Ctrl-C, a failed shard): its workers are stopped at once
            bar.close(ok=False)
            pool_stack.__exit__(type(err), err, err.__traceback__)
            raise
        t_down = time.perf_counter()
        pool_stack.close()  # the workers, then Ray if this run started it
        timing["teardown"] = time.perf_counter() - t_down
        # clips/s counts from the moment the pool exists (worker start-up included), so a
        # one-off Ray start does not hide the steady rate; the wall time has everything
        wall_work = time.perf_counter() - t_work - timing.get("start", 0.0)
        if failures:
            raise AudioclError(
                f"{len(failures)} shard(s) could not be written (run again with --resume): "
                + "; ".join(failures[:3])
            )
        try:
            writer.finalize(num_shards)
        except OSError as err:
            raise _write_error(out, err) from None
        shutil.rmtree(work, ignore_errors=True)
        all_results = results + skipped
        reasons: Counter[str] = Counter()
        for r in all_results:
            reasons.update(r.reasons)
        done_now = sum(r.done + r.failed for r in results)
        summary = {
            "store": str(out),
            "items": total_items,
            "done": sum(r.done for r in all_results),
            "failed": sum(r.failed for r in all_results),
            "failed_by_reason": dict(sorted(reasons.items())),
            "shards": num_shards,
            "shards_resumed": len(skipped),
            "processed_this_run": done_now,
            "runner": runner,
            "workers": 1 if runner == "inline" else int(workers),
            "start_seconds": round(timing.get("start", 0.0), 3),
            "extract_seconds": round(wall_work, 3),
            # seconds: the pool's creation (Ray's start, if Ray); from the call to every
            # worker process built (0 under Ray), the first and the last shard written;
            # and the teardown (workers, Ray)
            "phases_seconds": {k: round(timing.get(k, 0.0), 3)
                               for k in ("start", "workers_ready", "first_shard", "last_shard", "teardown")},
            "wall_seconds": round(time.perf_counter() - t0, 3),
            "clips_per_second": round(done_now / wall_work, 2) if wall_work > 0 and done_now else 0.0,
            # from the first shard begun to the last one written: the pipeline's rate
            # once the actors are up (their start-up, a few seconds, is not in it)
            "steady_clips_per_second": _steady_rate(results, done_now),
            # worker CPU time per processed clip and stage: comparable on a busy machine,
            # where wall-clock rates mostly measure the other users
            "cpu_ms_per_clip": {
                k: round(1000 * sum(r.cpu.get(k, 0.0) for r in results) / done_now, 3)
                for k in ("decode", "resample", "logmel", "write")
            } if done_now else {},
        }
        with open(out / "runs.jsonl", "a", encoding="utf-8") as f:
            f.write(canonical_json({"time": time.time(), **summary}) + "\n")
        return summary


def _write_error(out: Path, err: OSError) -> AudioclError:
    """A failed write (disk full, quota, permissions) as one line naming the file."""
    where = err.filename or out
    return AudioclError(
        f"cannot write {where}: {err.strerror or err}; nothing partial was kept "
        "(free space, then run again with --resume)"
    )


def _steady_rate(results: list[ShardResult], n: int) -> float:
    spans = [(r.t_start, r.t_end) for r in results if r.t_end > 0]
    if not spans or not n:
        return 0.0
    span = max(e for _, e in spans) - min(s for s, _ in spans)
    return round(n / span, 2) if span > 0 else 0.0


def format_summary(s: dict[str, Any]) -> str:
    """The end-of-run summary as a few lines of text."""
    lines = [
        f"store: {s['store']}",
        f"items: {s['items']}  done: {s['done']}  failed: {s['failed']}  shards: {s['shards']}"
        + (f" ({s['shards_resumed']} resumed)" if s["shards_resumed"] else ""),
    ]
    if s["failed_by_reason"]:
        lines.append("failed by reason: " + ", ".join(f"{k} {v}" for k, v in s["failed_by_reason"].items()))
    lines.append(
        f"this run: {s['processed_this_run']} clips in {s['extract_seconds']:.1f} s "
        f"({s['clips_per_second']:.1f} clips/s, {s['steady_clips_per_second']:.1f} once the "
        f"workers were up; {s['workers']} {s['runner']} workers); "
        f"wall {s['wall_seconds']:.1f} s (pool start {s['start_seconds']:.1f} s)"
    )
    return "\n".join(lines)
