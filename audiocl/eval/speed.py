"""CPU time per clip of a model's audio side, through the one embedding path.

For each clip (decoded at the model's own rate before any timing)::

    frontend_ms   the model's log-mel front-end on the whole clip (LogMel)
    tower_ms      the audio tower (encoder + projection) on the clip's pieces by the
                  one clip rule (audiocl.models.embed.embed_logmels: short clips
                  padded, long ones cut into windows and averaged), one clip a call
    total_ms      frontend_ms + tower_ms

Times are the process's CPU seconds (``time.process_time``: user + system of all
its threads) per clip, so a machine shared with other jobs slows the wall clock
but inflates them less; torch runs on ``threads`` intra-op threads. Each model's
pass over the clips is repeated ``repeats`` times, models interleaved, and the
median pass is reported with its range, so several models measured in one call
share the machine's conditions.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from audiocl.errors import AudioclError

__all__ = ["audio_cpu_ms", "audio_params", "run_speed"]


def _one_pass(model: Any, wavs: Sequence[np.ndarray], logmel: Any) -> tuple[float, float]:
    from audiocl.models.embed import embed_logmels

    fe_s = tower_s = 0.0
    for i, x in enumerate(wavs):
        t0 = time.process_time()
        with torch.inference_mode():
            mel = logmel(torch.from_numpy(x)).numpy()
        t1 = time.process_time()
        embed_logmels(model, [mel], keys=[str(i)], batch_size=16)
        t2 = time.process_time()
        fe_s += t1 - t0
        tower_s += t2 - t1
    return 1000.0 * fe_s / len(wavs), 1000.0 * tower_s / len(wavs)


def audio_params(model: Any, tower: str | None = None) -> int:
    """Parameters of the audio tower (encoder + projection)."""
    from audiocl.models.embed import audio_tower

    return sum(p.numel() for p in model.towers[audio_tower(model, tower)].parameters())


def audio_cpu_ms(
    models: Mapping[str, Any],
    items: Sequence[Any],
    *,
    threads: int = 1,
    repeats: int = 3,
    warmup: int = 2,
) -> dict[str, dict[str, Any]]:
    """``{name: {"frontend_ms", "tower_ms", "total_ms" (medians over the repeats),
    "<key>_range": [min, max], "audio_params", ...}}`` for each loaded model, on the
    manifest ``items`` (``AudioItem``), each decoded at the model's own rate before
    any timing."""
    from audiocl.audio.frontend import LogMel
    from audiocl.data.sources import load_item_mono

    if not items:
        raise AudioclError("audio_cpu_ms: no clips")
    if repeats < 1 or threads < 1:
        raise AudioclError(f"audio_cpu_ms: repeats and threads must be >= 1, not {repeats} and {threads}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        prepared = {}
        for name, model in models.items():
            fe = getattr(model, "frontend", None)
            if fe is None:
                raise AudioclError(f"model '{name}' has no front-end (frontend.json); cannot time its audio side")
            wavs = [np.asarray(load_item_mono(it, fe.sample_rate), dtype=np.float32) for it in items]
            model.eval()
            prepared[name] = (model, wavs, LogMel(fe).eval())
            _one_pass(model, wavs[:warmup], prepared[name][2])  # first-call allocations out of the timing
        passes: dict[str, list[tuple[float, float]]] = {name: [] for name in prepared}
        for _ in range(repeats):
            for name, (model, wavs, logmel) in prepared.items():
                passes[name].append(_one_pass(model, wavs, logmel))
    finally:
        torch.set_num_threads(before)

    def med(v: list[float]) -> float:
        return round(statistics.median(v), 3)

    def span(v: list[float]) -> list[float]:
        return [round(min(v), 3), round(max(v), 3)]

    out: dict[str, dict[str, Any]] = {}
    for name, runs in passes.items():
        model, wavs, _ = prepared[name]
        fe_ms, tw_ms = [r[0] for r in runs], [r[1] for r in runs]
        tot = [a + b for a, b in runs]
        out[name] = {
            "frontend_ms": med(fe_ms), "frontend_ms_range": span(fe_ms),
            "tower_ms": med(tw_ms), "tower_ms_range": span(tw_ms),
            "total_ms": med(tot), "total_ms_range": span(tot),
            "audio_params": audio_params(model), "clips": len(wavs),
            "mean_clip_seconds": round(float(np.mean([len(w) / model.frontend.sample_rate for w in wavs])), 3),
            "repeats": repeats, "threads": threads,
        }  # fmt: skip
    return out


def run_speed(
    models: Mapping[str, str],
    manifest: str,
    *,
    clips: int = 32,
    split: str | None = None,
    baseline: str | None = None,
    threads: int = 1,
    repeats: int = 3,
) -> dict[str, Any]:
    """:func:`audio_cpu_ms` of model folders (``{name: folder}``) on the first ``clips``
    items of ``manifest``; with ``baseline``, each model's ``*_ms`` over the baseline's
    (``ratio_total``, ``ratio_tower``)."""
    import itertools

    from audiocl.data.manifest import read_manifest
    from audiocl.models import load_model

    if not models:
        raise AudioclError("give at least one model")
    if baseline is not None and baseline not in models:
        raise AudioclError(f"--baseline {baseline!r} is not one of the models ({', '.join(models)})")
    if clips < 1:
        raise AudioclError(f"--clips must be >= 1, got {clips}")
    items = list(itertools.islice((it for it in read_manifest(manifest) if split is None or it.split == split), clips))
    if not items:
        raise AudioclError(f"no items in {manifest}" + (f" of split {split!r}" if split else ""))
    loaded = {name: load_model(folder) for name, folder in models.items()}
    res: dict[str, Any] = {"manifest": str(manifest), "clips": len(items),
                           "models": audio_cpu_ms(loaded, items, threads=threads, repeats=repeats)}  # fmt: skip
    for name, folder in models.items():
        res["models"][name]["folder"] = str(folder)
    if baseline is not None:
        base = res["models"][baseline]
        res["baseline"] = baseline
        for r in res["models"].values():
            r["ratio_total"] = round(r["total_ms"] / base["total_ms"], 4)
            r["ratio_tower"] = round(r["tower_ms"] / base["tower_ms"], 4)
            r["ratio_params"] = round(r["audio_params"] / base["audio_params"], 4)
    return res
