"""Running shard jobs on warm workers: local processes, Ray actors, or this process.

Extraction (:mod:`audiocl.data.extract`) and frozen-tower extraction
(:mod:`audiocl.data.tower_features`) both hand a list of shard rows to a pool of
workers built once from a worker class and its keyword arguments; each worker
is called as ``worker(batch)`` with a row's values as length-1 arrays and
returns a result row the same way; ``record`` gets each result as it arrives.
:func:`shard_pool` picks the pool:

* ``"processes"`` (:class:`ProcessShardPool`, the default for a local run):
  ``workers`` child Python processes started at once (``python -m
  audiocl.data.shard_pool``), each building its worker while the driver goes
  on. Rows and results travel as pickles over the children's stdin/stdout; audio
  and features go through the file system. No Ray: on a 2-core machine a local
  Ray instance costs ~4 s of start-up and ~0.5 GB of daemons
  (benchmarks/extract_vs_peers.py), more than a whole small extraction.
  Children report each finished clip, so progress moves per clip.
* ``"ray"`` (:class:`ShardActorPool`): one Ray actor per worker on a cluster
  (``address`` or ``RAY_ADDRESS``), or on a local Ray instance when asked for.
  Progress moves per shard.
* ``"inline"`` (:class:`InlineShardPool`): the same worker in this process, one
  shard after another (tests, debugging).

``"auto"`` is ``"ray"`` when a cluster address is given (argument or
``RAY_ADDRESS``), else ``"processes"``.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np

from audiocl.errors import AudioclError

__all__ = ["RUNNERS", "InlineShardPool", "ProcessShardPool", "ShardActorPool", "ShardProgress", "one_ray_for_all",
           "resolve_runner", "shard_pool"]

RUNNERS = ("auto", "processes", "ray", "inline")
#: thread pools pinned to one thread in the children: the pool, not BLAS/OpenMP,
#: gives the parallelism (a default-threaded BLAS doubled the CPU time of a librosa
#: route in benchmarks/extract_vs_peers.py, and each thread pool costs memory)
ONE_THREAD_ENV = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                   "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")}

Record = Callable[[dict[str, Any]], None]
Tick = Callable[[int, int], None]


class ShardPool(Protocol):
    """What every pool offers: ``run`` the rows, then ``close``."""

    workers: int

    def run(self, rows: list[dict[str, Any]], record: Record, *, what: str, retry: str) -> None: ...

    def close(self) -> None: ...


def resolve_runner(runner: str, address: str | None) -> str:
    """``"auto"`` -> ``"ray"`` with a cluster address (argument or ``RAY_ADDRESS``),
    else ``"processes"``; other names are checked and returned."""
    if runner not in RUNNERS:
        raise AudioclError(f"unknown runner {runner!r}: use one of {', '.join(RUNNERS)}")
    if address and runner in ("processes", "inline"):
        raise AudioclError(f"a Ray cluster address ({address}) was given with runner {runner!r}: "
                           "drop the address or use runner 'ray' (or 'auto')")
    if runner == "auto":
        return "ray" if (address or os.environ.get("RAY_ADDRESS")) else "processes"
    return runner


def _as_batch(row: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.asarray([v]) for k, v in row.items()}


def _first_row(batch: dict[str, np.ndarray]) -> dict[str, Any]:
    return {k: v[0].item() if isinstance(v[0], np.generic) else v[0] for k, v in batch.items()}


# --------------------------------------------------------------------------- in this process


class InlineShardPool:
    """The worker built in this process (its own thread settings kept) and the rows
    run one after another."""

    def __init__(self, worker: type, kwargs: dict[str, Any], on_tick: Tick | None = None) -> None:
        self.workers = 1
        self.worker = worker(**kwargs, single_thread=False)
        self._shard = -1
        if on_tick is not None and hasattr(self.worker, "on_item"):
            self.worker.on_item = lambda: on_tick(self._shard, 1)

    def run(self, rows: list[dict[str, Any]], record: Record, *, what: str, retry: str) -> None:
        for row in rows:
            self._shard = int(row["shard"])
            record(_first_row(self.worker(_as_batch(row))))

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- local processes


class ProcessShardPool:
    """``workers`` child processes, each holding one ``worker(**kwargs)``, started at
    construction; :meth:`run` gives each free child the next row.

    Protocol (pickles, in order): the driver writes rows, then ``None`` (stop), to a
    child's stdin; the child writes ``("ready",)``, ``("tick", shard, n)`` per finished
    item (when the worker has an ``on_item`` hook), ``("result", batch)`` per row, or
    ``("init_error", text)`` if the worker cannot be built. The child's own stdout is
    pointed at its stderr, so a stray ``print`` cannot corrupt the stream. A child
    that exits with a row outstanding fails the run with one line (the shards written
    so far are kept, as with Ray).
    """

    def __init__(self, worker: type, kwargs: dict[str, Any], workers: int,
                 on_tick: Tick | None = None, log_path: Path | None = None) -> None:
        import audiocl

        self.workers = max(1, int(workers))
        # the children's stderr (a decoder library's warnings, a crash's traceback)
        # goes to log_path when given, as Ray kept its actors' output off the terminal
        self.log_path = log_path
        self.log = open(log_path, "ab") if log_path is not None else None  # noqa: SIM115 (closed in close())
        self.on_tick = on_tick
        self.ready_at: list[float] = []  # perf_counter() of each child's "ready"
        root = str(Path(audiocl.__file__).resolve().parent.parent)
        env = {**os.environ, **ONE_THREAD_ENV,
               # the children import the same audiocl as this process
               "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
        spec = pickle.dumps((worker.__module__, worker.__qualname__, kwargs))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.events: queue.Queue[tuple[int, Any]] = queue.Queue()
        self._threads: list[threading.Thread] = []
        try:
            for i in range(self.workers):
                p = subprocess.Popen([sys.executable, "-m", "audiocl.data.shard_pool"], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log)
                self.procs.append(p)
                assert p.stdin is not None and p.stdout is not None
                p.stdin.write(spec)
                p.stdin.flush()
                t = threading.Thread(target=self._read, args=(i, p.stdout), daemon=True)
                t.start()
                self._threads.append(t)
        except BaseException:
            self.close()
            raise

    def _read(self, i: int, stream: BinaryIO) -> None:
        """Forward child ``i``'s messages to the event queue; ``None`` at its end."""
        try:
            while True:
                self.events.put((i, pickle.load(stream)))
        except (EOFError, OSError, pickle.UnpicklingError):
            self.events.put((i, None))

    def _send(self, i: int, row: dict[str, Any] | None) -> bool:
        stdin = self.procs[i].stdin
        try:
            assert stdin is not None
            stdin.write(pickle.dumps(row))
            stdin.flush()
            return True
        except (BrokenPipeError, OSError):
            return False  # the child is gone; its reader reports it

    def run(self, rows: list[dict[str, Any]], record: Record, *, what: str, retry: str) -> None:
        todo = list(reversed(rows))
        busy: dict[int, dict[str, Any]] = {}
        alive = set(range(len(self.procs)))

        def feed(i: int) -> None:
            if todo and i in alive:
                row = todo.pop()
                busy[i] = row
                if not self._send(i, row):
                    alive.discard(i)

        for i in range(len(self.procs)):
            feed(i)
        while busy:
            i, msg = self.events.get()
            if msg is None:  # the child's output ended: it exited
                alive.discard(i)
                if i in busy:
                    raise AudioclError(
                        f"{what} failed: worker process {self.procs[i].pid} "
                        f"{_exit_text(self.procs[i])} while working on shard {busy[i]['shard']}"
                        f"{self._last_output()}; finished shards are kept: {retry}")
                continue
            kind = msg[0]
            if kind == "ready":
                self.ready_at.append(time.perf_counter())
            elif kind == "tick":
                if self.on_tick is not None:
                    self.on_tick(int(msg[1]), int(msg[2]))
            elif kind == "result":
                busy.pop(i, None)
                feed(i)  # before recording: the child never waits on the driver
                record(_first_row(msg[1]))
            elif kind == "init_error":
                raise AudioclError(f"{what} failed: a worker process could not start: {msg[1]}")

    def _last_output(self) -> str:
        """`` (its last output line: ...; all in LOG)`` when the children log to a file."""
        if self.log_path is None:
            return ""
        try:
            lines = [ln for ln in Path(self.log_path).read_text("utf-8", "replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        last = f"its last output line: {lines[-1].strip()[:200]!r}; " if lines else ""
        return f" ({last}all in {self.log_path})"

    def close(self, abort: bool = False) -> None:
        """Stop the children: ``None`` to each, then a few seconds' grace, then kill;
        ``abort`` (an error or Ctrl-C in the driver) kills them at once, mid-shard
        (a shard is written atomically, so nothing partial is left but temporary
        files, which the next run removes)."""
        if abort:
            for p in self.procs:
                with contextlib.suppress(OSError):
                    p.kill()
        for i in range(len(self.procs)):
            self._send(i, None)
            with contextlib.suppress(OSError):
                stdin = self.procs[i].stdin
                if stdin is not None:
                    stdin.close()
        deadline = time.monotonic() + 10.0
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for t in self._threads:
            t.join(timeout=1.0)
        for p in self.procs:
            if p.stdout is not None:
                p.stdout.close()
        self.procs = []
        if self.log is not None:
            self.log.close()
            self.log = None


def _exit_text(p: subprocess.Popen[bytes]) -> str:
    try:
        rc = p.wait(timeout=5.0)
    except subprocess.TimeoutExpired:
        return "stopped answering"
    if rc < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-rc).name}"
    return f"exited with code {rc}"


