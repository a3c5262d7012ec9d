"""A frozen teacher's embeddings of the training items, for the ``distill`` loss.

A tinyCLAP-style student (Paissan & Farella, Interspeech 2024) learns to put
its audio embedding where the teacher puts the same clip's. The teacher is a
model folder (an ``audiocl train`` export) that may use another front-end and
another store than the student: it is run once, before the first step, over
every item of the training (and validation) manifest with the one embedding
path of evaluation (:func:`audiocl.eval.embed.embed_items_audio`: the teacher's
own front-end and clip rule, whole clips, from ``distill.store`` when given,
where a frozen tower's extracted outputs are used instead of its encoder),
then dropped. Only its embeddings and its logit scale stay::

    vectors[name]   Tensor[items, d]   unit rows, one per manifest item
    logit_scale     float              exp of the teacher's temperature parameter

:meth:`TeacherTargets.attach` adds to a collated batch (ids ``[B]``)::

    batch["teacher_embeddings"][name]  Tensor[B, d]   the rows of the batch's ids
    batch["teacher_logit_scale"]       Tensor[]       the teacher's scale

The teacher sees each clip whole, the student what its length policy gives
(a random crop under ``rand_trunc``): the target is the clip's embedding, the
one evaluation computes.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from audiocl.errors import AudioclError

__all__ = ["TeacherTargets", "build_teacher_targets", "load_teacher"]


class TeacherTargets:
    """Per-item teacher embeddings by id; :meth:`attach` puts a batch's rows into it."""

    def __init__(self, ids: Sequence[str], vectors: Mapping[str, torch.Tensor], logit_scale: float) -> None:
        self.row = {str(i): k for k, i in enumerate(ids)}
        if len(self.row) != len(ids):
            raise AudioclError("teacher targets: the item ids repeat")
        for name, v in vectors.items():
            if v.ndim != 2 or v.shape[0] != len(ids):
                raise AudioclError(f"teacher targets '{name}': expected [{len(ids)}, d], got {list(v.shape)}")
        self.vectors = {name: v.float() for name, v in vectors.items()}
        self.logit_scale = float(logit_scale)

    def attach(self, batch: dict[str, Any], where: str = "the training manifest") -> None:
        """``batch["teacher_embeddings"]`` and ``batch["teacher_logit_scale"]`` for ``batch["ids"]``."""
        ids = [str(i) for i in batch["ids"]]
        unknown = [i for i in ids if i not in self.row]
        if unknown:
            raise AudioclError(f"distill: item {unknown[0]!r} has no teacher embedding ({where})")
        rows = torch.tensor([self.row[i] for i in ids], dtype=torch.long)
        batch["teacher_embeddings"] = {name: v.index_select(0, rows) for name, v in self.vectors.items()}
        batch["teacher_logit_scale"] = torch.tensor(self.logit_scale)


def load_teacher(teacher: str, towers: Mapping[str, str]) -> Any:
    """The teacher model folder, loaded once, in eval mode; its ``towers`` checked."""
    from audiocl.models import load_model

    try:
        model = load_model(teacher)
    except (OSError, AudioclError) as err:
        raise AudioclError(f"distill.teacher {teacher}: not a model folder ({err})") from None
    for name in towers:
        if name not in model.towers:
            raise AudioclError(f"distill.towers: the teacher {teacher} has no tower '{name}' "
                               f"(it has {sorted(model.towers)})")  # fmt: skip
        if model.towers[name].modality not in ("audio", "speech"):
            raise AudioclError(f"distill.towers: teacher tower '{name}' is a {model.towers[name].modality} "
                               "tower; only audio and speech towers are distilled from here")  # fmt: skip
    return model.eval()


def build_teacher_targets(
    teacher: str | Any,
    manifest: str,
    towers: Mapping[str, str],
    *,
    store: str | None = None,
    ids: Sequence[str] | None = None,
    batch_size: int = 32,
) -> TeacherTargets:
    """Embed the items of ``manifest`` (those in ``ids`` when given) with the teacher's
    audio towers (``towers``: teacher tower -> name in the batch) once. ``teacher``: a
    model folder, or a model :func:`load_teacher` returned (loaded once for the train
    and val manifests)."""
    from audiocl.data.manifest import load_manifest
    from audiocl.eval.embed import embed_items_audio

    model = load_teacher(teacher, towers) if isinstance(teacher, str) else teacher
    items = load_manifest(manifest)
    if ids is not None:
        wanted = set(ids)
        items = [it for it in items if it.id in wanted]
    if not items:
        raise AudioclError(f"distill: no items of {manifest} to embed with the teacher")
    print(f"train: distill: embedding {len(items)} items of {manifest} with the teacher"
          f" ({', '.join(towers)})", file=sys.stderr)  # fmt: skip
    with torch.no_grad():
        vectors = {out: embed_items_audio(model, items, store=store, tower=name, batch_size=batch_size)
                   for name, out in towers.items()}  # fmt: skip
        scale = float(model.scale())
    return TeacherTargets([it.id for it in items], vectors, scale)
