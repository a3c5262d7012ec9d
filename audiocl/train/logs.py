"""What a training run writes besides checkpoints: CSV logs, TensorBoard and the progress line.

:class:`TrainLogs` owns ``train_log.csv`` (one row every ``train.log_every``
steps, columns :data:`CSV_FIELDS`), ``val_log.csv`` (one row per validation)
``tensorboard/`` (with the config as hparams), ``curves.png`` (redrawn from
the CSVs at each validation and at the end, :func:`audiocl.plots.training_curves`)
and the external trackers of ``train.loggers`` (:mod:`audiocl.train.trackers`).
Epochs in both CSVs are 1-based: a row's ``epoch`` is the pass over the data
its step belongs to (the step that ends epoch 1 is logged as epoch 1). On resume it drops the rows logged after the checkpoint
the run continues from (rewritten atomically through :mod:`audiocl.fsutil`),
so a resumed run's logs read as if it had never stopped. Only the main rank
writes; other ranks get a :class:`TrainLogs` that does nothing.

:class:`Progress` is the progress display: a tqdm bar on a terminal, else a
``step i/n ... eta`` line each time a row is logged (``train.progress``).
"""

from __future__ import annotations

import csv
import io
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from audiocl.fsutil import atomic_write_text
from audiocl.progress import fmt_time, is_quiet, tqdm_bar

__all__ = ["CSV_FIELDS", "Progress", "TrainLogs", "fmt_time"]

CSV_FIELDS = [
    "step", "epoch", "loss", "lr", "scale", "grad_norm",
    "throughput", "data_wait", "step_time", "data_wait_frac",
]  # fmt: skip

# seconds between two redrawings of curves.png at validations (one drawing costs ~0.5 s)
CURVES_EVERY_S = 30.0

# train_log.csv columns also sent to TensorBoard (as train/<name>)
_TB_TRAIN = ("loss", "lr", "scale", "grad_norm", "throughput", "data_wait_frac")


def _row_step(row: dict[str, Any]) -> int | None:
    """A log row's step, or None for a row torn short (DictReader fills missing fields with None)."""
    if any(v is None for v in row.values()) or None in row:
        return None
    try:
        return int(row["step"])
    except (KeyError, TypeError, ValueError):
        return None