def _child_main() -> None:
    """A :class:`ProcessShardPool` child: build the worker, then run rows until ``None``."""
    import importlib

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to stderr, never into the result stream
    sys.stdout = sys.stderr
    inp = sys.stdin.buffer

    def send(msg: tuple[Any, ...]) -> None:
        out.write(pickle.dumps(msg))
        out.flush()

    module, name, kwargs = pickle.load(inp)
    try:
        worker = getattr(importlib.import_module(module), name)(**kwargs)
    except Exception as err:
        send(("init_error", f"{type(err).__name__}: {err}"))
        return
    shard = [-1]
    if hasattr(worker, "on_item"):
        worker.on_item = lambda: send(("tick", shard[0], 1))
    send(("ready",))
    while True:
        try:
            row = pickle.load(inp)
        except EOFError:
            row = None
        if row is None:
            # every result is sent and every shard committed: leave without the
            # interpreter's teardown (with torch loaded, ~0.7 s the driver waits for)
            sys.stderr.flush()
            os._exit(0)
        shard[0] = int(row["shard"])
        send(("result", worker(_as_batch(row))))


# --------------------------------------------------------------------------- Ray actors


class ShardActorPool:
    """``workers`` Ray actors of class ``worker`` (1 CPU each), created at once and
    warm for the whole run; :meth:`run` hands them rows one at a time.

    Plain Ray actors, not Ray Data: a shard is one call that takes seconds, so
    Ray Data's streaming executor, its stats actor and its extra imports (pyarrow,
    pandas; ~3 s of CPU on a 2-core machine) bought nothing. Constructor arguments
    are pickled into the actor creation task; nothing large travels through Ray.
    """

    def __init__(self, worker: type, kwargs: dict[str, Any], workers: int) -> None:
        import ray

        self.workers = max(1, int(workers))
        remote: Any = ray.remote(num_cpus=1, max_restarts=0)(worker)
        # created now, constructed in parallel while the driver goes on
        self.actors = [remote.remote(**kwargs) for _ in range(self.workers)]

    def run(self, rows: list[dict[str, Any]], record: Record, *, what: str, retry: str) -> None:
        """Each row to the next free actor. A Ray error (an actor that died, or cannot
        reach the store folder on another node) becomes one ``AudioclError`` line."""
        import ray

        todo = list(reversed(rows))
        pending: dict[Any, Any] = {}

        def submit(actor: Any) -> None:
            if todo:
                pending[actor.__call__.remote(_as_batch(todo.pop()))] = actor

        for actor in self.actors:
            submit(actor)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                actor = pending.pop(ready[0])
                batch = ray.get(ready[0])
                submit(actor)  # before recording: the actor never waits on the driver
                record(_first_row(batch))
        except ray.exceptions.RayError as err:
            lines = [ln for ln in str(err).splitlines() if ln.strip()]
            raise AudioclError(
                f"{what} failed under Ray ({type(err).__name__}: {lines[-1] if lines else ''}); "
                f"finished shards are kept: {retry}"
            ) from err

    def close(self) -> None:
        import ray

        for actor in self.actors:
            with contextlib.suppress(Exception):
                ray.kill(actor)
        self.actors = []


