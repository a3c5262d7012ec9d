"""Audio-text retrieval with several captions per clip (LAION-CLAP's protocol).

Inputs: ``audio`` embeddings ``[A, d]``, ``text`` embeddings ``[T, d]`` and
``text_to_audio`` ``LongTensor[T]`` saying which clip each caption describes
(Clotho and AudioCaps have 5 captions a clip; any number is allowed here).
Similarity is the dot product; pass L2-normalised embeddings for cosine.

Protocol (``protocol = "laion-clap-multicaption"``), following
``evaluate_clotho_audiocaps`` in LAION-CLAP's ``training/train.py``:

* **text-to-audio**: every caption is a query, ranked separately against all
  clips; R@k, MRR, median and mean rank are averaged over all ``T`` captions
  (LAION runs the 5 caption slots separately and averages, which is the same
  number when every clip has 5 captions).
  ``mAP@10 = mean over captions of (1/rank if rank <= 10 else 0)``.
* **audio-to-text**: every clip is a query, ranked against all ``T``
  captions. R@k, MRR, median and mean rank use the **best-ranked** of the
  clip's captions. ``mAP@10`` sorts the ranks of the clip's captions, keeps
  those ``<= 10`` and sums ``i / rank_(i)``, divided by the clip's number of
  captions (5 for Clotho/AudioCaps): the AP@10 of the clip's captions.
  LAION's code as written omits the sort (see
  :func:`audiocl.eval.metrics.map_at_k_multi`); ``a2t_map_sorted=False``
  reproduces that variant and the results say which was used.
* Ranks are 1-based, ties pessimistic (a distractor scoring the same as
  the positive is counted above it; tied captions of the same clip take
  consecutive ranks), so permuting the gallery never changes a number. Median rank is ``floor(median(rank))``, as LAION reports it.
* Clips without a caption are still in the text-to-audio gallery (as
  distractors) but are not audio-to-text queries; ``n_audio_queries`` says how
  many were.

Groups (``group_by`` a manifest field: ``language``, ``speaker``, ...): the
same metrics computed *within* each group, its clips and their captions
forming both the queries and the gallery, with the mean and minimum over
groups (a group needs at least one clip and one caption).

Object-first: :func:`retrieval` takes a loaded model and manifest items (or
precomputed embeddings); :func:`run_retrieval` reads the folder and the file
and calls it.

Speech-text (``speech=True``) adds CLASP's names for the same quantities:
``HITS@1`` (= R@1), ``MRR`` and ``meanR`` (= mean rank).

Large galleries: :func:`topk_chunked` never materialises the ``[Q, G]``
matrix; it walks query and gallery chunks, keeping the running top-k and
counting, for each positive, the gallery items that score at least as high.
Peak extra memory is ``O(query_chunk * gallery_chunk)`` floats, so 100k clips
against 500k captions (``d = 512``) fits in 4 GB (see
``benchmarks/retrieval_large.py``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from audiocl.errors import AudioclError
from audiocl.eval import metrics as M

PROTOCOL = "laion-clap-multicaption"
TIE_RULE = "pessimistic (items scoring equal to the positive count above it)"

__all__ = [
    "PROTOCOL",
    "TopK",
    "topk_chunked",
    "captions_per_clip",
    "retrieval_metrics",
    "direction_metrics",
    "recall_curve",
    "retrieval",
    "run_retrieval",
]


@dataclass
class TopK:
    """Result of :func:`topk_chunked`.

    ``scores``/``indices``: ``[Q, k]`` best gallery items per query, best
    first; ``ranks``: ``LongTensor`` shaped like the ``positives`` argument
    (1-based, 0 for padding) or ``None`` when no positives were given.
    """

    scores: torch.Tensor
    indices: torch.Tensor
    ranks: torch.Tensor | None


def topk_chunked(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    k: int,
    chunk: int = 16384,
    *,
    positives: torch.Tensor | None = None,
    query_chunk: int = 1024,
    desc: str = "rank",
) -> TopK:
    """Top-k gallery items per query and exact ranks of the positives, in chunks.

    Progress (:mod:`audiocl.progress`, named ``desc``) is shown when there is
    more than one query chunk.

    Shapes: ``queries`` ``[Q, d]``, ``gallery`` ``[G, d]`` (any float dtype;
    each chunk is scored in float32), ``positives`` ``LongTensor[Q]`` or
    ``[Q, P]`` padded with ``-1``.

    Score ``s[q, g] = <queries[q], gallery[g]>``. For each positive ``p`` of
    query ``q`` its score ``s_p`` is computed once (float64 dot product) and

        ``rank = 1 + #{ g not a positive of q : s[q, g] >= s_p }``
        ``       + #{ positives p' ranked before p (higher score, or equal and earlier) }``

    the first count accumulated chunk by chunk: the pessimistic rank of
    :func:`audiocl.eval.metrics.ranks_from_similarity` on the full float32
    matrix (equal to it whenever the BLAS kernel computes an entry the same
    way for different chunk shapes, which the tests and the benchmark check).
    The first pass costs one extra chunk product per distinct chunk holding
    a positive: about one per query chunk when captions of a clip are
    stored next to each other, as manifests do. The running top-k
    keeps ``k`` scores and indices per query. Memory beyond the inputs:
    ``query_chunk * chunk`` float32 scores plus one bool mask of that size.
    """
    if queries.dim() != 2 or gallery.dim() != 2 or queries.shape[1] != gallery.shape[1]:
        raise AudioclError(
            f"queries {tuple(queries.shape)} and gallery {tuple(gallery.shape)} must be [Q, d] and [G, d]"
        )
    n_q, n_g = queries.shape[0], gallery.shape[0]
    if n_g == 0:
        raise AudioclError("empty gallery")
    if not 1 <= chunk < 2**24 or query_chunk < 1:
        raise AudioclError("chunk sizes must be >= 1 (and the gallery chunk < 2**24)")
    k = min(k, n_g)
    pos = None
    squeeze = False
    if positives is not None:
        pos = M.as_tensor(positives, torch.long)
        squeeze = pos.dim() == 1
        if squeeze:
            pos = pos[:, None]
        if pos.shape[0] != n_q:
            raise AudioclError(f"positives has {pos.shape[0]} rows for {n_q} queries")
        if bool((pos >= n_g).any()):
            raise AudioclError(f"a positive index is >= the gallery size {n_g}")
    out_scores = torch.empty(n_q, k, dtype=torch.float32)
    out_idx = torch.empty(n_q, k, dtype=torch.long)
    out_ranks = None if pos is None else torch.zeros(pos.shape, dtype=torch.long)

    from audiocl.progress import progress

    bar = progress(n_q, desc, unit="query", enabled=n_q > query_chunk)
    for q0 in range(0, n_q, query_chunk):
        q1 = min(q0 + query_chunk, n_q)
        qc = queries[q0:q1].float()
        M.check_finite(qc, "query embeddings")
        buf = None
        cached: dict[int, torch.Tensor] = {}
        best_s = torch.full((q1 - q0, k), -torch.inf)
        best_i = torch.zeros((q1 - q0, k), dtype=torch.long)
        if pos is not None:
            pc = pos[q0:q1]
            valid = pc >= 0
            # the positives' scores come from the very chunk products used for
            # counting below (same slices, same kernel), so a distractor is
            # compared with the positive bit for bit as in a full matrix
            thr = torch.zeros(pc.shape, dtype=torch.float32)
            cids = torch.unique(pc[valid] // chunk).tolist()
            for cid in cids:
                g0 = cid * chunk
                g1 = min(g0 + chunk, n_g)
                inside = valid & (pc >= g0) & (pc < g1)
                s = qc @ gallery[g0:g1].float().T
                rows, slots = inside.nonzero(as_tuple=True)
                thr[rows, slots] = s[rows, pc[rows, slots] - g0]
                # keep up to two products for the main pass (bounded memory)
                if len(cids) <= 2:
                    cached[g0] = s
            count = torch.zeros(pc.shape, dtype=torch.long)
        for g0 in range(0, n_g, chunk):
            g1 = min(g0 + chunk, n_g)
            if q0 == 0:
                M.check_finite(gallery[g0:g1], "gallery embeddings")
            s = cached.pop(g0) if g0 in cached else qc @ gallery[g0:g1].float().T  # [qc, gc]
            if pos is not None and buf is None:
                buf = torch.empty_like(s)
            kk = min(k, g1 - g0)
            cs, ci = torch.topk(s, kk, dim=1)
            ms, mi = torch.topk(torch.cat([best_s, cs], 1), k, dim=1)
            best_i = torch.gather(torch.cat([best_i, ci + g0], 1), 1, mi)
            best_s = ms
            if pos is not None:
                # positives inside this chunk, as (row, column-in-chunk) per slot
                inside = valid & (pc >= g0) & (pc < g1)
                assert buf is not None  # made above when pos is given
                for p in range(pc.shape[1]):
                    # float 0/1 in a reused buffer: summing floats is ~2x faster
                    # than summing a bool mask on CPU, and exact below 2**24
                    ge = torch.sub(s, thr[:, p : p + 1], out=buf[:, : g1 - g0]).ge_(0)
                    n_ge = ge.sum(dim=1).long()
                    # positives are ranked among themselves below (from thr),
                    # so remove every positive counted here by index
                    for p2 in range(pc.shape[1]):
                        if bool(inside[:, p2].any()):
                            rows = inside[:, p2].nonzero().squeeze(1)
                            n_ge[rows] -= ge[rows, pc[rows, p2] - g0].long()
                    count[:, p] += n_ge
        out_scores[q0:q1] = best_s
        out_idx[q0:q1] = best_i
        if pos is not None:
            ranks = count + 1 + M.positives_before(thr, valid)
            assert out_ranks is not None  # allocated when pos is given
            out_ranks[q0:q1] = torch.where(valid, ranks, torch.zeros_like(ranks))
        bar.update(q1 - q0)
    bar.close()
    if out_ranks is not None and squeeze:
        out_ranks = out_ranks[:, 0]
    return TopK(out_scores, out_idx, out_ranks)


def captions_per_clip(text_to_audio: torch.Tensor | Sequence[int], n_audio: int) -> torch.Tensor:
    """Invert a caption -> clip map into ``LongTensor[A, P]`` of caption indices.

    Row ``a`` lists the captions of clip ``a`` in caption order, padded with
    ``-1`` to the largest caption count ``P``.
    """
    t2a = M.as_tensor(text_to_audio, torch.long).reshape(-1)
    if t2a.numel() and (int(t2a.min()) < 0 or int(t2a.max()) >= n_audio):
        raise AudioclError(f"text_to_audio holds a clip index outside [0, {n_audio})")
    counts = torch.bincount(t2a, minlength=n_audio)
    p = max(int(counts.max()) if n_audio else 0, 1)
    out = torch.full((n_audio, p), -1, dtype=torch.long)
    fill = torch.zeros(n_audio, dtype=torch.long)
    for j, a in enumerate(t2a.tolist()):
        out[a, fill[a]] = j
        fill[a] += 1
    return out


def direction_metrics(
    best_ranks: torch.Tensor,
    *,
    map10: float,
    speech: bool = False,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """The per-direction metrics dict from 1-based ranks ``[N]`` and a precomputed mAP@10."""
    out: dict[str, float] = {f"R@{k}": M.recall_at_k(best_ranks, k) for k in ks}
    out["mAP@10"] = map10
    out["MRR"] = M.mrr(best_ranks)
    out["median_rank"] = M.median_rank(best_ranks)
    out["mean_rank"] = M.mean_rank(best_ranks)
    if speech:
        out["HITS@1"] = M.hits_at_1(best_ranks)
        out["meanR"] = out["mean_rank"]
    return out


def retrieval_metrics(
    audio: torch.Tensor,
    text: torch.Tensor,
    text_to_audio: torch.Tensor | Sequence[int],
    *,
    speech: bool = False,
    chunk: int = 16384,
    query_chunk: int = 1024,
    a2t_map_sorted: bool = True,
) -> dict:
    """Text-to-audio and audio-to-text retrieval metrics (protocol in the module docstring).

    ``audio``: ``[A, d]``, ``text``: ``[T, d]``, ``text_to_audio``: ``[T]``
    clip index of each caption. Returns
    ``{"text_to_audio": {...}, "audio_to_text": {...}, "n_audio", "n_text",
    "n_audio_queries", "protocol", "tie_rule", "a2t_map"}`` where each
    direction holds ``R@1, R@5, R@10, mAP@10, MRR, median_rank, mean_rank``
    (plus ``HITS@1`` and ``meanR`` when ``speech``).
    """
    audio = M.as_tensor(audio)
    text = M.as_tensor(text)
    t2a = M.as_tensor(text_to_audio, torch.long).reshape(-1)
    n_audio, n_text = audio.shape[0], text.shape[0]
    if t2a.numel() != n_text:
        raise AudioclError(f"text_to_audio has {t2a.numel()} entries for {n_text} captions")
    if n_text == 0 or n_audio == 0:
        raise AudioclError("retrieval needs at least one clip and one caption")

    t2a_res = topk_chunked(text, audio, 10, chunk, positives=t2a, query_chunk=query_chunk, desc="rank text->audio")
    t_ranks = t2a_res.ranks
    assert t_ranks is not None

    cap = captions_per_clip(t2a, n_audio)
    has_caption = (cap >= 0).any(dim=1)
    q_audio = has_caption.nonzero().squeeze(1)
    a2t_res = topk_chunked(
        audio[q_audio], text, 10, chunk, positives=cap[q_audio], query_chunk=query_chunk, desc="rank audio->text"
    )
    a_ranks = a2t_res.ranks
    assert a_ranks is not None
    best = torch.where(a_ranks > 0, a_ranks, torch.full_like(a_ranks, n_text + 1)).min(dim=1).values

    return {
        "text_to_audio": direction_metrics(
            t_ranks, map10=M.map_at_k_single(t_ranks, 10), speech=speech
        ),
        "audio_to_text": direction_metrics(
            best,
            map10=M.map_at_k_multi(a_ranks, 10, sort_ranks=a2t_map_sorted),
            speech=speech,
        ),
        "n_audio": int(n_audio),
        "n_text": int(n_text),
        "n_audio_queries": int(q_audio.numel()),
        "protocol": PROTOCOL,
        "tie_rule": TIE_RULE,
        "a2t_map": "sorted ranks (AP@10)" if a2t_map_sorted else "caption order (LAION code as written)",
        "recall_curve": recall_curve({"text_to_audio": (t_ranks, n_audio), "audio_to_text": (best, n_text)}),
    }


def recall_curve(ranks: dict[str, tuple[torch.Tensor, int]]) -> dict[str, dict[str, list]]:
    """Recall@k curve of each direction from its 1-based ranks ``[N]`` and gallery size ``G``:
    ``{direction: {"k": [1, 2, 5, 10, 20, 50, ..., G], "recall": [R@k, ...]}}``
    (the recall@k plot of the results; its R@1/5/10 equal the direction metrics')."""
    out: dict[str, dict[str, list]] = {}
    for d, (r, gallery) in ranks.items():
        ks: list[int] = []
        base = 1
        while base <= gallery:
            ks += [k for k in (base, 2 * base, 5 * base) if k <= gallery]
            base *= 10
        if ks[-1] != gallery:
            ks.append(gallery)
        out[d] = {"k": ks, "recall": [M.recall_at_k(r, k) for k in ks]}
    return out


def _captions(items: Sequence[Any]) -> tuple[list[str], list[int]]:
    captions: list[str] = []
    t2a: list[int] = []
    for a, it in enumerate(items):
        for t in it.texts:
            captions.append(t)
            t2a.append(a)
    return captions, t2a


def retrieval(
    model: Any,
    items: Sequence[Any],
    *,
    audio: torch.Tensor | None = None,
    text: torch.Tensor | None = None,
    group_by: str | Sequence[str] | None = None,
    store: str | os.PathLike | None = None,
    speech: bool = False,
    a2t_map_sorted: bool = True,
    audio_tower: str | None = None,
    text_tower: str | None = None,
    batch_size: int = 16,
    chunk: int = 16384,
    source: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Retrieval between the audio of loaded ``items`` and their ``texts`` (captions/transcripts).

    ``audio`` ``[N, d]`` / ``text`` ``[T, d]`` (captions in item order) skip
    embedding when given. ``group_by``: manifest field(s); adds ``"groups":
    {field: {"per_group": {value: metrics}, "n_groups", "mean", "min"}}``
    with ``mean``/``min`` over groups of each direction's metrics.
    """
    from audiocl.eval.embed import embed_items_audio, embed_strings
    from audiocl.eval.zeroshot import group_values

    src = None if source is None else str(source)
    if batch_size < 1 or chunk < 1:
        raise AudioclError(f"batch size and chunk must be >= 1, got {batch_size} and {chunk}")
    items = list(items)
    if not items:
        raise AudioclError(f"{src}: no items" if src else "no items")
    captions, t2a = _captions(items)
    if not captions:
        raise AudioclError(f"no item of {src or 'the items'} has a text; retrieval needs captions or transcripts")
    fields = [group_by] if isinstance(group_by, str) else list(group_by or [])
    groups = {f: group_values(items, f, src) for f in fields}
    if audio is None:
        audio = embed_items_audio(model, items, store=store, tower=audio_tower, batch_size=batch_size)
    if text is None:
        text = embed_strings(model, captions, tower=text_tower)
    if audio.shape[0] != len(items) or text.shape[0] != len(captions):
        raise AudioclError(f"{audio.shape[0]} audio / {text.shape[0]} text embeddings for "
                           f"{len(items)} items / {len(captions)} captions")
    audio = torch.nn.functional.normalize(audio.float(), dim=-1)
    t2a_t = torch.tensor(t2a)
    res = retrieval_metrics(audio, text, t2a_t, speech=speech, chunk=chunk, a2t_map_sorted=a2t_map_sorted)
    if groups:
        res["groups"] = {}
        for f, values in groups.items():
            per: dict[str, Any] = {}
            for g in sorted(set(values), key=lambda v: (str(type(v)), v)):
                clips = [i for i, v in enumerate(values) if v == g]
                new_index = {a: j for j, a in enumerate(clips)}
                caps = [j for j, a in enumerate(t2a) if a in new_index]
                if not caps:
                    continue  # a group without a caption has no text-to-audio query
                sub = retrieval_metrics(
                    audio[clips], text[caps], torch.tensor([new_index[t2a[j]] for j in caps]),
                    speech=speech, chunk=chunk, a2t_map_sorted=a2t_map_sorted,
                )
                per[str(g)] = {d: sub[d] for d in ("text_to_audio", "audio_to_text")} | {
                    "n_audio": sub["n_audio"], "n_text": sub["n_text"]}
            agg: dict[str, Any] = {}
            for st, fn in (("mean", lambda xs: sum(xs) / len(xs)), ("min", min)):
                agg[st] = {d: {k: float(fn([v[d][k] for v in per.values()])) for k in res[d]}
                           for d in ("text_to_audio", "audio_to_text")}
            res["groups"][f] = {"per_group": per, "n_groups": len(per), **agg}
    return res


def run_retrieval(
    model_dir: str,
    manifest: str,
    *,
    store: str | None = None,
    split: str | None = None,
    speech: bool = False,
    a2t_map_sorted: bool = True,
    audio_tower: str | None = None,
    text_tower: str | None = None,
    batch_size: int = 16,
    chunk: int = 16384,
    group_by: str | Sequence[str] | None = None,
) -> dict:
    """Load a model folder and a manifest (each item's ``texts`` are its captions) and call :func:`retrieval`."""
    from audiocl.eval.zeroshot import group_values, read_items
    from audiocl.models import load_model

    if batch_size < 1 or chunk < 1:
        raise AudioclError(f"--batch-size and --chunk must be >= 1, got {batch_size} and {chunk}")
    items = read_items(manifest, split)
    if not _captions(items)[0]:
        raise AudioclError(f"no item of {manifest} has a text; retrieval needs captions or transcripts")
    fields = [group_by] if isinstance(group_by, str) else list(group_by or [])
    for f in fields:
        group_values(items, f, str(manifest))
    model = load_model(model_dir)
    res = retrieval(
        model, items, group_by=fields, store=store, speech=speech, a2t_map_sorted=a2t_map_sorted,
        audio_tower=audio_tower, text_tower=text_tower, batch_size=batch_size, chunk=chunk, source=manifest,
    )
    out = {"eval": "retrieval", "model": str(model_dir), "manifest": str(manifest), "split": split}
    out.update(res)
    return out