def _truncate_csv(path: Path, step: int) -> int | None:
    """Keep the rows of ``path`` up to ``step`` (a row torn by a kill or a full disk,
    with no valid step, goes with the later ones); returns the last kept row's step."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    keep = [r for r in rows if (s := _row_step(r)) is not None and s <= step]
    buf = io.StringIO(newline="")
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(keep)
    atomic_write_text(path, buf.getvalue())
    return int(keep[-1]["step"]) if keep else None


class TrainLogs:
    """``train_log.csv``, ``val_log.csv`` and TensorBoard of one run (main rank only)."""

    def __init__(self, output_dir: str | Path, *, enabled: bool = True, cfg: Any = None) -> None:
        self.output_dir = Path(output_dir)
        self.csv_path = self.output_dir / "train_log.csv"
        self.val_path = self.output_dir / "val_log.csv"
        self.curves_path = self.output_dir / "curves.png"
        self.enabled = enabled
        self.tb: Any = None
        # cfg: the run's TrainingConfig (None: csv + tensorboard, no hparams)
        self.cfg = cfg
        self.loggers = list(cfg.train.loggers) if cfg is not None else ["csv", "tensorboard"]
        self.metric = cfg.train.best_metric if cfg is not None else None
        self.best_mode = cfg.train.best_mode if cfg is not None else "max"
        self.trackers: list[Any] = []
        self._curves_at = -float("inf")

    def open(self, *, resumed: bool, step: int) -> int | None:
        """Start the logs of a fresh run (old logs removed) or of one resumed at ``step``
        (later rows dropped). Returns ``step`` when the validation log already holds a
        row for it (that validation need not run again), else None."""
        if not self.enabled:
            return None
        self.output_dir.mkdir(parents=True, exist_ok=True)
        validated_at = None
        for path in (self.csv_path, self.val_path):
            if resumed and path.is_file():
                last = _truncate_csv(path, step)
                if path == self.val_path and last == step:
                    validated_at = step
            elif not resumed and path.exists():
                path.unlink()
        if not resumed:
            # a fresh run never shows the curves of the run it replaced
            self.curves_path.unlink(missing_ok=True)
        if not self.csv_path.exists() or self.csv_path.stat().st_size == 0:
            with open(self.csv_path, "w", newline="") as f:
                csv.DictWriter(f, fieldnames=CSV_FIELDS).writeheader()
        # the first redraw at a validation waits CURVES_EVERY_S too: a short run draws once, at the end
        self._curves_at = time.monotonic()
        config = self.cfg.to_dict() if self.cfg is not None else None
        if "tensorboard" in self.loggers:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(self.output_dir / "tensorboard"), purge_step=step + 1 if resumed else None)
            except Exception as e:  # tensorboard is optional at run time
                print(f"warning: TensorBoard disabled ({e.__class__.__name__}: {e})", file=sys.stderr)
                self.tb = None
            if self.tb is not None and config is not None and not resumed:
                from audiocl.train.trackers import tensorboard_hparams

                tensorboard_hparams(self.tb, config, self.metric or "val_loss")
        if config is not None:
            from audiocl.train.trackers import make_trackers

            self.trackers = make_trackers(self.loggers, self.output_dir, config, resumed=resumed)
        return validated_at

    def curves(self, *, final: bool = False) -> None:
        """Redraw ``curves.png`` from the CSV logs (at a validation only if the last
        drawing is :data:`CURVES_EVERY_S` old, so frequent validations of a small
        run do not spend their time plotting; always when ``final``). A failure
        is a warning, never the run's end."""
        if not self.enabled or (not final and time.monotonic() - self._curves_at < CURVES_EVERY_S):
            return
        self._curves_at = time.monotonic()
        try:
            from audiocl.plots import training_curves

            training_curves(self.output_dir, self.curves_path, metric=self.metric, best_mode=self.best_mode)
        except Exception as e:  # a plot must not stop training (full disk, matplotlib missing)
            print(f"warning: {self.curves_path} not drawn ({e.__class__.__name__}: {e})", file=sys.stderr)

    def train_row(self, row: dict[str, Any]) -> None:
        """Append one training row (the keys of :data:`CSV_FIELDS`; others ignored)."""
        if not self.enabled:
            return
        with open(self.csv_path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=CSV_FIELDS).writerow({k: row.get(k) for k in CSV_FIELDS})
        if self.tb is not None:
            for k in _TB_TRAIN:
                v = row.get(k)
                if v is not None and np.isfinite(v):
                    self.tb.add_scalar(f"train/{k}", v, row["step"])
        if self.trackers:
            shown = {f"train/{k}": float(row[k]) for k in _TB_TRAIN if row.get(k) is not None}
            for t in self.trackers:
                t.log(shown, row["step"])

    def val_row(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        """Append one validation row and print it."""
        if not self.enabled:
            return
        new = not self.val_path.exists() or self.val_path.stat().st_size == 0
        fields = ["step", "epoch", *sorted(metrics)]
        with open(self.val_path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow({"step": step, "epoch": epoch, **metrics})
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(f"val/{k.removeprefix('val_')}", v, step)
        for t in self.trackers:
            t.log({f"val/{k.removeprefix('val_')}": float(v) for k, v in metrics.items()}, step)
        parts = " ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()))
        print(f"validation step {step} (epoch {epoch}): {parts}", flush=True)
        self.curves()

    def close(self) -> None:
        if self.enabled and self.csv_path.is_file():
            self.curves(final=True)
        for t in self.trackers:
            t.close()
        self.trackers = []
        if self.tb is not None:
            self.tb.close()
            self.tb = None


class Progress:
    """A tqdm bar when stderr is a terminal, else a printed line per logged row;
    silent when ``enabled`` is false (``train.progress: false``, ``--quiet`` or not the
    main rank). The bar is :func:`audiocl.progress.tqdm_bar`, the project's one display."""

    def __init__(self, total_steps: int, start_step: int, *, enabled: bool) -> None:
        enabled = enabled and not is_quiet()
        self.total, self.start_step, self.enabled = total_steps, start_step, enabled
        self.t_start = time.perf_counter()
        self.bar: Any = None
        if enabled and sys.stderr.isatty():
            self.bar = tqdm_bar(total_steps, "train", unit="step", initial=start_step)

    def tick(self) -> None:
        """One optimiser step done (logged or not)."""
        if self.bar is not None:
            self.bar.update(1)

    def logged(self, row: dict[str, Any]) -> None:
        """Show a logged training row (``step``, ``epoch``, ``loss``, ``lr``, ``throughput``,
        ``data_wait_frac``)."""
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}")
        elif self.enabled:
            step = row["step"]
            rate = (time.perf_counter() - self.t_start) / max(step - self.start_step, 1)
            eta = fmt_time(rate * (self.total - step))
            print(
                f"step {step}/{self.total} epoch {row['epoch']} "
                f"loss {row['loss']:.4f} lr {row['lr']:.2e} "
                f"{row['throughput'] or 0:.1f} items/s data_wait "
                f"{100 * (row['data_wait_frac'] or 0):.1f}% eta {eta}",
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