# --------------------------------------------------------------------------- progress


class ShardProgress:
    """Progress in items over shards of known sizes (:mod:`audiocl.progress`'s display):
    :meth:`tick` as workers report items (processes, inline), :meth:`shard_done`
    when a shard's result arrives, which adds what its ticks did not (a Ray pool
    reports nothing else). ``close(ok=False)`` ends the display without its
    closing "N clip in ..." line."""

    def __init__(self, sizes: dict[int, int], desc: str, *, enabled: bool = True,
                 file: Any = None) -> None:
        from collections import Counter

        from audiocl.progress import Progress

        self.sizes = sizes
        self.ticked: Counter[int] = Counter()
        self.bar = Progress(sum(sizes.values()), desc, unit="clip", enabled=enabled and bool(sizes), file=file)

    def tick(self, shard: int, n: int) -> None:
        self.ticked[shard] += n
        self.bar.update(n)

    def shard_done(self, shard: int) -> None:
        left = self.sizes.get(shard, 0) - self.ticked[shard]
        if left > 0:
            self.tick(shard, left)

    def close(self, ok: bool = True) -> None:
        if ok:
            self.bar.close()
        else:
            self.bar.__exit__(AudioclError, None, None)


# --------------------------------------------------------------------------- choosing one


@contextlib.contextmanager
def one_ray_for_all(runner: str, address: str | None, workers: int) -> Iterator[None]:
    """Around several pool runs (extraction, then frozen towers): when ``runner``
    resolves to Ray, start or join it once here, so each :func:`shard_pool` inside
    finds it running instead of starting its own; otherwise nothing."""
    from audiocl.ray_init import start_ray, stop_ray

    started = False
    if resolve_runner(runner, address) == "ray":
        started, _ = start_ray(address, workers)
    try:
        yield
    finally:
        if started:
            stop_ray()


