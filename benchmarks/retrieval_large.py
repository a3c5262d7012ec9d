"""Large-gallery retrieval: 100k clip queries against 500k captions, top-10, in 4 GB.

What it measures
  * ``audiocl.eval.retrieval.topk_chunked`` with the audio-to-text protocol:
    every clip is a query against the full caption gallery, keeps its top-10
    and the exact (pessimistic) rank of each of its 5 captions.
  * Embeddings are random unit vectors, ``d = 512``, stored as **float32**
    (gallery 500k x 512 x 4 B = 0.98 GiB, queries 100k x 512 x 4 B = 0.19 GiB);
    ``--dtype float16`` halves that (each chunk is still scored in float32).
  * Peak memory: ``ru_maxrss`` of this process (everything: Python, torch,
    both embedding matrices, the chunk buffers), read right after the chunked
    run and before the baseline runs.
  * Time per query: wall clock and CPU time (``time.process_time``; steadier
    when other jobs share the cores).
  * Baseline in the same process: the naive computation (full ``[q, G]``
    similarity matrix, ``torch.topk``, ``ranks_from_similarity``) on the first
    ``--baseline-queries`` queries; results must match exactly and the
    ratio of time per query is reported. The naive matrix for all 100k queries
    would be 100k x 500k x 4 B = 186 GiB (computed, not run).

``--queries N`` times only the first N queries against the full gallery and
extrapolates the total time linearly (``"extrapolated": true`` in the output);
the memory bound is for the full gallery either way, and the chunk buffers do
not grow with the number of queries. Last line: one JSON object.

    python benchmarks/retrieval_large.py --queries 2048
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from audiocl.eval.metrics import ranks_from_similarity
from audiocl.eval.retrieval import topk_chunked


def _rss_gib() -> float:
    # Linux reports ru_maxrss in KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _random_unit(n: int, d: int, dtype: torch.dtype, seed: int, block: int = 65536) -> torch.Tensor:
    """``[n, d]`` random unit vectors, generated in blocks so no float32 temporary of size n*d exists."""
    gen = torch.Generator().manual_seed(seed)
    out = torch.empty(n, d, dtype=dtype)
    for i in range(0, n, block):
        x = torch.randn(min(block, n - i), d, generator=gen)
        out[i : i + x.shape[0]] = torch.nn.functional.normalize(x, dim=1).to(dtype)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-audio", type=int, default=100_000)
    ap.add_argument("--captions-per-clip", type=int, default=5)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--queries", type=int, default=None, help="time only the first N queries and extrapolate")
    ap.add_argument("--chunk", type=int, default=16384, help="gallery chunk")
    ap.add_argument("--query-chunk", type=int, default=1024)
    ap.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    ap.add_argument("--baseline-queries", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit-gib", type=float, default=4.0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)

    n_text = args.n_audio * args.captions_per_clip
    audio = _random_unit(args.n_audio, args.dim, dtype, seed=0)
    text = _random_unit(n_text, args.dim, dtype, seed=1)
    # caption j describes clip j // captions_per_clip; positives of clip a
    positives = torch.arange(n_text).reshape(args.n_audio, args.captions_per_clip)
    rss_data = _rss_gib()

    nq = args.n_audio if args.queries is None else min(args.queries, args.n_audio)
    t0, c0 = time.perf_counter(), time.process_time()
    res = topk_chunked(
        audio[:nq], text, args.k, args.chunk, positives=positives[:nq], query_chunk=args.query_chunk
    )
    t_chunked = time.perf_counter() - t0
    c_chunked = time.process_time() - c0
    peak = _rss_gib()
    per_query_ms = 1000 * t_chunked / nq

    # baseline: full similarity rows for a few queries
    nb = min(args.baseline_queries, nq)
    t0, c0 = time.perf_counter(), time.process_time()
    sim = audio[:nb].float() @ text.float().T
    ref_s, ref_i = torch.topk(sim, args.k, dim=1)
    ref_r = ranks_from_similarity(sim, positives[:nb])
    t_naive = time.perf_counter() - t0
    c_naive = time.process_time() - c0
    del sim
    same_idx = bool(torch.equal(ref_i, res.indices[:nb]))
    same_ranks = bool(torch.equal(ref_r, res.ranks[:nb]))
    naive_ms = 1000 * t_naive / nb
    chunk_bytes = args.query_chunk * args.chunk * 4

    print(
        json.dumps(
            {
                "benchmark": "retrieval_large",
                "n_queries_total": args.n_audio,
                "n_gallery": n_text,
                "dim": args.dim,
                "k": args.k,
                "storage_dtype": args.dtype,
                "score_dtype": "float32",
                "threads": args.threads,
                "queries_timed": nq,
                "extrapolated": nq < args.n_audio,
                "time_per_query_ms": round(per_query_ms, 4),
                "total_time_s": round(per_query_ms * args.n_audio / 1000, 1),
                # CPU time is steadier than wall time on a shared machine
                "cpu_time_per_query_ms": round(1000 * c_chunked / nq, 4),
                "peak_rss_gib": round(peak, 3),
                "rss_after_embeddings_gib": round(rss_data, 3),
                "limit_gib": args.limit_gib,
                "within_limit": peak < args.limit_gib,
                "chunk_buffer_mib": round(chunk_bytes / 2**20, 1),
                "naive_full_matrix_gib_for_all_queries": round(args.n_audio * n_text * 4 / 2**30, 1),
                "baseline_queries": nb,
                "naive_time_per_query_ms": round(naive_ms, 4),
                "chunked_over_naive_time": round(per_query_ms / naive_ms, 3),
                "naive_cpu_time_per_query_ms": round(1000 * c_naive / nb, 4),
                "chunked_over_naive_cpu_time": round((c_chunked / nq) / (c_naive / nb), 3),
                "matches_naive_topk_indices": same_idx,
                "matches_naive_ranks": same_ranks,
            }
        )
    )


if __name__ == "__main__":
    main()
