"""Typed training configuration, loaded from YAML with ``key=value`` overrides.

One file drives both the single-process and the Ray Train path. Every section
rejects unknown keys (``extra="forbid"``) so a typo such as ``optim.lr_rate``
fails loudly, naming the key and the file, instead of silently training with a
default. Errors are :class:`audiocl.errors.InputError` (one line in the CLI).

Example (every section optional except what the run needs)::

    model: conf/model.yaml          # or the model config inline (audiocl.models)
    loss: {name: clip}              # or terms: [{name: clip, weight: 1}, {name: siglip, weight: 0.5}]
    data:
      store: data/store             # made by `audiocl extract`
      manifest: data/train.jsonl    # texts/labels joined by id
      val_manifest: data/val.jsonl
      batch_size: 256               # global: all workers and micro-batches together
      micro_batch_size: 64          # gradient-cached accumulation per worker
      max_frames: 1001
      length_policy: rand_trunc
      num_workers: 2
      inputs: {audio: features, text: texts}
      # or stream from WebDataset shards (LAION layout), no store; see docs/streaming.md:
      # webdataset: shards/{000000..000099}.tar   # a folder of *.tar, a glob or a brace pattern
      # val_webdataset: shards/val-{000000..000001}.tar
      # frontend: {preset: laion_clap}             # or a preset name; log-mel on the training device
      # shuffle_buffer: 1000
      # or stream from any audiocl manifest (prepare hf|lhotse|folder|webdataset), no store:
      # stream_manifest: data/train.jsonl         # + frontend; decoded in the DataLoader workers
      # val_stream_manifest: data/val.jsonl
      # or, for towers fed precomputed vectors: arrays + inputs {tower: array name}
      # arrays: data/train.npz
      # val_arrays: data/val.npz
    optim: {lr: 1.0e-4, weight_decay: 0.2, betas: [0.9, 0.98], eps: 1.0e-6}
    schedule: {warmup_steps: 500, min_lr: 0.0}
    train: {epochs: 10, precision: bf16, grad_clip: 1.0, val_every: 1000,
            ckpt_every: 1000, best_metric: val_r1, best_mode: max, output_dir: exp/clap}
    distributed: {workers: 1, gpus: 0}
    # a frozen teacher for the distill loss (tinyCLAP-style students; docs/distillation.md):
    # distill: {teacher: exp/clap/model, store: data/store_teacher, towers: {audio: teacher_audio}}

Command line: ``audiocl train --config FILE optim.lr=3e-4 data.batch_size=512``.

Relative paths in the file (``data.*`` stores, manifests and arrays,
``train.output_dir``, ``distributed.storage_path``, a ``model`` file, an
inline tower's encoder ``path``/``tokenizer_path``) resolve against the
config file's folder, or, for a file inside a recipe's ``conf/`` folder
(``recipes/X/conf/train.yaml``, ``recipes/X/conf/xor3/symile.yaml``), against
the recipe folder that holds ``conf/``; so a run does not depend on the
working directory. Paths given on the command line (overrides, ``--output``)
are relative to the working directory. Both are made absolute before Ray
Train starts its workers (:func:`absolute_paths`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from audiocl.config_schema import StrictModel, format_validation_error
from audiocl.config_yaml import load_yaml
from audiocl.errors import InputError
from audiocl.overrides import apply_overrides, parse_override

__all__ = [
    "DataConfig",
    "DistillConfig",
    "DistributedConfig",
    "LossConfig",
    "LossTerm",
    "OptimConfig",
    "ScheduleConfig",
    "TrainConfig",
    "TrainingConfig",
    "absolute_paths",
    "apply_overrides",
    "config_anchor",
    "flatten_config",
    "load_config",
    "parse_override",
    "resume_changes",
]


class LossTerm(StrictModel):
    """One weighted term of a combined loss."""

    name: str
    weight: float = 1.0
    kwargs: dict[str, Any] = Field(default_factory=dict)


class LossConfig(StrictModel):
    """``name`` + ``kwargs`` for one loss, or ``terms`` for a weighted sum."""

    name: str = "clip"
    kwargs: dict[str, Any] = Field(default_factory=dict)
    terms: list[LossTerm] | None = None


class DataConfig(StrictModel):
    store: str | None = None
    # paired precomputed inputs (.npz, one array per input) instead of a store
    arrays: str | None = None
    val_arrays: str | None = None
    manifest: str | None = None
    val_store: str | None = None
    val_manifest: str | None = None
    batch_size: int = Field(64, ge=1, description="global batch (all workers, all micro-batches)")
    micro_batch_size: int | None = Field(
        None, ge=1, description="per-worker forward chunk; None = no accumulation"
    )
    num_workers: int = Field(0, ge=0)
    max_frames: int | None = Field(None, ge=1)
    length_policy: str = "repeatpad"
    val_length_policy: str = "repeatpad"
    text_field: str = "texts"
    # one caption per item ("random" of its captions, or the "first"), or "all": every
    # caption of the batch's items, each distinct string once, with batch["text_positives"]
    # [items, captions] marking which items it describes (for the multipositive loss;
    # validation then uses "all" too)
    caption_sampling: Literal["random", "first", "all"] = "random"
    # K > 0: each item's captions are the block [positive, neg_1 .. neg_K], the negatives
    # from the manifest field `hard_negatives` (fewer are padded and masked in
    # batch["hard_negative_mask"]), for the hardneg loss with num_negatives: K
    hard_negatives: int = Field(0, ge=0, description="hard-negative captions per item (loss hardneg)")
    # tower name -> batch field ("features" for log-mels, the text field for text)
    inputs: dict[str, str] = Field(default_factory=lambda: {"audio": "features", "text": "texts"})
    shuffle: bool = True
    drop_last: bool = True
    # manifest items the store does not have: "error" refuses to train (naming
    # the count and the first ids), "skip" leaves them out with a warning.
    # Items the store lists in errors.jsonl (failed extraction) are always
    # left out with a warning. With data.stream_manifest: what an item that fails
    # to decode does (error: stop, naming it; skip: leave it out of its batch).
    on_missing: Literal["error", "skip"] = "error"
    # streaming from WebDataset shards instead of a store (audiocl.data.stream)
    webdataset: str | None = None
    val_webdataset: str | None = None
    # the front-end of streamed audio: a preset name, or {preset: NAME, <param>: value, ...},
    # or every FrontendConfig parameter (a store's features.json "frontend" part)
    frontend: str | dict[str, Any] | None = None
    shuffle_buffer: int = Field(1000, ge=0, description="samples held for the streaming shuffle; 0/1 = none")
    # streaming from any audiocl manifest (audiocl.data.manifest_stream): items decoded on the fly,
    # in the store route's batch order; on_missing says what an item that fails to decode does
    stream_manifest: str | None = None
    val_stream_manifest: str | None = None

    @model_validator(mode="after")
    def _caption_blocks(self) -> DataConfig:
        # both change how many captions a batch has, which micro-batch slicing cannot follow
        if self.hard_negatives and self.caption_sampling == "all":
            raise ValueError("data.hard_negatives and data.caption_sampling=all exclude each other")
        if (self.hard_negatives or self.caption_sampling == "all") and self.micro_batch_size:
            raise ValueError("data.hard_negatives / data.caption_sampling=all do not work with data.micro_batch_size")
        return self

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        audio = [k for k in ("store", "manifest", "val_store", "val_manifest") if getattr(self, k)]
        if self.arrays and audio:
            raise ValueError(f"give data.arrays or data.{audio[0]}, not both (arrays replace the store and manifests)")
        if self.val_arrays and not self.arrays:
            raise ValueError("data.val_arrays needs data.arrays")
        if self.stream_manifest:
            other = [k for k in ("arrays", "webdataset", "val_webdataset", *audio) if getattr(self, k)]
            if other:
                raise ValueError(
                    f"give data.stream_manifest or data.{other[0]}, not both (the manifest's items are "
                    "decoded while training and replace the store, its manifests, shards and arrays)"
                )
            if self.frontend is None:
                raise ValueError(
                    "data.stream_manifest needs data.frontend (a preset name such as laion_clap, or "
                    "{preset: NAME, param: value}): the log-mel is computed while training"
                )
        elif self.val_stream_manifest:
            raise ValueError("data.val_stream_manifest needs data.stream_manifest")
        elif self.webdataset:
            other = [k for k in ("arrays", *audio) if getattr(self, k)]
            if other:
                raise ValueError(
                    f"give data.webdataset or data.{other[0]}, not both (shards carry their own texts "
                    "and labels and replace the store, its manifests and arrays)"
                )
            if self.frontend is None:
                raise ValueError(
                    "data.webdataset needs data.frontend (a preset name such as laion_clap, or "
                    "{preset: NAME, param: value}): the log-mel is computed while training"
                )
            if not self.drop_last:
                raise ValueError(
                    "data.drop_last=false is not supported with data.webdataset (every rank must "
                    "take the same number of steps; a partial last batch is left out)"
                )
        elif self.val_webdataset:
            raise ValueError("data.val_webdataset needs data.webdataset")
        elif self.frontend is not None:
            raise ValueError(
                "data.frontend is only for data.webdataset and data.stream_manifest "
                "(a store records its own front-end)"
            )
        return self


class OptimConfig(StrictModel):
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.2, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = Field(1e-6, gt=0)
    # parameters whose name contains one of these get no weight decay
    no_decay: list[str] = Field(
        default_factory=lambda: ["bias", "norm", "logit_scale", "logit_bias", "bn"]
    )


class ScheduleConfig(StrictModel):
    kind: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    min_lr: float = Field(0.0, ge=0)


class TrainConfig(StrictModel):
    epochs: int | None = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1, description="when set, wins over epochs")
    grad_clip: float | None = Field(1.0, gt=0)
    precision: Literal["fp32", "bf16"] = "fp32"
    seed: int = 0
    log_every: int = Field(10, ge=1)
    val_every: int | None = Field(None, ge=1, description="steps; None = end of each epoch")
    ckpt_every: int | None = Field(None, ge=1, description="steps; None = end of each epoch")
    keep_checkpoints: int = Field(2, ge=1)
    best_metric: str = "val_loss"
    best_mode: Literal["min", "max"] = "min"
    output_dir: str = "exp/run"
    on_nan: Literal["error", "skip"] = "error"
    max_skipped_steps: int = Field(10, ge=0, description="with on_nan=skip: give up after this many in a row")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    progress: bool = True
    # where the run reports (audiocl.train.trackers); csv is always written
    loggers: list[Literal["csv", "tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=lambda: ["csv", "tensorboard"], description="csv always; wandb/mlflow are extras"
    )
    # torch.compile each tower's encoder in place (audiocl.train.device.compile_towers);
    # the first steps then include compilation
    compile: bool = False

    @model_validator(mode="after")
    def _length(self) -> TrainConfig:
        if self.epochs is None and self.max_steps is None:
            raise ValueError("set train.epochs or train.max_steps")
        if "csv" not in self.loggers:
            raise ValueError("train.loggers must include csv (resuming and curves.png read train_log.csv)")
        return self


class DistributedConfig(StrictModel):
    workers: int = Field(1, ge=1)
    gpus: int = Field(0, ge=0, description="GPUs per worker (0 = CPU, gloo)")
    address: str | None = None
    max_failures: int = Field(0, ge=-1)
    name: str | None = None
    storage_path: str | None = None
    # set when some trainable tower gets no input (DDP must then look for unused parameters)
    find_unused_parameters: bool = False


class DistillConfig(StrictModel):
    """A frozen teacher model whose embeddings of the training items the ``distill`` loss
    reads (``batch["teacher_embeddings"][name]``), computed once before the first step."""

    teacher: str | None = Field(None, description="the teacher's model folder (an `audiocl train` export)")
    store: str | None = Field(
        None, description="the teacher's feature store of the items (its own front-end); default: decode the files"
    )
    val_store: str | None = Field(None, description="the same for data.val_manifest (default: distill.store)")
    towers: dict[str, str] = Field(
        default_factory=lambda: {"audio": "teacher_audio"},
        description="teacher tower -> the name the distill loss reads it by",
    )
    batch_size: int = Field(32, ge=1, description="clips per teacher forward pass")

    @model_validator(mode="after")
    def _needs_teacher(self) -> DistillConfig:
        if (self.store or self.val_store) and not self.teacher:
            raise ValueError("distill.store needs distill.teacher (the teacher's model folder)")
        if not self.towers:
            raise ValueError("distill.towers is empty: name at least one teacher tower, e.g. {audio: teacher_audio}")
        return self


class TrainingConfig(StrictModel):
    """The whole training run; ``model`` is the models package's config (dict or path)."""

    model: dict[str, Any] | str = Field(default_factory=dict)
    loss: LossConfig = Field(default_factory=LossConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    prompts: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def validate_config(raw: dict[str, Any], source: str | None = None) -> TrainingConfig:
    try:
        return TrainingConfig.model_validate(raw)
    except ValidationError as err:
        raise InputError(source or "<config>", format_validation_error(err), field=None) from None


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainingConfig:
    """Load a YAML training config, apply ``key=value`` overrides, validate.

    Unknown keys raise :class:`InputError` naming the key and the file (or
    ``<command line>`` when the key came from an override).
    """
    raw: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        p = Path(path)
        if not p.is_file():
            raise InputError(source, "config file not found")
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise InputError(source, f"cannot read: {err}") from None
        loaded = load_yaml(text, source)
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise InputError(source, "top level must be a mapping of sections")
        raw = _resolve_file_paths(loaded, p)
    overrides = list(overrides or [])
    # validate the file alone first so an error in it names the file
    if path is not None:
        validate_config(raw, source)
    if overrides:
        merged = apply_overrides(raw, overrides)
        return validate_config(merged, f"{source} + <command line>")
    return validate_config(raw, source)


# dotted keys of the path-valued options (model and encoder paths handled apart)
PATH_KEYS = (
    "data.store", "data.arrays", "data.val_arrays", "data.manifest", "data.val_store",
    "data.val_manifest", "data.webdataset", "data.val_webdataset", "data.stream_manifest",
    "data.val_stream_manifest", "train.output_dir",
    "distributed.storage_path", "distill.teacher", "distill.store", "distill.val_store",
)  # fmt: skip


def config_anchor(config_file: str | Path) -> Path:
    """The folder relative paths in ``config_file`` resolve against: the recipe
    folder holding the nearest ``conf/`` ancestor, else the file's own folder."""
    folder = Path(config_file).resolve().parent
    for parent in (folder, *folder.parents):
        if parent.name == "conf":
            return parent.parent
    return folder


def _is_relative(value: Any) -> bool:
    return isinstance(value, str) and value != "" and not os.path.isabs(os.path.expanduser(value))


def _resolve_file_paths(raw: dict[str, Any], config_file: Path) -> dict[str, Any]:
    """A copy of ``raw`` with its relative paths made absolute against :func:`config_anchor`."""
    import copy

    anchor = config_anchor(config_file)
    out = copy.deepcopy(raw)
    for dotted in PATH_KEYS:
        section, key = dotted.split(".")
        node = out.get(section)
        if isinstance(node, dict) and _is_relative(node.get(key)):
            node[key] = str(anchor / node[key])
    model = out.get("model")
    if _is_relative(model):
        # a model config file: beside the training config, else under the anchor;
        # anything else stays as written (a shipped config's name, or a cwd path)
        for base in (config_file.resolve().parent, anchor):
            if (base / model).is_file():
                out["model"] = str(base / model)
                break
    elif isinstance(model, dict):
        _resolve_encoder_paths(model, anchor)
    return out


def _resolve_encoder_paths(model: dict[str, Any], base: Path) -> None:
    towers = model.get("towers")
    if not isinstance(towers, dict):
        return
    for tower in towers.values():
        enc = tower.get("encoder") if isinstance(tower, dict) else None
        if not isinstance(enc, dict):
            continue
        for key in ("path", "tokenizer_path"):
            value = enc.get(key)
            # only what exists there: a hub-style name ("org/model") is left for
            # the encoder to refuse with its own message
            if _is_relative(value) and (base / value).exists():
                enc[key] = str(base / value)


def absolute_paths(cfg: TrainingConfig, base: str | Path | None = None) -> TrainingConfig:
    """A copy of ``cfg`` with every relative path made absolute against ``base``
    (default: the working directory). Ray Train runs each worker in a folder of
    its own, so the driver calls this before any worker starts."""
    base = Path(base) if base is not None else Path.cwd()
    raw = cfg.to_dict()
    for dotted in PATH_KEYS:
        section, key = dotted.split(".")
        if _is_relative(raw[section].get(key)):
            raw[section][key] = str((base / raw[section][key]).resolve())
    model = raw.get("model")
    if _is_relative(model) and (base / model).is_file():
        raw["model"] = str((base / model).resolve())
    elif isinstance(model, dict):
        _resolve_encoder_paths(model, base)
    return TrainingConfig.model_validate(raw)


# Options a resumed run may change: how long it runs, what it logs and where,
# and how it is executed. Everything else (model, loss, data, optimiser,
# schedule, seed, precision, ...) would make the resumed steps differ from
# the run the checkpoint belongs to.
RESUME_ALLOWED = (
    "train.epochs", "train.max_steps", "train.log_every", "train.progress", "train.val_every",
    "train.ckpt_every", "train.keep_checkpoints", "train.output_dir", "train.on_nan",
    "train.max_skipped_steps", "train.device", "train.loggers", "train.compile", "data.num_workers",
    "distributed.address",
    "distributed.name", "distributed.storage_path", "distributed.max_failures",
)  # fmt: skip


def flatten_config(d: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists and empty dicts are leaves)."""
    if isinstance(d, dict) and d:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flatten_config(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def resume_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted keys whose value differs between two ``TrainingConfig.to_dict()``
    outputs, leaving out :data:`RESUME_ALLOWED` (sorted)."""
    a, b = flatten_config(old), flatten_config(new)
    changed = [k for k in sorted(set(a) | set(b)) if a.get(k, "<unset>") != b.get(k, "<unset>")]
    return [k for k in changed if not any(k == p or k.startswith(p + ".") for p in RESUME_ALLOWED)]
