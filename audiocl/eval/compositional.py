"""CompA-style caption choice: pick a clip's caption among its swapped hard negatives.

For clip ``i`` with audio embedding ``a_i`` [d] and candidate captions
``c_i0 .. c_iK`` [1+K, d] (``c_i0`` the right one, the rest the swapped
compositions of :mod:`audiocl.data.compose`; rows L2-normalised)::

    s_ik    = <a_i, c_ik>
    correct = 1 if s_i0 > max_{k >= 1, valid} s_ik else 0      (a tie is wrong)
    accuracy = mean_i correct_i,   chance = mean_i 1 / (1 + K_i)

Also per composition kind, and ``order``: for the sequence clips, the right
caption against the reversed order alone (chance 1/2), the order question of
CompA-order.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F

from audiocl.errors import AudioclError

__all__ = ["caption_choice", "run_caption_choice"]


def caption_choice(
    audio: torch.Tensor, captions: torch.Tensor, valid: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(correct [N] bool, scores [N, 1+K])`` for ``audio`` [N, d] and ``captions`` [N, 1+K, d]."""
    if captions.dim() != 3 or captions.shape[0] != audio.shape[0] or captions.shape[1] < 2:
        raise AudioclError(f"caption choice: captions must be [N, 1+K>=2, d] for audio {tuple(audio.shape)}, "
                           f"got {tuple(captions.shape)}")  # fmt: skip
    a = F.normalize(audio.double(), dim=-1)
    c = F.normalize(captions.double(), dim=-1)
    scores = torch.einsum("nd,nkd->nk", a, c)
    if valid is not None:
        scores = scores.masked_fill(~valid.to(torch.bool), float("-inf"))
    correct = scores[:, 0] > scores[:, 1:].max(dim=1).values
    return correct, scores


def _block(correct: torch.Tensor, n_choices: torch.Tensor) -> dict[str, Any]:
    return {"accuracy": float(correct.double().mean()), "chance": float((1.0 / n_choices.double()).mean()),
            "n_items": int(correct.numel())}  # fmt: skip


def run_caption_choice(
    model_dir: str | os.PathLike,
    manifest: str | os.PathLike,
    *,
    store: str | os.PathLike | None = None,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Load a model and a manifest whose items carry ``hard_negatives`` (and
    ``composition``) and score the caption choice; returns the results dict."""
    from audiocl.eval.embed import embed_items_audio, embed_strings
    from audiocl.eval.zeroshot import read_items
    from audiocl.models import load_model

    items = read_items(manifest)
    bad = [it.id for it in items if not it.texts or not it.custom.get("hard_negatives")]
    if bad:
        raise AudioclError(f"{manifest}: item {bad[0]!r} needs texts and hard_negatives for the caption choice")
    k = max(len(it.custom["hard_negatives"]) for it in items)
    blocks: list[str] = []
    valid = torch.zeros(len(items), 1 + k, dtype=torch.bool)
    for i, it in enumerate(items):
        negs = [str(t) for t in it.custom["hard_negatives"]]
        blocks += [it.texts[0], *negs, *[it.texts[0]] * (k - len(negs))]
        valid[i, : 1 + len(negs)] = True
    model = load_model(model_dir)
    audio = embed_items_audio(model, items, store=store, batch_size=batch_size)
    text = embed_strings(model, blocks).reshape(len(items), 1 + k, -1)
    correct, scores = caption_choice(audio, text, valid)
    n_choices = valid.sum(1)
    res: dict[str, Any] = {"eval": "caption_choice", **_block(correct, n_choices), "per_kind": {}}
    kinds = [str(it.custom.get("composition", "all")) for it in items]
    for kind in sorted(set(kinds)):
        m = torch.tensor([x == kind for x in kinds])
        res["per_kind"][kind] = _block(correct[m], n_choices[m])
    # order: the right caption against the reversed order only (hard_negatives[0] of a sequence)
    seq = torch.tensor([x == "sequence" for x in kinds])
    if bool(seq.any()):
        order = scores[seq, 0] > scores[seq, 1]
        res["order"] = _block(order, torch.full((int(seq.sum()),), 2))
    res.update({"model": str(model_dir), "manifest": str(manifest), "store": None if store is None else str(store),
                "captions": [it.texts[0] for it in items[:3]], "hard_negatives": [it.custom["hard_negatives"]
                                                                                  for it in items[:3]]})  # fmt: skip
    return res
