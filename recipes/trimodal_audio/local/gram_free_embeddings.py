#!/usr/bin/env python3
"""GRAM investigation (README, "GRAM investigation"): the higher-order task with free class-level embeddings.

No audio, no towers: one free vector per language (5 speech vectors), per instrument
(5 note vectors) and per text permutation (120 text vectors; or, with ``--additive``,
``t_p = sum_l W[l, p(l)]``, a linear function of one-hot slot contents), unit-normalised.
This separates what the objective can represent and learn from what the towers
learn on instance features.

- ``direct``: optimise the class-level retrieval objective itself (softmax over the
  5 notes, 5 languages, 120 texts of each query, as local/evaluate.py scores them),
  with GRAM's volume or Symile's MIP as the score: can the score represent the rule?
- ``batch``: train with the recipe's own batch losses (``audiocl.losses.build_loss``:
  gram / symile / pairwise, text first) on tuples sampled as make_arrays.py draws
  them (uniform language, uniform permutation, the note = the instrument in the
  language's slot), batch 256: can the loss learn it?
- ``escape``: steps of Adam (lr 1e-3, batch 256, d 64) until the mean class-level
  top-1 first exceeds 60% (checked every 100 steps): how long each loss sits on
  its initial plateau.

Prints one JSON line per run: class-level top-1 (%) for targets note, speech, text.

    python local/gram_free_embeddings.py batch --loss gram --dim 64 --steps 1500
"""

from __future__ import annotations

import argparse
import itertools
import json

import torch
import torch.nn.functional as F

from audiocl.eval.multiway import score_for_loss
from audiocl.losses import build_loss
from audiocl.losses.gram import gram_volume

PERMS = torch.tensor(list(itertools.permutations(range(5))))  # [120, 5]: PERMS[p, l] = instrument in slot l
N_PERMS = len(PERMS)
VALID = torch.zeros(5, 5, N_PERMS, dtype=torch.bool)  # [language, instrument, permutation]
for _p in range(N_PERMS):
    VALID[torch.arange(5), PERMS[_p], _p] = True


def class_scores(S: torch.Tensor, N: torch.Tensor, T: torch.Tensor, method: str) -> torch.Tensor:
    """Scores [5, 5, 120] of every (language, instrument, text) triple (inputs unit rows); higher = better."""
    if method == "mip":
        return torch.einsum("ld,kd,pd->lkp", S, N, T)
    if method == "cosine":  # pairwise CLIP: the sum of the three cosines
        return (S @ N.T)[:, :, None] + (S @ T.T)[:, None, :] + (N @ T.T)[None, :, :]
    sl, nk = S.repeat_interleave(5, 0), N.repeat(5, 1)  # the 25 (language, instrument) pairs
    return -gram_volume(T, [sl, nk]).T.reshape(5, 5, N_PERMS)


def class_accuracy(sc: torch.Tensor) -> list[float]:
    """Top-1 (%) for targets note (over instruments), speech (over languages), text (over permutations)."""
    return [round(100 * VALID.gather(ax, sc.argmax(ax, keepdim=True)).float().mean().item(), 1) for ax in (1, 0, 2)]


def _init(d: int, seed: int, offset: float, additive: bool):
    g = torch.Generator().manual_seed(seed)
    S, N, T = (torch.randn(n, d, generator=g) for n in (5, 5, N_PERMS))
    u = torch.randn(d, generator=g)  # a shared direction (offset > 0: speech and note start with c near 1)
    S, N = S + offset * u, N + offset * u
    W = torch.randn(5, 5, d, generator=g)
    params = [x.requires_grad_() for x in (S, N, T, W)]

    def text() -> torch.Tensor:
        return W[torch.arange(5), PERMS].sum(1) if additive else T

    return g, params, text


