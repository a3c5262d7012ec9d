"""Ray Train (V2) launcher: the same config and loop on N workers with DDP.

``train_distributed(cfg)`` starts (or joins, with ``distributed.address`` /
``RAY_ADDRESS``) a Ray cluster and runs :func:`_worker` on
``distributed.workers`` workers through ``TorchTrainer``. Ray sets up the
torch process group (gloo on CPU, nccl with GPUs); each worker builds the
model, loss and data from the config alone, wraps the model in DDP and runs
the shared :class:`audiocl.train.loop.Trainer`. Each rank trains on its
contiguous part of every global batch (``data.batch_size`` is global), and
the losses gather embeddings with gradient (``audiocl.losses.distributed``),
so the contrastive batch, and the gradient, equal one process on the whole
batch.

Checkpoints and logs go to ``train.output_dir``, which every worker must see
(local disk on one machine, a shared file system on a cluster). With
``distributed.max_failures > 0`` Ray restarts failed workers; a restarted
attempt resumes from the latest complete checkpoint of this run.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from audiocl.errors import AudioclError
from audiocl.ray_init import start_ray
from audiocl.train.config import TrainingConfig

__all__ = ["train_distributed"]


def _worker(loop_config: dict[str, Any]) -> None:
    import torch

    from audiocl.train.config import TrainingConfig
    from audiocl.train.loop import Trainer
    from audiocl.train.run import build_components, export_model, fit_numbers

    cfg = TrainingConfig.model_validate(loop_config["cfg"])
    if loop_config.get("quiet"):
        from audiocl.progress import set_quiet

        set_quiet()  # the driver's --quiet
    torch.set_num_threads(max(1, int(loop_config.get("threads", 1))))
    out = Path(cfg.train.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    marker = out / f".attempt-{loop_config['token']}"
    # a restarted attempt (worker failure) of this same run resumes
    resume = bool(loop_config["resume"]) or marker.exists()
    import torch.distributed as dist

    from audiocl.train.device import setup_device

    # one device per rank: the GPU Ray assigned (NCCL), else the CPU (gloo, whose
    # collectives the losses' gathers use on CPU tensors). It becomes the current
    # CUDA device before the first collective: NCCL runs barriers and object
    # collectives on the current device
    device = torch.device("cpu")
    if cfg.distributed.gpus > 0:
        import ray.train.torch

        device = ray.train.torch.get_device()
    setup_device(device)
    if dist.is_initialized():
        dist.barrier()
    if not dist.is_initialized() or dist.get_rank() == 0:
        marker.touch()
    build: Callable[[TrainingConfig], Any] = loop_config.get("build") or build_components
    comp = build(cfg)
    trainer = Trainer(cfg, comp.model, comp.loss, comp.train_data, comp.val_data, device=device)
    result = trainer.fit(resume=resume, force=bool(loop_config.get("force", False)))
    if trainer.is_main:
        # the numbers of the summary, for the driver (Ray Train V2 hands back only
        # the metrics reported with a checkpoint)
        from audiocl.fsutil import atomic_write_text

        atomic_write_text(_fit_file(out, loop_config["token"]), json.dumps(fit_numbers(result)))
    if trainer.is_main and loop_config.get("export", True):
        export_model(cfg, comp.model, out)
        marker.unlink(missing_ok=True)
    if dist.is_initialized():
        dist.barrier()


def _fit_file(out: Path, token: str) -> Path:
    # named like the attempt marker, so that clear_run removes a leftover one
    return out / f".attempt-{token}.fit.json"


def _user_error(err: BaseException) -> str | None:
    """The message of an AudioclError raised in a worker, if that is what failed."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [err]
    while todo:
        e = todo.pop()
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        if isinstance(e, AudioclError):
            return str(e)
        todo.extend(getattr(e, "worker_failures", {}).values())
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)
    m = re.search(r"audiocl\.[\w.]*(?:Error|NonFiniteError): (.+)", str(err))
    return m.group(1).strip() if m else None


def preflight(cfg: TrainingConfig) -> None:
    """Catch config mistakes in the driver, before any worker starts (one-line errors)."""
    from audiocl.data.store import FeatureStore
    from audiocl.models.config import load_model_config
    from audiocl.train.run import build_loss_from_config

    mcfg = load_model_config(cfg.model)
    towers = set(mcfg.towers)
    unknown = [t for t in cfg.data.inputs if t not in towers]
    if unknown:
        raise AudioclError(f"data.inputs names tower(s) {unknown} the model does not have ({sorted(towers)})")
    if cfg.data.arrays:
        from audiocl.data.arrays import load_arrays

        for path in (cfg.data.arrays, cfg.data.val_arrays):
            if path:
                load_arrays(path, list(dict.fromkeys(cfg.data.inputs.values())))
    elif cfg.data.webdataset:
        from audiocl.data.stream import frontend_from_spec
        from audiocl.data.webdataset import expand_shards

        # a bad pattern or front-end fails here, once, not in every worker
        frontend_from_spec(cfg.data.frontend or {})
        for field in ("webdataset", "val_webdataset"):
            if getattr(cfg.data, field):
                expand_shards(getattr(cfg.data, field), f"data.{field}")
    elif not cfg.data.store:
        raise AudioclError(
            "data.store is required (a feature store made by `audiocl extract`), or data.arrays, "
            "or data.webdataset"
        )
    else:
        FeatureStore(cfg.data.store)
        if cfg.data.val_store:
            FeatureStore(cfg.data.val_store)
        from audiocl.data.loader import FeatureDataset
        from audiocl.train.run import check_missing

        # the data checks a worker would make, here: a worker's error arrives
        # wrapped in dozens of lines of Ray log before the one that matters
        pairs = (("manifest", cfg.data.store), ("val_manifest", cfg.data.val_store or cfg.data.store))
        for field, store in pairs:
            value = getattr(cfg.data, field)
            if not value:
                continue
            if not Path(value).is_file():
                raise AudioclError(f"data.{field} {value}: manifest file not found")
            ds = FeatureDataset(store, value)
            if len(ds) == 0:
                raise AudioclError(f"no items in store {store} joined with {value}")
            if ds.missing:
                check_missing(ds.missing, ds.store.errors(), value, str(store), cfg.data.on_missing, f"data.{field}")
    if cfg.data.batch_size < 2:
        raise AudioclError(
            f"data.batch_size={cfg.data.batch_size} holds 1 item: contrastive losses need at least 2 items "
            "per batch (the other items are the negatives)"
        )
    build_loss_from_config(cfg)


