"""Evaluation: metrics, zero-shot, retrieval, multi-way retrieval, probes, diagnostics, reports.

Pure functions on embeddings and similarity matrices (``metrics``,
``retrieval``, ``zeroshot``, ``multiway``, ``probe``, ``diagnostics``) plus the
glue that embeds a manifest with a model folder (``embed``) and writes results
JSON first, then Markdown and PNGs from it (``report``). Protocols are stated
in each module's docstring and in docs/evaluation.md.
"""