@contextlib.contextmanager
def shard_pool(
    worker: type,
    kwargs: dict[str, Any],
    workers: int,
    *,
    runner: str = "auto",
    address: str | None = None,
    on_tick: Tick | None = None,
    timing: dict[str, float] | None = None,
    log_path: Path | None = None,
) -> Iterator[ShardPool]:
    """The pool ``runner`` names (see the module docstring), with ``workers`` workers
    built from ``worker(**kwargs)``; closed on exit (and Ray stopped if this call
    started it). ``timing["start"]`` gets the seconds the pool took to be created
    (for Ray: starting or joining it); ``on_tick(shard, n)`` is called as workers
    finish items (processes and inline only); ``log_path``: where worker processes'
    stderr goes (default: this process's stderr)."""
    from audiocl.ray_init import start_ray, stop_ray

    runner = resolve_runner(runner, address)
    t0 = time.perf_counter()
    started = False
    pool: ShardPool | None = None
    try:
        if runner == "ray":
            started, cpus = start_ray(address, workers)
            if workers > cpus:
                print(f"the Ray cluster has {cpus} CPUs; using {cpus} workers, not {workers}", file=sys.stderr)
                workers = max(1, cpus)
            pool = ShardActorPool(worker, kwargs, workers)
        elif runner == "processes":
            pool = ProcessShardPool(worker, kwargs, workers, on_tick=on_tick, log_path=log_path)
        else:
            pool = InlineShardPool(worker, kwargs, on_tick=on_tick)
        if timing is not None:
            timing["start"] = time.perf_counter() - t0
        yield pool
    except BaseException:
        if isinstance(pool, ProcessShardPool):
            pool.close(abort=True)
        raise
    finally:
        if pool is not None:
            pool.close()  # a second close is a no-op
        if started:
            stop_ray()


if __name__ == "__main__":
    _child_main()