def train_distributed(
    cfg: TrainingConfig,
    *,
    resume: bool = False,
    build: Callable[[TrainingConfig], Any] | None = None,
    export: bool = True,
    shutdown: bool = True,
    overwrite: bool = False,
    force: bool = False,
) -> dict[str, Any]:
    """Run training under Ray Train ``TorchTrainer`` with ``distributed.workers`` workers.

    ``build(cfg) -> Components`` replaces :func:`audiocl.train.run.build_components`
    (it must be picklable). Returns the summary of :func:`audiocl.train.run.train`
    (:func:`audiocl.train.run.train_summary`, with rank 0's numbers). Relative
    paths are made absolute here, against the working directory, because Ray
    runs each worker in a folder of its own; the output folder is checked as in
    :func:`audiocl.train.run.train` (``resume``, ``overwrite``, ``force``), all
    before Ray starts. Ray's own output goes to ``<output>/ray.log``
    (:mod:`audiocl.train.ray_logs`).
    """
    import ray
    from ray.train import FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from audiocl.progress import is_quiet
    from audiocl.train.checkpoint import clear_run, prepare_output_dir
    from audiocl.train.config import absolute_paths
    from audiocl.train.ray_logs import RAY_LOG_NAME, route_ray_output
    from audiocl.train.run import train_summary

    d = cfg.distributed
    if cfg.data.batch_size % d.workers:
        raise AudioclError(f"data.batch_size={cfg.data.batch_size} must be divisible by {d.workers} workers")
    if d.gpus == 0 and cfg.train.device == "cuda":
        raise AudioclError(
            "train.device=cuda under Ray Train needs distributed.gpus >= 1 (--gpus 1): "
            "without it the workers get no GPU and use gloo on the CPU"
        )
    cfg = absolute_paths(cfg)
    out = Path(cfg.train.output_dir)
    prepare_output_dir(out, resume=resume, overwrite=overwrite)
    if build is None:
        preflight(cfg)
    if overwrite:
        clear_run(out)
    # Ray Train sends a worker's print() through its logger too, which Ray forwards as
    # a second copy on stderr; the workers of a local instance inherit this setting
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    # one CPU more than the workers for Ray Train's controller; rank 0's progress
    # lines reach this terminal (route_ray_output below sends Ray's own to ray.log)
    started, _ = start_ray(d.address, d.workers + 1, worker_output=True)
    storage = Path(d.storage_path).resolve() if d.storage_path else out / "ray"
    name = d.name or out.name
    resources = {"CPU": 1}
    if d.gpus > 0:
        resources["GPU"] = d.gpus
    token = uuid.uuid4().hex
    trainer = TorchTrainer(
        _worker,
        train_loop_config={
            "cfg": cfg.to_dict(), "resume": resume, "build": build,
            "token": token, "export": export, "threads": 1, "force": force,
            "quiet": is_quiet(),
        },  # fmt: skip
        torch_config=TorchConfig(backend="nccl" if d.gpus > 0 else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=d.workers, use_gpu=d.gpus > 0, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=name,
            storage_path=str(storage),
            failure_config=FailureConfig(max_failures=d.max_failures),
            # Ray Train's INFO lines (resource requests, worker group, process group) stay out
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )
    print(
        f"training on {d.workers} Ray worker(s) ({'GPU' if d.gpus else 'CPU'}); outputs in {out}; "
        f"Ray's own messages in {out / RAY_LOG_NAME}", flush=True,
    )  # fmt: skip
    with route_ray_output(out / RAY_LOG_NAME):
        try:
            result = trainer.fit()
        except Exception as err:
            # Ray wraps worker exceptions; surface our own (user-fixable) ones as one line
            user = _user_error(err)
            if user is not None:
                raise AudioclError(user) from None
            raise
        finally:
            if started and shutdown:
                ray.shutdown()  # inside the routing: it flushes the workers' last lines
    if getattr(result, "error", None) is not None:
        raise result.error  # pragma: no cover - fit() raises in V2
    fit_file = _fit_file(out, token)
    numbers = json.loads(fit_file.read_text()) if fit_file.is_file() else {}
    fit_file.unlink(missing_ok=True)
    return train_summary(out, out / "model" if export else None, numbers)
