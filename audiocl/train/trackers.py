"""Experiment trackers a run reports to besides its CSV logs (``train.loggers``).

``csv`` (``train_log.csv`` / ``val_log.csv``, always written: resuming and
``curves.png`` read them) and ``tensorboard`` live in
:mod:`audiocl.train.logs`; this module holds what the others need:

* :func:`tensorboard_hparams` - the resolved config as TensorBoard hparams
  (flattened dotted keys, the validation metric as the hparams metric) and as
  YAML text, in the run's own event folder (not a timestamped sub-run, as
  ``SummaryWriter.add_hparams`` would make).
* :class:`WandbTracker`, :class:`MlflowTracker` - optional extras
  (``pip install 'audiocl[wandb]'`` / ``'audiocl[mlflow]'``) imported through
  :func:`audiocl.extras.require`, so a run that asks for one without the
  package stops at start-up with one line naming the extra. W&B runs offline
  unless ``WANDB_MODE`` says otherwise; MLflow writes to
  ``<output_dir>/mlruns`` unless ``MLFLOW_TRACKING_URI`` is set.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from audiocl.extras import require

__all__ = [
    "LOGGERS", "MlflowTracker", "Tracker", "WandbTracker", "check_available", "make_trackers",
    "tensorboard_hparams",
]  # fmt: skip

LOGGERS = ("csv", "tensorboard", "wandb", "mlflow")


def _hparam_value(v: Any) -> Any:
    # TensorBoard hparams take bool, number or string; lists and None as text
    if isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


def tensorboard_hparams(writer: Any, config: dict[str, Any], metric: str) -> None:
    """Write ``config`` (a ``TrainingConfig.to_dict()``) as hparams and as YAML text
    into ``writer``'s folder; ``metric`` (``val_loss``) is the hparams metric
    ``val/loss``, the scalar :class:`audiocl.train.logs.TrainLogs` logs."""
    import yaml
    from torch.utils.tensorboard.summary import hparams

    from audiocl.train.config import flatten_config

    flat = {k: _hparam_value(v) for k, v in flatten_config(config).items()}
    exp, ssi, sei = hparams(flat, {f"val/{metric.removeprefix('val_')}": 0.0})
    fw = writer._get_file_writer()
    for summary in (exp, ssi, sei):
        fw.add_summary(summary)
    text = yaml.safe_dump(config, sort_keys=False)
    # TensorBoard renders text as Markdown: indent to keep the YAML a code block
    writer.add_text("config", "\n".join("    " + line for line in text.splitlines()))


class Tracker:
    """One external tracker: ``log(metrics, step)`` and ``close()``."""

    def log(self, metrics: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class WandbTracker(Tracker):
    """Weights & Biases (offline by default: ``wandb sync`` uploads later)."""

    def __init__(self, output_dir: Path, config: dict[str, Any], *, resumed: bool) -> None:
        wandb = require("wandb", "wandb", feature="train.loggers: wandb")
        os.environ.setdefault("WANDB_MODE", "offline")
        self.run = wandb.init(
            dir=str(output_dir), config=config, name=output_dir.name,
            id=_run_id(output_dir), resume="allow" if resumed else None,
        )  # fmt: skip

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


class MlflowTracker(Tracker):
    """MLflow (a file store under the run folder unless ``MLFLOW_TRACKING_URI`` is set)."""

    def __init__(self, output_dir: Path, config: dict[str, Any], *, resumed: bool) -> None:
        from audiocl.train.config import flatten_config

        self.mlflow = require("mlflow", "mlflow", feature="train.loggers: mlflow")
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            self.mlflow.set_tracking_uri((output_dir / "mlruns").resolve().as_uri())
        self.run = self.mlflow.start_run(run_name=output_dir.name)
        if not resumed:
            # MLflow refuses to change a logged param, so only a fresh run logs them
            self.mlflow.log_params({k: _hparam_value(v) for k, v in flatten_config(config).items()})

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics(metrics, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


def _run_id(output_dir: Path) -> str:
    """A stable W&B run id per output folder, so a resumed run continues the same run."""
    import hashlib

    return hashlib.sha1(str(output_dir.resolve()).encode()).hexdigest()[:16]


def check_available(names: Sequence[str]) -> None:
    """Refuse, before anything is built, a logger whose package is not installed
    (one line naming the extra; the run would otherwise fail only once its
    workers started)."""
    import importlib.util

    for n in names:
        if n in ("wandb", "mlflow") and importlib.util.find_spec(n) is None:
            require(n, n, feature=f"train.loggers: {n}")


def make_trackers(
    names: Sequence[str], output_dir: Path, config: dict[str, Any], *, resumed: bool
) -> list[Tracker]:
    """The external trackers among ``names`` (``wandb``, ``mlflow``), started."""
    kinds = {"wandb": WandbTracker, "mlflow": MlflowTracker}
    return [kinds[n](output_dir, config, resumed=resumed) for n in names if n in kinds]