def direct(method: str, d: int, seed: int, steps: int, offset: float, additive: bool, lr: float) -> dict:
    g, (S, N, T, W), text = _init(d, seed, offset, additive)
    ls = torch.tensor(2.0, requires_grad=True)
    opt = torch.optim.Adam([S, N, T, W, ls], lr=lr)
    for _ in range(steps):
        sc = class_scores(F.normalize(S, dim=-1), F.normalize(N, dim=-1), F.normalize(text(), dim=-1), method) * ls.exp()
        lt = sc.log_softmax(2)
        loss = (
            -sc.log_softmax(1)[VALID].mean()
            - sc.log_softmax(0)[VALID].mean()
            - torch.where(VALID, lt, torch.full_like(lt, -1e9)).logsumexp(2).mean()  # 24 valid texts per query
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = class_accuracy(class_scores(F.normalize(S, dim=-1), F.normalize(N, dim=-1), F.normalize(text(), dim=-1), method))
    return {"mode": "direct", "method": method, "dim": d, "seed": seed, "offset": offset, "additive": additive, "note_speech_text": acc}


def batch(loss_name: str, d: int, seed: int, steps: int, offset: float, additive: bool, lr: float,
          init_scale: float = 2.6593, bs: int = 256, stop_at: float | None = None) -> dict:  # fmt: skip
    g, (S, N, T, W), text = _init(d, seed, offset, additive)
    ls = torch.tensor(init_scale, requires_grad=True)
    opt = torch.optim.Adam([S, N, T, ls, W], lr=lr)
    kw = {"negatives": "n", "seed": 0} if loss_name == "symile" else {}
    loss_fn = build_loss(loss_name, modalities=["text", "speech", "note"], **kw)
    method = score_for_loss(loss_name)
    out: dict = {"mode": "batch", "loss": loss_name, "dim": d, "seed": seed, "offset": offset, "additive": additive,
                 "lr": lr, "init_logit_scale": init_scale}  # fmt: skip
    for it in range(1, steps + 1):
        lang = torch.randint(0, 5, (bs,), generator=g)
        p = torch.randint(0, N_PERMS, (bs,), generator=g)
        emb = {"speech": F.normalize(S, dim=-1)[lang], "note": F.normalize(N, dim=-1)[PERMS[p, lang]],
               "text": F.normalize(text(), dim=-1)[p]}  # fmt: skip
        loss = loss_fn({"embeddings": emb, "logit_scale": ls.exp().clamp(max=100.0), "logit_bias": None})
        opt.zero_grad()
        loss.backward()
        opt.step()
        if stop_at is not None and it % 100 == 0:
            with torch.no_grad():
                acc = class_accuracy(class_scores(F.normalize(S, dim=-1), F.normalize(N, dim=-1), F.normalize(text(), dim=-1), method))
            if sum(acc) / 3 > stop_at:
                return {**out, "steps_to_threshold": it, "note_speech_text": acc}
    with torch.no_grad():
        acc = class_accuracy(class_scores(F.normalize(S, dim=-1), F.normalize(N, dim=-1), F.normalize(text(), dim=-1), method))
    return {**out, "steps": steps, "final_loss": round(loss.item(), 3), "note_speech_text": acc,
            **({"steps_to_threshold": None} if stop_at is not None else {})}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=["direct", "batch", "escape"])
    ap.add_argument("--loss", default="gram", help="direct: volume|mip; batch: gram|symile|pairwise")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--offset", type=float, default=0.0)
    ap.add_argument("--additive", action="store_true")
    ap.add_argument("--lr", type=float, default=None, help="default 3e-2 (direct), 1e-2 (batch), 1e-3 (escape)")
    ap.add_argument("--init-logit-scale", type=float, default=2.6593)
    a = ap.parse_args()
    torch.set_num_threads(1)
    for seed in range(a.seeds):
        if a.mode == "direct":
            r = direct(a.loss, a.dim, seed, a.steps, a.offset, a.additive, a.lr or 3e-2)
        elif a.mode == "batch":
            r = batch(a.loss, a.dim, seed, a.steps, a.offset, a.additive, a.lr or 1e-2, a.init_logit_scale)
        else:
            r = batch(a.loss, a.dim, seed, a.steps, a.offset, a.additive, a.lr or 1e-3, a.init_logit_scale, stop_at=60.0)
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
