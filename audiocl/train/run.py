"""From a :class:`TrainingConfig` to a trained model folder (single process).

``build_components(cfg)`` makes the model, the loss and the data from the
config alone (also called inside each Ray Train worker);
``train(cfg, resume=...)`` runs the loop and exports ``<output>/model``, a
folder :func:`audiocl.models.load_model` reads (``save_pretrained`` of the
best checkpoint, or the last one without validation, with the store's
front-end as ``frontend.json`` and the config's prompts as ``prompts.json``).
"""

from __future__ import annotations

import errno
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from audiocl.errors import AudioclError
from audiocl.fsutil import atomic_write_text
from audiocl.train.config import TrainingConfig
from audiocl.train.data import TrainData

if TYPE_CHECKING:
    from audiocl.train.loop import FitResult
    from audiocl.train.teacher import TeacherTargets

_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)

__all__ = [
    "Components", "build_components", "build_loss_from_config", "check_missing", "export_model", "fit_numbers",
    "train", "train_summary",
]  # fmt: skip


@dataclass
class Components:
    model: nn.Module
    loss: nn.Module
    train_data: TrainData
    val_data: TrainData | None
    frontend: Any = None


def build_loss_from_config(cfg: TrainingConfig) -> nn.Module:
    from audiocl.losses import CombinedLoss, build_loss

    terms = cfg.loss.terms or [cfg.loss]
    # built first: a mistake in the loss's own arguments is named before the data layout
    if cfg.loss.terms:
        loss: nn.Module = CombinedLoss([(t.name, t.weight, build_loss(t.name, **t.kwargs)) for t in cfg.loss.terms])
    else:
        loss = build_loss(cfg.loss.name, **cfg.loss.kwargs)
    for t in terms:
        # the data lays captions out for the loss: refuse a layout the loss would misread
        if t.name == "hardneg" and int(t.kwargs.get("num_negatives", 1)) != cfg.data.hard_negatives:
            raise AudioclError(
                f"loss hardneg num_negatives={t.kwargs.get('num_negatives', 1)} needs "
                f"data.hard_negatives={t.kwargs.get('num_negatives', 1)} (it is {cfg.data.hard_negatives})"
            )
        if t.name == "multipositive" and cfg.data.caption_sampling != "all":
            raise AudioclError("loss multipositive needs data.caption_sampling=all (every caption of an item)")
        if t.name == "distill":
            _check_distill_term(cfg, t.kwargs)
    if cfg.distill.teacher and not any(t.name == "distill" for t in terms):
        raise AudioclError(f"distill.teacher is set ({cfg.distill.teacher}) but no loss term is 'distill': "
                           "the teacher would be run for nothing")  # fmt: skip
    return loss


def _check_distill_term(cfg: TrainingConfig, kwargs: dict[str, Any]) -> None:
    """A distill term's teacher must be what ``distill`` provides, before anything is embedded."""
    teacher = str(kwargs.get("teacher", "teacher_audio"))
    provided = sorted(cfg.distill.towers.values()) if cfg.distill.teacher else []
    if teacher not in provided:
        raise AudioclError(
            f"loss distill reads teacher embeddings '{teacher}', but "
            + (f"distill.towers provides {provided}" if provided else
               "no teacher is set: give distill.teacher (a model folder) and distill.towers "
               f"{{<teacher tower>: {teacher}}}")
        )  # fmt: skip
    if (cfg.data.arrays or cfg.data.webdataset or cfg.data.stream_manifest) and cfg.distill.teacher:
        raise AudioclError("distill.teacher works with data.store + data.manifest (the teacher embeds the "
                           "manifest's items); not with data.arrays, data.webdataset or data.stream_manifest")


class FeatureCollate:
    """``collate_features`` with the config's length policy (picklable for workers)."""

    def __init__(self, max_frames: int | None, policy: str) -> None:
        self.max_frames, self.policy = max_frames, policy

    def __call__(self, items: list[dict[str, Any]], seed: int) -> dict[str, Any]:
        from audiocl.data.loader import collate_features

        return collate_features(items, max_frames=self.max_frames, policy=self.policy, seed=seed)


