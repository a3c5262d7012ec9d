"""Helpers shared by the extraction benchmarks: the FLAC corpus and a process-tree meter.

* :func:`make_corpus` makes N ten-second 44.1 kHz FLAC clips (synthetic tones +
  noise, or joined real recordings such as ESC-50's) and their manifest, cached
  under ``cache`` so reruns skip it.
* :class:`TreeMeter` samples a process and all its descendants from ``/proc``
  (psutil is not a dependency): peak RSS of the whole tree, peak RSS of each
  process, and CPU seconds (user + system) of every process seen, so Ray's daemons and actors are counted too.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

SR = 44100
#: environment that pins the BLAS/OpenMP pools of a child process to one thread
ONE_THREAD = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                               "NUMBA_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")}


def _make_clip(args: tuple[str, int, float]) -> None:
    path, i, seconds = args
    rng = np.random.default_rng(i)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 80.0 + 15.0 * (i % 200)
    x = 0.2 * np.sin(2 * np.pi * f0 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.3 * t))
    x += 0.05 * rng.standard_normal(t.size)
    sf.write(path, x.astype(np.float32), SR, format="FLAC", subtype="PCM_16")


def _make_real_clip(args: tuple[str, int, float, list[str]]) -> None:
    """A clip made of real 44.1 kHz recordings: consecutive ESC-50 clips joined and
    cut to ``seconds``, with a per-clip gain, so every file differs and FLAC sees
    real signal statistics (white noise costs FLAC ~1.5x more to decode)."""
    path, i, seconds, sources = args
    n = int(seconds * SR)
    parts, total, k = [], 0, i
    while total < n:
        x, sr = sf.read(sources[k % len(sources)], dtype="float32")
        assert sr == SR, (sources[k % len(sources)], sr)
        parts.append(x if x.ndim == 1 else x.mean(axis=1))
        total += parts[-1].size
        k += 1
    gain = 0.5 + 0.5 * ((i * 7919) % 1000) / 1000.0
    sf.write(path, gain * np.concatenate(parts)[:n], SR, format="FLAC", subtype="PCM_16")


def make_corpus(cache: Path, clips: int, seconds: float, real: Path | None = None) -> Path:
    """The manifest of ``clips`` FLAC clips under ``cache`` (made once, then reused)."""
    sources = sorted(str(p) for p in real.glob("*.wav")) if real is not None else []
    if real is not None and not sources:
        sys.exit(f"make_corpus: no .wav files under {real}")
    kind = "real" if sources else "synth"
    root = cache / f"flac44k_{kind}_{clips}x{seconds:g}s"
    manifest = root / "manifest.jsonl"
    if manifest.is_file():
        return manifest
    audio = root / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    jobs = [(str(audio / f"clip{i:05d}.flac"), i, seconds) for i in range(clips)]
    todo = [j for j in jobs if not Path(j[0]).is_file()]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=2) as pool:
        if sources:
            list(pool.map(_make_real_clip, [(*j, sources) for j in todo], chunksize=16))
        else:
            list(pool.map(_make_clip, todo, chunksize=16))
    print(f"made {len(todo)} clips in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    tmp = manifest.with_suffix(".tmp")
    with open(tmp, "w") as f:
        for path, i, _ in jobs:
            f.write(json.dumps({"id": f"clip{i:05d}", "path": path, "texts": [f"tone {i}"]}) + "\n")
    os.replace(tmp, manifest)
    return manifest


_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _proc_table() -> dict[int, tuple[int, str, float, int]]:
    """pid -> (ppid, name, cpu seconds, rss bytes)."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                s = f.read()
        except OSError:
            continue
        comm = s[s.index("(") + 1 : s.rindex(")")]
        r = s[s.rindex(")") + 2 :].split()
        # utime + stime only: a reaped child's time would count twice (it is sampled itself)
        cpu = (int(r[11]) + int(r[12])) / _TICK
        table[int(name)] = (int(r[1]), comm, cpu, int(r[21]) * _PAGE)
    return table


def _script_name(pid: int, comm: str) -> str:
    """``python`` processes named by their script (Ray's monitor.py, dashboard.py, ...)."""
    if comm != "python" and not comm.startswith("python3"):
        return comm
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return comm
    script = next((a for a in args[1:] if a.endswith(".py")), None)
    return f"python:{os.path.basename(script)}" if script else "python"


class TreeMeter:
    """Samples ``pid`` (default: this process) and its descendants every ``interval`` s.

    ``with TreeMeter() as m: ...``; then ``m.result()``: ``peak_rss_mb`` (largest
    sum over the tree at one sample), ``peak_rss_mb_by_name`` (largest single
    process of each name), ``cpu_s`` (CPU seconds of the tree during the block:
    each process's last sample minus its value at the start; a process that lives
    less than one interval is missed), ``cpu_s_by_name`` (the same per process name), ``processes``
    (how many were seen).
    The meter's own thread CPU is subtracted (``(meter)`` in ``cpu_s_by_name``).
    """

    def __init__(self, pid: int | None = None, interval: float = 0.1) -> None:
        self.pid = pid or os.getpid()
        self.interval = interval
        self.peak = 0
        self.by_name: dict[str, int] = {}
        self.cpu_last: dict[int, float] = {}
        self.names: dict[int, str] = {}
        self.cpu_first: dict[int, float] = {}
        self._stop = threading.Event()
        self._started = False
        self.meter_cpu = 0.0

    def _sample(self) -> None:
        table = _proc_table()
        kids: dict[int, list[int]] = {}
        for p, (pp, *_rest) in table.items():
            kids.setdefault(pp, []).append(p)
        tree, stack = [], [self.pid]
        while stack:
            p = stack.pop()
            if p in table:
                tree.append(p)
            stack.extend(kids.get(p, []))
        total = 0
        for p in tree:
            _, name, cpu, rss = table[p]
            total += rss
            self.by_name[name] = max(self.by_name.get(name, 0), rss)
            # a process already there at the start counts from then, a new one from 0
            self.cpu_first.setdefault(p, 0.0 if self._started else cpu)
            self.cpu_last[p] = cpu
            if p not in self.names:
                self.names[p] = _script_name(p, name)
        self.peak = max(self.peak, total)
        self._started = True

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()
        self.meter_cpu = time.thread_time()  # this thread's own CPU, subtracted in result()

    def __enter__(self) -> TreeMeter:
        self._sample()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def result(self) -> dict[str, Any]:
        cpu = sum(self.cpu_last[p] - self.cpu_first.get(p, 0.0) for p in self.cpu_last) - self.meter_cpu
        top = sorted(self.by_name.items(), key=lambda kv: -kv[1])[:8]
        by_name: dict[str, float] = {"(meter)": -self.meter_cpu}
        for p in self.cpu_last:
            by_name[self.names[p]] = by_name.get(self.names[p], 0.0) + self.cpu_last[p] - self.cpu_first.get(p, 0.0)
        return {
            "peak_rss_mb": round(self.peak / 2**20, 1),
            "peak_rss_mb_by_name": {k: round(v / 2**20, 1) for k, v in top},
            "cpu_s": round(cpu, 2),
            "cpu_s_by_name": {k: round(v, 2) for k, v in sorted(by_name.items(), key=lambda kv: -kv[1])},
            "processes": len(self.cpu_last),
        }
