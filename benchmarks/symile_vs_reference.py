"""Symile O(N^2) loss: audiocl's fused chunked MIP vs the `symile` package (PyPI 0.1.0).

Run: ``python benchmarks/symile_vs_reference.py [--n 256] [--d 256] [--repeats 3]``

Both compute the same loss, 3 modalities, forward + backward, one thread
(``torch.set_num_threads(1)``), float32. Time: best of ``--repeats`` runs of
each, interleaved, in this process. Peak memory: torch CPU allocations are invisible to
tracemalloc, so each implementation runs once in a fresh subprocess and we
report the rise of the process's peak resident set size over its resident size just
before the loss (inputs already built; the peak, VmHWM, is reset through
/proc/self/clear_refs first so import-time peaks do not count). Also checks the
large case (``--n-large 1024``) for audiocl alone, which must stay under 2 GB.
Prints one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F


def _inputs(n: int, d: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    xs = [F.normalize(torch.randn(n, d, generator=g), dim=1).requires_grad_() for _ in range(3)]
    t = torch.tensor(1 / 0.07, requires_grad=True)
    return xs, t


def _run(impl: str, xs, t):
    if impl == "symile":
        import symile

        loss = symile.Symile("n_squared")(xs, t)
    else:
        from audiocl.losses.symile import symile_loss_n_squared

        loss = symile_loss_n_squared(xs, t)
    grads = torch.autograd.grad(loss, [*xs, t])
    return loss.detach(), grads


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    # Linux: writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS,
    # so imports' transient peaks do not count.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _child(impl: str, n: int, d: int) -> None:
    torch.set_num_threads(1)
    if impl == "symile":
        import symile  # noqa: F401
    else:
        import audiocl.losses.symile  # noqa: F401
    xs, t = _inputs(n, d)
    _reset_peak()
    before = _status_kb("VmRSS")
    t0 = time.perf_counter()
    _run(impl, xs, t)
    dt = time.perf_counter() - t0
    peak = _status_kb("VmHWM")
    print(json.dumps({"peak_delta_mb": (peak - before) / 1024, "seconds": dt}))


def _measure(impl: str, n: int, d: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", impl, "--n", str(n), "--d", str(d)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--n-large", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", default=None)
    a = ap.parse_args()
    if a.child:
        _child(a.child, a.n, a.d)
        return
    torch.set_num_threads(1)
    xs, t = _inputs(a.n, a.d)
    times: dict[str, float] = {}
    results = {}
    for _ in range(a.repeats):  # interleaved, so machine load hits both alike
        for impl in ("symile", "audiocl"):
            t0 = time.perf_counter()
            results[impl] = _run(impl, xs, t)
            times[impl] = min(times.get(impl, float("inf")), time.perf_counter() - t0)
    (l_ref, g_ref), (l_our, g_our) = results["symile"], results["audiocl"]
    max_grad_diff = max((a_ - b_).abs().max().item() for a_, b_ in zip(g_ref, g_our))
    mem_ref = _measure("symile", a.n, a.d)
    mem_our = _measure("audiocl", a.n, a.d)
    large = _measure("audiocl", a.n_large, a.d)
    res = {
        "benchmark": "symile_n_squared_M3",
        "n": a.n,
        "d": a.d,
        "threads": 1,
        "symile_pkg_s": round(times["symile"], 4),
        "audiocl_s": round(times["audiocl"], 4),
        "speedup": round(times["symile"] / times["audiocl"], 2),
        "symile_pkg_peak_mb": round(mem_ref["peak_delta_mb"], 1),
        "audiocl_peak_mb": round(mem_our["peak_delta_mb"], 1),
        "memory_ratio": round(mem_our["peak_delta_mb"] / mem_ref["peak_delta_mb"], 3),
        "loss_symile_pkg": l_ref.item(),
        "loss_audiocl": l_our.item(),
        "abs_loss_diff": abs(l_ref.item() - l_our.item()),
        "max_abs_grad_diff": max_grad_diff,
        "n_large": a.n_large,
        "audiocl_large_peak_mb": round(large["peak_delta_mb"], 1),
        "audiocl_large_s": round(large["seconds"], 2),
    }
    res["pass"] = bool(
        res["speedup"] >= 3
        and res["memory_ratio"] <= 0.25
        and res["abs_loss_diff"] < 1e-4
        and res["audiocl_large_peak_mb"] < 2048
    )
    print(json.dumps(res))


if __name__ == "__main__":
    main()
