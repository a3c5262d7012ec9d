"""The training loop, shared by the single-process path and every Ray Train worker.

``Trainer(cfg, model, loss_fn, train_data, val_data).fit(resume=...)`` runs
AdamW with linear warm-up and cosine decay, gradient clipping, optional bf16
autocast, gradient-cached accumulation (see :mod:`audiocl.train.accumulate`),
validation with best-checkpoint tracking (:mod:`audiocl.train.validate`),
CSV + TensorBoard logs and a progress line with ETA (:mod:`audiocl.train.logs`),
a data-wait timer, NaN/inf detection and atomic checkpoints that resume
exactly. A loss is a :class:`audiocl.losses.combined.CombinedLoss` (a single
loss is wrapped as its one term), so a non-finite value names its term. Under
``torch.distributed`` (Ray Train) the model is wrapped in DDP and each rank
trains on its contiguous part of every global batch; the losses gather
embeddings with gradient so the contrastive batch is global.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from audiocl.errors import AudioclError
from audiocl.losses.combined import CombinedLoss
from audiocl.train.accumulate import forward_backward
from audiocl.train.checkpoint import (
    NonFiniteError,
    best_files,
    capture_rng,
    list_checkpoints,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
    unwrap,
    write_folder_atomically,
)
from audiocl.train.config import TrainingConfig, absolute_paths, flatten_config, resume_changes
from audiocl.train.data import (
    GlobalBatchSampler,
    SeededCollate,
    SeededDataset,
    TrainData,
    to_device,
)
from audiocl.train.device import compile_towers, device_batches, pick_device, setup_device
from audiocl.train.logs import Progress, TrainLogs
from audiocl.train.validate import validate

__all__ = ["FitResult", "Trainer", "lr_at"]


def lr_at(step: int, total: int, cfg: TrainingConfig) -> float:
    """Learning rate for optimiser step ``step`` (0-based).

    Linear warm-up from ``lr/warmup`` to ``lr`` over ``warmup_steps``, then
    cosine decay ``min + (lr - min) * (1 + cos(pi * p)) / 2`` with ``p`` the
    fraction of post-warm-up steps done (constant after warm-up for
    ``kind=constant``). A pure function of the step, so the scheduler's state
    is the step counter itself.
    """
    base, warm = cfg.optim.lr, cfg.schedule.warmup_steps
    if warm and step < warm:
        return base * (step + 1) / warm
    if cfg.schedule.kind == "constant":
        return base
    span = max(1, total - warm)
    p = min(1.0, (step - warm) / span)
    lo = cfg.schedule.min_lr
    return lo + (base - lo) * 0.5 * (1.0 + math.cos(math.pi * p))


@dataclass
class FitResult:
    step: int
    epoch: int
    last_loss: float
    best_metric: float | None
    best_path: Path | None
    output_dir: Path
    history: list[dict[str, Any]] = field(default_factory=list)


def _pick_device(cfg: TrainingConfig) -> torch.device:
    return pick_device(cfg.train.device)


class Trainer:
    """Runs training for one process (one rank when distributed)."""

    def __init__(
        self,
        cfg: TrainingConfig,
        model: nn.Module,
        loss_fn: nn.Module | Callable[..., Tensor],
        train_data: TrainData,
        val_data: TrainData | None = None,
        *,
        device: torch.device | None = None,
        report: Callable[[dict[str, Any]], None] | None = None,
        on_best: Callable[[nn.Module, Path], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        self.device = device or _pick_device(cfg)
        setup_device(self.device)
        self.model = model.to(self.device)
        self.compiled = compile_towers(self.model) if cfg.train.compile else []
        if not isinstance(loss_fn, CombinedLoss):
            # one term, so a non-finite loss is blamed on it by name
            name = cfg.loss.name if cfg.loss.terms is None else "loss"
            loss_fn = CombinedLoss([(name, 1.0, loss_fn)])
        self.loss_fn = loss_fn.to(self.device)
        self.train_data = train_data
        self.val_data = val_data
        self.report = report
        self.on_best = on_best
        self.output_dir = Path(cfg.train.output_dir)
        self.is_main = self.rank == 0
        self.logs = TrainLogs(self.output_dir, enabled=self.is_main, cfg=cfg)

        B = cfg.data.batch_size
        if B % self.world:
            raise AudioclError(f"data.batch_size={B} must be divisible by the {self.world} workers")
        self.local_batch = B // self.world
        mb = cfg.data.micro_batch_size
        self.micro = mb if mb is not None and mb < self.local_batch else None

        self.sampler: Any
        if train_data.stream is not None:
            # streamed shards: each rank (and each DataLoader worker) reads its own
            self.sampler = train_data.stream.sampler(
                B, rank=self.rank, world=self.world, seed=cfg.train.seed, shuffle=cfg.data.shuffle,
                buffer=cfg.data.shuffle_buffer, readers=max(1, cfg.data.num_workers),
                collate=train_data.collate,
            )  # fmt: skip
        else:
            self.sampler = GlobalBatchSampler(
                len(train_data.dataset), B, rank=self.rank, world_size=self.world,
                seed=cfg.train.seed, shuffle=cfg.data.shuffle, drop_last=cfg.data.drop_last,
                order=train_data.order,
            )  # fmt: skip
        if len(self.sampler) == 0:
            raise AudioclError(
                f"training set has {len(train_data.dataset)} items, fewer than one batch of {B}"
            )
        # a contrastive loss compares each item with the rest of its batch: with
        # one item there is nothing to contrast and the loss is 0 every step
        n = len(train_data.dataset)
        smallest = B if cfg.data.drop_last or n % B == 0 else n % B
        if smallest < 2:
            where = f"data.batch_size={B}" if B < 2 else (
                f"the last batch of each epoch ({n} items, data.batch_size={B}, data.drop_last=false)"
            )  # fmt: skip
            raise AudioclError(
                f"{where} holds 1 item: contrastive losses need at least 2 items per batch "
                "(the other items are the negatives)"
            )
        self.steps_per_epoch = len(self.sampler)
        if cfg.train.max_steps is not None:
            self.total_steps = cfg.train.max_steps
        else:
            self.total_steps = (cfg.train.epochs or 1) * self.steps_per_epoch

        self.ddp: nn.Module = self.model
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DDP(
                self.model, device_ids=ids,
                find_unused_parameters=cfg.distributed.find_unused_parameters,
            )  # fmt: skip
        self.optimizer = self._make_optimizer()
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best: float | None = None
        self.best_path: Path | None = None
        self.skipped_in_row = 0
        self.last_saved_step = -1
        self.last_val_step = -1
        self.history: list[dict[str, Any]] = []
        self.last_loss: float | None = None
        self.resumed_loss: float | None = None
        self._config_abs: dict[str, Any] | None = None

    # ---------------------------------------------------------------- setup
    def _make_optimizer(self) -> torch.optim.Optimizer:
        o = self.cfg.optim
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            low = name.lower()
            (no_decay if p.dim() < 2 or any(k in low for k in o.no_decay) else decay).append(p)
        groups = [
            {"params": decay, "weight_decay": o.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(
            [g for g in groups if g["params"]], lr=o.lr, betas=tuple(o.betas), eps=o.eps
        )

    def _loader(self, data: TrainData, sampler: Any) -> Any:
        nw = self.cfg.data.num_workers
        if data.stream is not None:
            return sampler.loader(nw, pin_memory=self.device.type == "cuda")
        return torch.utils.data.DataLoader(
            SeededDataset(data.dataset),
            batch_sampler=sampler,
            collate_fn=SeededCollate(data.collate),
            num_workers=nw,
            persistent_workers=nw > 0,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if nw > 0 else None,
            # its own generator: creating an iterator must not draw from the
            # global torch RNG, or a run resumed mid-epoch would diverge
            generator=torch.Generator().manual_seed(self.cfg.train.seed),
        )

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.cfg.train.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # --------------------------------------------------------------- resume
    def _resume(self, force: bool = False) -> bool:
        """Load the newest checkpoint that loads; a damaged one is reported on
        stderr and the previous complete one used. A checkpoint written under
        another config (outside :data:`audiocl.train.config.RESUME_ALLOWED`)
        is refused unless ``force``."""
        ckpts = list_checkpoints(self.output_dir)
        if not ckpts:
            if self.is_main:
                print(f"resume: no complete checkpoint under {self.output_dir}/checkpoints; starting fresh")
            return False
        ck, path, damaged = None, None, []
        for _step, cand in reversed(ckpts):
            try:
                ck, path = load_checkpoint(cand, rank=self.rank), cand
                break
            except AudioclError as err:
                damaged.append(f"{cand.name}: {err}")
                if self.is_main:
                    print(f"resume: checkpoint {cand} is damaged ({err}); trying the previous one",
                          file=sys.stderr, flush=True)  # fmt: skip
        if ck is None or path is None:
            raise AudioclError(
                f"resume: no usable checkpoint under {self.output_dir}/checkpoints "
                f"({len(damaged)} damaged; newest: {damaged[0]})"
            )
        if damaged and self.is_main:
            print(f"resume: falling back to {path}, the newest complete checkpoint", file=sys.stderr, flush=True)
        if ck["config"] is not None and not force:
            changed = resume_changes(ck["config"], self._config_record())
            if changed:
                old, new = flatten_config(ck["config"]), flatten_config(self._config_record())
                shown = "; ".join(f"{k}: {old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}" for k in changed[:4])
                more = f" (+{len(changed) - 4} more)" if len(changed) > 4 else ""
                raise AudioclError(
                    f"--resume: the config differs from the run in {self.output_dir} ({path.name}) in "
                    f"{len(changed)} key(s): {shown}{more}; only run length, logging and placement may "
                    "change; pass --force to resume anyway, or --overwrite to start over"
                )
        try:
            unwrap(self.model).load_state_dict(ck["model"])
        except RuntimeError as err:
            first = str(err).strip().splitlines()
            raise AudioclError(
                f"resume: {path / 'model.safetensors'} does not fit the model of this config "
                f"({(first[1] if len(first) > 1 else first[0]).strip()[:200]})"
            ) from None
        st = ck["state"]
        try:
            self.optimizer.load_state_dict(st["optimizer"])
        except (ValueError, KeyError, RuntimeError) as err:
            raise AudioclError(f"resume: {path / 'state.pt'}: optimizer state does not fit this model ({err})") from None
        if self.train_data.stream is not None and not force:
            saved, now = st.get("stream"), self.sampler.state()
            if saved != now:
                raise AudioclError(
                    f"--resume: {path.name} was trained from a stream read as {saved}, this run reads "
                    f"{now}; the order of streamed batches depends on the ranks, the readers "
                    "(data.num_workers, 0 and 1 both mean one) and the shards, so keep them to resume "
                    "exactly (or pass --force)"
                )
        self.step, self.epoch, self.batch_in_epoch = int(st["step"]), int(st["epoch"]), int(st["batch_in_epoch"])
        if st.get("last_loss") is not None:
            self.resumed_loss = float(st["last_loss"])
        self.best = st.get("best")
        if self.best is not None:
            self.best = float(self.best)
            bp = self.output_dir / "best"
            self.best_path = bp if bp.is_dir() else None
        if ck["rng"] is not None:
            restore_rng(ck["rng"], self.device)
        if self.is_main:
            print(f"resume: {path} (step {self.step}, epoch {self.epoch}, batch {self.batch_in_epoch})")
            if self.step >= self.total_steps:
                print(
                    f"resume: the run already reached step {self.step} of {self.total_steps}; nothing to "
                    "train (raise train.max_steps or train.epochs to continue it)", flush=True,
                )  # fmt: skip
        return True

    def _config_record(self) -> dict[str, Any]:
        # paths absolute, so a run resumed from another folder or under Ray compares equal
        if self._config_abs is None:
            self._config_abs = absolute_paths(self.cfg).to_dict()
        return self._config_abs

    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "best": self.best,
            "best_metric": self.cfg.train.best_metric,
            "total_steps": self.total_steps,
            "world_size": self.world,
            "last_loss": self.last_loss,
            **({"stream": self.sampler.state()} if self.train_data.stream is not None else {}),
        }

    def _gather_rng(self) -> dict[int, dict[str, Tensor]]:
        mine = capture_rng(self.device)
        if not self.distributed:
            return {0: mine}
        everyone: list[Any] = [None] * self.world
        dist.all_gather_object(everyone, {k: v.cpu() for k, v in mine.items()})
        return dict(enumerate(everyone))

    def save(self) -> Path | None:
        rngs = self._gather_rng()
        self.last_saved_step = self.step
        path = None
        err: Exception | None = None
        if self.is_main:
            try:
                path = save_checkpoint(
                    self.output_dir, self.step, self.model, self.optimizer, self._state(), rngs,
                    keep=self.cfg.train.keep_checkpoints, config=self._config_record(),
                )  # fmt: skip
            except AudioclError as e:  # NonFiniteError, or a full disk
                err = e
        if self.distributed:
            flag = [None if err is None else str(err)]
            dist.broadcast_object_list(flag, src=0)
            if flag[0] is not None and err is None:
                err = AudioclError(f"rank 0 could not write the checkpoint: {flag[0]}")
            dist.barrier()
        if err is not None:
            raise err
        return path

    # ------------------------------------------------------------ logging
    def _log_row(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        if not self.is_main:
            return
        self.logs.train_row(row)
        if self.report is not None:
            self.report(row)

    # ------------------------------------------------------------ non-finite
    def _non_finite(self, what: str, value: float) -> None:
        terms = getattr(self.loss_fn, "last_terms", {}) or {}
        bad = [k for k, v in terms.items() if not math.isfinite(v)]
        blame = f" (term {', '.join(repr(b) for b in bad)})" if bad else ""
        msg = (
            f"non-finite {what} ({value}) at step {self.step + 1} (epoch {self.epoch}, "
            f"batch {self.batch_in_epoch}){blame}"
        )
        if self.cfg.train.on_nan == "error":
            raise NonFiniteError(msg + "; stopping (no checkpoint written for this step)")
        self.skipped_in_row += 1
        if self.is_main:
            print(f"warning: {msg}; skipping the step", file=sys.stderr, flush=True)
        if self.skipped_in_row > self.cfg.train.max_skipped_steps:
            raise NonFiniteError(f"{msg}; {self.skipped_in_row} steps in a row skipped, stopping")

    # ----------------------------------------------------------------- step
    def _undo_step(self, saved_buffers: list[Tensor] | None) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if saved_buffers is not None:
            with torch.no_grad():
                for b, old in zip(self.model.buffers(), saved_buffers):
                    b.copy_(old)

    def train_step(self, batch: dict[str, Any]) -> dict[str, Any] | None:
        """One optimiser step on this rank's part of a global batch."""
        self.ddp.train()
        lr = lr_at(self.step, self.total_steps, self.cfg)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        # a skipped step must not leave NaN in BatchNorm running statistics
        saved_buffers = (
            [b.detach().clone() for b in self.model.buffers()] if self.cfg.train.on_nan == "skip" else None
        )
        key = (self.cfg.train.seed, self.epoch, self.batch_in_epoch)
        if self.train_data.prepare is not None:
            # streamed audio: features are made on the training device
            batch_dev = self.train_data.prepare(to_device(batch, self.device))
            inputs = to_device(self.train_data.to_inputs(batch_dev, key), self.device)
        else:
            inputs = to_device(self.train_data.to_inputs(batch, key), self.device)
            batch_dev = to_device(batch, self.device)
        out = forward_backward(
            self.ddp, self.loss_fn, inputs, batch_dev,
            micro_batch_size=self.micro, autocast=self._autocast,
            no_sync=getattr(self.ddp, "no_sync", None) if self.distributed else None,
            device=self.device,
        )  # fmt: skip
        loss = float(out.loss)
        if not math.isfinite(loss):
            self._undo_step(saved_buffers)
            self._non_finite("loss", loss)
            return None
        params = [p for p in self.model.parameters() if p.grad is not None]
        max_norm = self.cfg.train.grad_clip if self.cfg.train.grad_clip is not None else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        if not math.isfinite(grad_norm):
            self._undo_step(saved_buffers)
            self._non_finite("gradient norm", grad_norm)
            return None
        self.optimizer.step()
        clamp = getattr(self.model, "clamp_logit_scale_", None)
        if callable(clamp):
            clamp()
        self.skipped_in_row = 0
        scale = out.outputs.get("logit_scale") if isinstance(out.outputs, dict) else None
        return {
            "loss": loss,
            "lr": lr,
            "scale": float(scale) if isinstance(scale, Tensor) else None,
            "grad_norm": grad_norm,
        }

    # ----------------------------------------------------------- validation
    def validate(self) -> dict[str, float]:
        """Validation metrics of the current model (see :func:`audiocl.train.validate.validate`)."""
        assert self.val_data is not None
        return validate(
            self.ddp, self.loss_fn, self.val_data,
            batch_size=self.cfg.data.batch_size, seed=self.cfg.train.seed, rank=self.rank,
            world=self.world, make_loader=self._loader, device=self.device, autocast=self._autocast,
        )  # fmt: skip

    def _maybe_best(self, metrics: dict[str, float]) -> None:
        key = self.cfg.train.best_metric
        if key not in metrics:
            raise AudioclError(f"train.best_metric '{key}' is not one of the validation metrics {sorted(metrics)}")
        value = metrics[key]
        better = self.best is None or (
            value < self.best if self.cfg.train.best_mode == "min" else value > self.best
        )
        if not better or not math.isfinite(value):
            return
        self.best = value
        if self.is_main:
            # weights and metadata only: the best model is exported, never resumed from
            files = best_files(self.model, {**self._state(), "metric": value})
            self.best_path = write_folder_atomically(self.output_dir / "best", files)
            if self.on_best is not None:
                self.on_best(self.model, self.best_path)
        if self.distributed:
            dist.barrier()

    # ------------------------------------------------------------------ fit
    def fit(self, *, resume: bool = False, force: bool = False) -> FitResult:
        """Train to ``total_steps``; ``resume`` continues from the newest usable
        checkpoint, ``force`` accepts one written under a different config."""
        torch.manual_seed(self.cfg.train.seed + self.rank)
        np.random.seed(self.cfg.train.seed + self.rank)
        import random

        random.seed(self.cfg.train.seed + self.rank)
        resumed = self._resume(force) if resume else False
        if resumed:
            self.last_saved_step = self.step
        if self.logs.open(resumed=resumed, step=self.step) == self.step:
            self.last_val_step = self.step
        cfg = self.cfg.train
        if self.is_main:
            print(
                f"training: {self.total_steps} steps ({self.steps_per_epoch}/epoch), global batch "
                f"{self.cfg.data.batch_size} on {self.world} worker(s)"
                + (f", micro-batch {self.micro}" if self.micro else "")
                + f", device {self.device.type}; outputs in {self.output_dir}",
                flush=True,
            )
        loader = self._loader(self.train_data, self.sampler)
        progress = Progress(self.total_steps, self.step, enabled=self.is_main and cfg.progress)
        last = {"loss": float("nan")}
        acc_wait = acc_time = 0.0
        acc_items = 0
        while self.step < self.total_steps:
            self.sampler.set_epoch(self.epoch)
            self.sampler.set_start(self.batch_in_epoch)
            # on CUDA the next batch is copied to the device while this one trains
            it = device_batches(loader, self.device)
            while self.step < self.total_steps:
                t0 = time.perf_counter()
                try:
                    batch = next(it)
                except StopIteration:
                    break
                t1 = time.perf_counter()
                result = self.train_step(batch)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                t2 = time.perf_counter()
                acc_wait += t1 - t0
                acc_time += t2 - t0
                acc_items += self.cfg.data.batch_size
                self.step += 1
                self.batch_in_epoch += 1
                progress.tick()
                if result is not None:
                    last = result
                    self.last_loss = result["loss"]
                    if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                        row = {
                            "step": self.step, "epoch": self._log_epoch(), **result,
                            "throughput": acc_items / acc_time if acc_time else None,
                            "data_wait": acc_wait, "step_time": acc_time,
                            "data_wait_frac": acc_wait / acc_time if acc_time else None,
                        }  # fmt: skip
                        self._log_row(row)
                        progress.logged(row)
                        acc_wait = acc_time = 0.0
                        acc_items = 0
                if self.val_data is not None and cfg.val_every and self.step % cfg.val_every == 0:
                    self._val_and_best()
                if cfg.ckpt_every and self.step % cfg.ckpt_every == 0:
                    self.save()
            if self.batch_in_epoch >= self.steps_per_epoch:
                self.epoch += 1
                self.batch_in_epoch = 0
                if self.val_data is not None and not cfg.val_every:
                    self._val_and_best()
                if not cfg.ckpt_every:
                    self.save()
        progress.close()
        if self.val_data is not None and self.last_val_step != self.step:
            self._val_and_best()
        if self.last_saved_step != self.step:
            self.save()
        self.logs.close()
        if self.last_loss is None and self.resumed_loss is not None:
            # a resumed run with no step left reports the loss it stopped at, not NaN
            last = {"loss": self.resumed_loss}
        return FitResult(
            step=self.step, epoch=self.epoch, last_loss=float(last["loss"]),
            best_metric=self.best, best_path=self.best_path, output_dir=self.output_dir,
            history=self.history,
        )  # fmt: skip

    def _log_epoch(self) -> int:
        # logs number epochs from 1: the pass the last step belongs to (just after
        # an epoch ends, self.epoch already counts it and batch_in_epoch is 0)
        return self.epoch + (self.batch_in_epoch > 0)

    def _val_and_best(self) -> None:
        self.last_val_step = self.step
        metrics = self.validate()
        if self.is_main:
            self.logs.val_row(self.step, self._log_epoch(), metrics)
        if self.report is not None and self.is_main:
            self.report({"step": self.step, **metrics})
        self._maybe_best(metrics)