class ModelInputs:
    """Maps a collated batch to the model's input dict using ``data.inputs``.

    ``features`` fields also pass their ``lengths``; list-of-caption fields
    get one caption per item (random with the batch's generator, or the first),
    or, with ``sampling="all"``, every distinct caption of the batch once, and
    ``batch["text_positives"]`` (bool [items, captions]: caption j is one of
    item i's) is added for the multipositive loss. With ``hard_negatives=K``
    each item gives the block ``[its caption, *item["hard_negatives"][:K]]``
    (a shorter list is padded with the positive) and ``batch["hard_negative_mask"]``
    (bool [items, 1+K], False on padding) is added for the hardneg loss.
    """

    def __init__(
        self, mapping: dict[str, str], input_keys: dict[str, str], sampling: str, *, pass_ids: bool = False,
        hard_negatives: int = 0, teacher: TeacherTargets | None = None, where: str = "",
    ) -> None:
        self.mapping, self.keys, self.sampling = dict(mapping), dict(input_keys), sampling
        # ids key a frozen tower's embedding cache; only sound when an item's
        # features are the same every epoch (no random crop)
        self.pass_ids = pass_ids
        self.hard_negatives = hard_negatives
        # the distill loss's targets, added to the batch (audiocl.train.teacher)
        self.teacher, self.where = teacher, where

    def _captions(self, batch: dict[str, Any], field: str, tower: str, batch_key: tuple[int, int, int]) -> list[str]:
        import torch

        from audiocl.train.data import item_rng

        value = batch[field]
        ids = batch.get("ids", [None] * len(value))
        for item_id, caps in zip(ids, value):
            if not caps:
                raise AudioclError(f"item {item_id!r} has no '{field}' for tower '{tower}'")
        if self.sampling == "all":
            distinct = list(dict.fromkeys(str(c) for caps in value for c in caps))
            col = {c: j for j, c in enumerate(distinct)}
            pos = torch.zeros(len(value), len(distinct), dtype=torch.bool)
            for i, caps in enumerate(value):
                pos[i, [col[str(c)] for c in caps]] = True
            batch["text_positives"] = pos
            return distinct
        picked = []
        for item_id, caps in zip(ids, value):
            j = int(item_rng(batch_key, item_id).integers(len(caps))) if self.sampling == "random" else 0
            picked.append(str(caps[j]))
        if not self.hard_negatives:
            return picked
        K = self.hard_negatives
        if "hard_negatives" not in batch:
            raise AudioclError("data.hard_negatives: the batch has no field 'hard_negatives' (a manifest field)")
        blocks, mask = [], torch.zeros(len(picked), 1 + K, dtype=torch.bool)
        for i, (item_id, pos_cap, negs) in enumerate(zip(ids, picked, batch["hard_negatives"])):
            negs = [str(n) for n in (negs or [])][:K]
            if not negs:
                raise AudioclError(f"item {item_id!r} has no 'hard_negatives' (data.hard_negatives={K})")
            blocks += [pos_cap, *negs, *[pos_cap] * (K - len(negs))]
            mask[i, : 1 + len(negs)] = True
        batch["hard_negative_mask"] = mask
        return blocks

    def __call__(self, batch: dict[str, Any], batch_key: tuple[int, int, int]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for tower, field in self.mapping.items():
            key = self.keys.get(tower, tower)
            if field not in batch:
                raise AudioclError(f"data.inputs.{tower}: the batch has no field '{field}' (has {sorted(batch)})")
            value = batch[field]
            if isinstance(value, list) and value and isinstance(value[0], (list, tuple)):
                value = self._captions(batch, field, tower, batch_key)
            out[key] = value
            if field == "features" and "lengths" in batch:
                out[f"{key}_lengths"] = batch["lengths"]
            if field == "features" and self.pass_ids and "ids" in batch:
                out[f"{key}_ids"] = list(batch["ids"])
        if self.teacher is not None:
            self.teacher.attach(batch, self.where)
        return out


def _val_sampling(cfg: TrainingConfig, val: bool) -> str:
    """Validation takes each item's first caption, except under ``all`` (the loss needs every one)."""
    return "first" if val and cfg.data.caption_sampling != "all" else cfg.data.caption_sampling


def _data(
    cfg: TrainingConfig, store: str, manifest: str | None, input_keys: dict[str, str], *, val: bool,
    teacher_model: Any = None,
) -> TrainData:
    from audiocl.data.loader import FeatureDataset, ShardShuffleSampler

    ds = FeatureDataset(store, manifest, fields=("hard_negatives",) if cfg.data.hard_negatives else ())
    if len(ds) == 0:
        raise AudioclError(f"no items in store {store}" + (f" joined with {manifest}" if manifest else ""))
    if manifest is not None and ds.missing:
        check_missing(ds.missing, ds.store.errors(), manifest, store, cfg.data.on_missing,
                      "data.val_manifest" if val else "data.manifest")  # fmt: skip
    policy = cfg.data.val_length_policy if val else cfg.data.length_policy
    order = None
    if not val and cfg.data.shuffle:
        shards = ds.shards()
        shuffler = ShardShuffleSampler(shards, seed=cfg.train.seed, window=None)

        def order(epoch: int, seed: int, _s: ShardShuffleSampler = shuffler) -> np.ndarray:
            _s.set_epoch(epoch)
            return _s.permutation()

    teacher = None
    if cfg.distill.teacher:
        from audiocl.train.teacher import build_teacher_targets

        if manifest is None:
            raise AudioclError(f"distill.teacher needs {'data.val_manifest' if val else 'data.manifest'}: "
                               "the teacher embeds the manifest's items")  # fmt: skip
        teacher_store = (cfg.distill.val_store or cfg.distill.store) if val else cfg.distill.store
        teacher = build_teacher_targets(teacher_model or cfg.distill.teacher, manifest, cfg.distill.towers,
                                        store=teacher_store, ids=ds.ids, batch_size=cfg.distill.batch_size)  # fmt: skip
    return TrainData(
        dataset=ds,
        collate=FeatureCollate(cfg.data.max_frames, policy),
        to_inputs=ModelInputs(
            cfg.data.inputs, input_keys, _val_sampling(cfg, val),
            pass_ids="rand" not in policy, hard_negatives=cfg.data.hard_negatives,
            teacher=teacher, where=f"{'data.val_manifest' if val else 'data.manifest'} {manifest}",
        ),  # fmt: skip
        order=order,
    )


def check_missing(
    missing: list[str], store_errors: list[dict[str, Any]], manifest: str, store: str, policy: str, field: str
) -> None:
    """Manifest items that are not in the store are never dropped without a word.

    Items the store records as failed (its ``errors.jsonl``: undecodable or
    empty audio) are left out with a warning on stderr, as extraction
    designed; items the store has never seen (a manifest from another corpus
    or an unfinished extraction) are refused unless ``data.on_missing: skip``,
    which leaves them out with the same warning.
    """
    import sys

    failed = {str(e.get("id")) for e in store_errors}
    unknown = [i for i in missing if i not in failed]
    if unknown and policy != "skip":
        raise AudioclError(
            f"{field} {manifest}: {len(unknown)} of its items are not in the store {store} "
            f"(first: {', '.join(repr(i) for i in unknown[:3])}); extract them, or set "
            "data.on_missing=skip to train without them"
        )
    known = len(missing) - len(unknown)
    parts = []
    if known:
        parts.append(f"{known} failed extraction (see {store}/errors.jsonl)")
    if unknown:
        parts.append(f"{len(unknown)} not in the store (data.on_missing=skip)")
    print(
        f"warning: {field} {manifest}: leaving out {len(missing)} item(s) without features: "
        f"{'; '.join(parts)}; first: {', '.join(repr(i) for i in missing[:3])}",
        file=sys.stderr, flush=True,
    )  # fmt: skip


class ArrayInputs:
    """Maps a collated array batch to the model's input dict: ``{input key: batch[array]}``."""

    def __init__(self, mapping: dict[str, str], input_keys: dict[str, str]) -> None:
        self.mapping, self.keys = dict(mapping), dict(input_keys)

    def __call__(self, batch: dict[str, Any], batch_key: tuple[int, int, int]) -> dict[str, Any]:
        return {self.keys.get(tower, tower): batch[name] for tower, name in self.mapping.items()}


def _array_data(cfg: TrainingConfig, path: str, input_keys: dict[str, str]) -> TrainData:
    from audiocl.data.arrays import ArrayDataset, collate_arrays

    ds = ArrayDataset(path, list(dict.fromkeys(cfg.data.inputs.values())))
    return TrainData(dataset=ds, collate=collate_arrays, to_inputs=ArrayInputs(cfg.data.inputs, input_keys))


def _model_and_input_keys(cfg: TrainingConfig, frontend: Any) -> tuple[nn.Module, dict[str, str]]:
    """The model (seeded, so every rank starts from the same weights; DDP also
    broadcasts rank 0's) and each tower's input key; ``data.inputs`` naming a
    tower the model lacks is refused."""
    import torch

    from audiocl.models import MultiTowerModel

    torch.manual_seed(cfg.train.seed)
    model = MultiTowerModel.from_config(cfg.model, frontend=frontend, prompts=cfg.prompts)
    keys = {name: model.input_key(name) for name in model.tower_names}
    unknown = [t for t in cfg.data.inputs if t not in keys]
    if unknown:
        raise AudioclError(f"data.inputs names tower(s) {unknown} the model does not have ({sorted(keys)})")
    return model, keys


def build_components(cfg: TrainingConfig) -> Components:
    """Model, loss and data from the config (same on every rank)."""
    from audiocl.progress import quiet_library_bars

    quiet_library_bars()  # no "Loading weights" bar in a log file
    if cfg.data.arrays:
        return _build_array_components(cfg)
    if cfg.data.webdataset or cfg.data.stream_manifest:
        return _build_stream_components(cfg)
    if not cfg.data.store:
        raise AudioclError(
            "data.store is required (a feature store made by `audiocl extract`), "
            "or data.arrays (an .npz of paired inputs)"
        )
    from audiocl.data.store import FeatureStore

    frontend = FeatureStore(cfg.data.store).config
    loss = build_loss_from_config(cfg)  # its mistakes named before the teacher embeds anything
    model, keys = _model_and_input_keys(cfg, frontend)
    teacher = None
    if cfg.distill.teacher:
        from audiocl.train.teacher import load_teacher

        teacher = load_teacher(cfg.distill.teacher, cfg.distill.towers)  # once, for both manifests
    train_data = _data(cfg, cfg.data.store, cfg.data.manifest, keys, val=False, teacher_model=teacher)
    val_data = None
    if cfg.data.val_manifest or cfg.data.val_store:
        val_data = _data(cfg, cfg.data.val_store or cfg.data.store, cfg.data.val_manifest, keys, val=True,
                         teacher_model=teacher)  # fmt: skip
    del teacher  # only its embeddings are kept
    for store in dict.fromkeys(s for s in (cfg.data.store, cfg.data.val_store) if s):
        _prime_frozen_towers(model, store, cfg.data.length_policy)
    return Components(model, loss, train_data, val_data, frontend)


def _prime_frozen_towers(model: nn.Module, store: str, policy: str) -> None:
    """Frozen, cached audio towers take their outputs from the store's tower features
    (``audiocl.data.tower_features``) when it holds them for the same weights."""
    import sys

    from audiocl.data.tower_features import prime_tower_cache, store_tower_keys

    if not store_tower_keys(store):
        return
    for name, tower in model.towers.items():
        if tower.cache is None or tower.modality not in ("audio", "speech"):
            continue
        try:
            n = prime_tower_cache(tower, store)
        except AudioclError as err:
            print(f"train: towers.{name}: the store's tower features are not used: {err}", file=sys.stderr)
            continue
        note = "" if "rand" not in policy else (
            f"; unused under the random length policy {policy!r} (batches carry no ids)")
        print(f"train: towers.{name}: {n} whole-clip encoder outputs from {store}{note}", file=sys.stderr)


def _stream_data(cfg: TrainingConfig, pattern: str, frontend: Any, input_keys: dict[str, str], *, val: bool) -> TrainData:
    from audiocl.data.stream import DeviceFeatures, StreamCollate, WebDatasetSource

    field = "data.val_webdataset" if val else "data.webdataset"
    source = WebDatasetSource(pattern, field)
    policy = cfg.data.val_length_policy if val else cfg.data.length_policy
    return TrainData(
        dataset=source,
        collate=StreamCollate(frontend, cfg.data.max_frames, policy),
        to_inputs=ModelInputs(
            cfg.data.inputs, input_keys, _val_sampling(cfg, val),
            pass_ids="rand" not in policy,
        ),  # fmt: skip
        stream=source,
        prepare=DeviceFeatures(frontend),
    )


def _manifest_stream_data(
    cfg: TrainingConfig, path: str, frontend: Any, input_keys: dict[str, str], *, val: bool
) -> TrainData:
    """Items of any manifest decoded on the fly, in the store route's batch order
    (:mod:`audiocl.data.manifest_stream`)."""
    from audiocl.data.manifest_stream import ManifestAudio, ManifestCollate, ManifestFeatures

    field = "data.val_stream_manifest" if val else "data.stream_manifest"
    policy = cfg.data.val_length_policy if val else cfg.data.length_policy
    return TrainData(
        dataset=ManifestAudio(path, frontend, field),
        collate=ManifestCollate(frontend, cfg.data.max_frames, policy),
        to_inputs=ModelInputs(
            cfg.data.inputs, input_keys, _val_sampling(cfg, val),
            pass_ids="rand" not in policy,
        ),  # fmt: skip
        prepare=ManifestFeatures(frontend, field, path, cfg.data.on_missing),
    )


def _build_stream_components(cfg: TrainingConfig) -> Components:
    """Model, loss and streamed data from WebDataset shards (:mod:`audiocl.data.stream`)
    or from a manifest's items decoded on the fly (:mod:`audiocl.data.manifest_stream`)."""

    from audiocl.data.stream import frontend_from_spec

    assert (cfg.data.webdataset or cfg.data.stream_manifest) and cfg.data.frontend is not None
    frontend = frontend_from_spec(cfg.data.frontend)
    model, keys = _model_and_input_keys(cfg, frontend)
    bad = [t for t, f in cfg.data.inputs.items() if f not in ("features", "texts", "labels")]
    if bad:
        raise AudioclError(
            f"data.inputs: streamed batches carry features, texts and labels; tower(s) {bad} ask for "
            f"{sorted({cfg.data.inputs[t] for t in bad})}"
        )
    val_data = None
    if cfg.data.stream_manifest:
        train_data = _manifest_stream_data(cfg, cfg.data.stream_manifest, frontend, keys, val=False)
        if cfg.data.val_stream_manifest:
            val_data = _manifest_stream_data(cfg, cfg.data.val_stream_manifest, frontend, keys, val=True)
    else:
        assert cfg.data.webdataset is not None
        train_data = _stream_data(cfg, cfg.data.webdataset, frontend, keys, val=False)
        if cfg.data.val_webdataset:
            val_data = _stream_data(cfg, cfg.data.val_webdataset, frontend, keys, val=True)
    return Components(model, build_loss_from_config(cfg), train_data, val_data, frontend)


def _build_array_components(cfg: TrainingConfig) -> Components:
    import torch

    from audiocl.models import MultiTowerModel

    assert cfg.data.arrays is not None
    torch.manual_seed(cfg.train.seed)
    model = MultiTowerModel.from_config(cfg.model, prompts=cfg.prompts)
    keys = {name: model.input_key(name) for name in model.tower_names}
    unknown = [t for t in cfg.data.inputs if t not in keys]
    if unknown:
        raise AudioclError(f"data.inputs names tower(s) {unknown} the model does not have ({sorted(keys)})")
    train_data = _array_data(cfg, cfg.data.arrays, keys)
    val_data = _array_data(cfg, cfg.data.val_arrays, keys) if cfg.data.val_arrays else None
    return Components(model, build_loss_from_config(cfg), train_data, val_data, None)


def export_model(cfg: TrainingConfig, model: nn.Module, output_dir: Path) -> Path:
    """Write ``output_dir/model`` from the best checkpoint (else the model as it is)."""
    from safetensors.torch import load_file

    from audiocl.train.checkpoint import unwrap

    model = unwrap(model)
    best = output_dir / "best" / "model.safetensors"
    if best.is_file():
        model.load_state_dict(load_file(str(best)))
    if cfg.prompts is not None and hasattr(model, "prompts"):
        model.prompts = list(cfg.prompts)
    if not hasattr(model, "save_pretrained"):
        raise AudioclError("the model has no save_pretrained(); cannot export a model folder")
    out = model.save_pretrained(output_dir / "model")
    # a full disk never leaves half a file
    atomic_write_text(output_dir / "config.resolved.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
    return Path(out)


def train(
    cfg: TrainingConfig,
    *,
    resume: bool = False,
    components: Components | None = None,
    overwrite: bool = False,
    force: bool = False,
) -> dict[str, Any]:
    """Single-process training; returns a summary dict (paths, steps, metrics).

    A used ``train.output_dir`` is refused unless ``resume`` (continue it;
    ``force`` also accepts a changed config) or ``overwrite`` (its previous
    run is removed once the new run's model and data are built).
    """
    from audiocl.train.checkpoint import clear_run, disk_error, prepare_output_dir
    from audiocl.train.loop import Trainer

    out = Path(cfg.train.output_dir)
    prepare_output_dir(out, resume=resume, overwrite=overwrite)
    comp = components or build_components(cfg)
    if overwrite:
        clear_run(out)
    try:
        trainer = Trainer(cfg, comp.model, comp.loss, comp.train_data, comp.val_data)
        result = trainer.fit(resume=resume, force=force)
        model_dir = export_model(cfg, comp.model, out)
    except OSError as err:
        if err.errno in _DISK_ERRNOS:
            raise disk_error(err, f"the outputs of the run in {out}") from None
        raise
    return train_summary(out, model_dir, fit_numbers(result))


def fit_numbers(result: FitResult) -> dict[str, Any]:
    """The numbers of a :class:`~audiocl.train.loop.FitResult` that the summary reports:
    ``steps``, ``epochs``, ``last_loss`` (the last step's training loss) and ``best_metric``
    (the best value of ``train.best_metric`` over the validations; None without validation)."""
    return {
        "steps": int(result.step),
        "epochs": int(result.epoch),
        "last_loss": None if result.last_loss is None else float(result.last_loss),
        "best_metric": None if result.best_metric is None else float(result.best_metric),
    }


def train_summary(output_dir: str | Path, model_dir: str | Path | None, numbers: dict[str, Any]) -> dict[str, Any]:
    """What ``audiocl train`` prints at the end (one JSON line), the same for one process
    and for Ray workers: ``output_dir``, ``model_dir``, ``latest_checkpoint`` and the
    :func:`fit_numbers` of the run (under Ray, rank 0's, which it hands to the driver)."""
    from audiocl.train.checkpoint import find_latest

    out = Path(output_dir)
    latest = find_latest(out)
    return {
        "output_dir": str(out),
        "model_dir": str(model_dir) if model_dir is not None else None,
        "latest_checkpoint": str(latest) if latest else None,
        **{k: numbers.get(k) for k in ("steps", "epochs", "last_loss", "best_metric")},
    }
