#!/usr/bin/env python3
"""Stage 3 of trimodal_audio: (speech, note, text) tuples as paired arrays for ``audiocl train``.

A tuple draws a language ``l`` and an instrument ``k`` uniformly, a speech clip
of language ``l`` and a note clip of instrument ``k`` from the split's own clips,
and a text of ``L`` slots (slot ``j`` is a word in language ``j``):

* ``higher`` (higher-order): slot ``l`` names ``k``, the other slots name the
  other instruments in a uniformly random order. The text is then a uniformly
  random permutation of the instruments whatever ``l`` and ``k`` are, so every
  pair of modalities is independent; only the triple is constrained.
* ``control``: slot ``l`` names ``k`` and every other slot is blank, so the
  text alone tells both ``l`` and ``k`` and the pairs suffice.

In both tasks a triple ``(l, k, text)`` is *valid* iff text slot ``l`` names
instrument ``k`` (what ``evaluate.py`` counts as a correct retrieval).

Each slot word (one of a few surface forms, e.g. "la trompette") is embedded
with frozen all-MiniLM-L6-v2 (the model audiocl's default text tower loads) and
the ``L`` slot vectors are concatenated in language order. Speech and note
vectors are the pooled log-mel statistics of ``pool_features.py``,
standardised with the training clips' mean and std.

Every modality array ends with one missingness column, 0 = observed (Symile's
missingness indicator). The ``*_miss`` files drop each modality of each tuple
independently with probability ``--missing-prob`` (its values set to 0, the
training mean, and the column set to 1); ``test_no_<m>.npz`` has modality
``m`` missing in every tuple.

Writes ``<out>/<task>_{train,val,test}.npz``, ``<task>_{train,val}_miss.npz``,
``<task>_test_no_{speech,note,text}.npz`` (arrays ``speech``, ``note``, ``text``
float32; ``lang``, ``instr`` int [N]; ``slots`` int [N, L] = the instrument each
slot names, -1 blank; ``words``, ``ids`` strings), ``arrays_info.json`` and
``structure.json`` (how much each single modality tells about each target).

    python local/make_arrays.py --features data/features --out data/arrays
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from audiocl.errors import AudioclError

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from build_corpus import SPLITS, load_task  # noqa: E402
from pool_features import meta_path  # noqa: E402

TASKS = ("higher", "control")
MODALITIES = ("speech", "note", "text")


# --------------------------------------------------------------- text vectors
def embed_words(words: list[str]) -> np.ndarray:
    """Unit-norm all-MiniLM-L6-v2 sentence vectors ``[len(words), 384]`` (frozen)."""
    import torch

    from audiocl.models.encoders.hf_text import HFTextEncoder

    enc = HFTextEncoder().eval()
    with torch.no_grad():
        v = enc(words)
    return torch.nn.functional.normalize(v, dim=-1).numpy().astype(np.float32)


# ----------------------------------------------------------------- sampling
def tuple_counts(conf: dict[str, Any], task: str, override: dict[str, int]) -> dict[str, int]:
    """Tuples per split for ``task``: ``conf`` maps a split to a count, or to ``{task: count}``
    when the tasks differ; an ``override`` (``--tuples``) applies to every task."""
    sizes = {}
    for sp in SPLITS:
        v = override.get(sp, conf.get(sp))
        if isinstance(v, dict):
            v = v.get(task)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            where = "--tuples" if sp in override else "conf/task.yaml"
            raise AudioclError(f"{where}: tuples.{sp} must be a positive count or {{task: count}} "
                               f"naming {', '.join(TASKS)}; got {v!r} for task {task}")  # fmt: skip
        sizes[sp] = v
    return sizes


def draw_tuples(task: str, n: int, n_lang: int, pools: dict[str, dict[int, np.ndarray]], n_forms: int,
                seed: int) -> dict[str, np.ndarray]:  # fmt: skip
    """Class and clip indices of ``n`` tuples. The class, clip and word-form draws do
    not depend on ``task`` (same seed, same tuples); only the other text slots do."""
    rng = np.random.default_rng([seed, 0])
    lang = rng.integers(0, n_lang, n)
    instr = rng.integers(0, n_lang, n)
    sp = np.array([rng.choice(pools["speech"][li]) for li in lang])
    nt = np.array([rng.choice(pools["note"][ki]) for ki in instr])
    forms = rng.integers(0, n_forms, (n, n_lang))
    rng_t = np.random.default_rng([seed, 1 + TASKS.index(task)])
    slots = np.full((n, n_lang), -1, dtype=np.int64)
    for i in range(n):
        slots[i, lang[i]] = instr[i]
        if task == "higher":
            others = [j for j in range(n_lang) if j != lang[i]]
            slots[i, others] = rng_t.permutation([c for c in range(n_lang) if c != instr[i]])
    return {"lang": lang, "instr": instr, "speech_row": sp, "note_row": nt, "forms": forms, "slots": slots}


def valid(lang: np.ndarray, instr: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """Whether text slot ``lang`` names instrument ``instr`` (broadcasts over rows)."""
    return np.take_along_axis(slots, lang[:, None], axis=1)[:, 0] == instr


def with_flag(x: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """Zero the missing rows and append the missingness column (1 = missing)."""
    x = np.where(missing[:, None], 0.0, x).astype(np.float32)
    return np.concatenate([x, missing[:, None].astype(np.float32)], axis=1)


# --------------------------------------------------------------- structure
def plugin_accuracy(train: dict[str, np.ndarray], test: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Accuracy on ``test`` of the best predictor of each target's class from ONE other
    modality's class (the most frequent target class given that class, counted on
    ``train``), and from both others; a prediction is right when the completed triple
    is valid. Classes: lang (speech), instr (note), the slot tuple (text)."""

    def key(d: dict[str, np.ndarray], m: str) -> list[Any]:
        if m == "speech":
            return d["lang"].tolist()
        if m == "note":
            return d["instr"].tolist()
        return [tuple(r) for r in d["slots"].tolist()]

    out: dict[str, dict[str, float]] = {}
    for target in MODALITIES:
        others = [m for m in MODALITIES if m != target]
        res = {}
        for given in [[o] for o in others] + [others]:
            table: dict[Any, Counter] = defaultdict(Counter)
            for g, t in zip(zip(*(key(train, m) for m in given)), key(train, target)):
                table[g][t] += 1
            prior = Counter(key(train, target)).most_common(1)[0][0]
            pred = [table[g].most_common(1)[0][0] if g in table else prior for g in zip(*(key(test, m) for m in given))]
            lang, instr, slots = test["lang"].copy(), test["instr"].copy(), test["slots"].copy()
            if target == "speech":
                lang = np.array(pred)
            elif target == "note":
                instr = np.array(pred)
            else:
                slots = np.array(pred)
            res["+".join(given)] = float(valid(lang, instr, slots).mean())
        out[target] = res
    return out


def mutual_information(a: list[Any], b: list[Any]) -> float:
    """Plug-in I(A; B) in bits from paired samples."""
    n = len(a)
    pa, pb, pab = Counter(a), Counter(b), Counter(zip(a, b))
    return float(sum(c / n * np.log2(c * n / (pa[x] * pb[y])) for (x, y), c in pab.items()))


# ---------------------------------------------------------------------- main
def build(args: argparse.Namespace) -> dict[str, Any]:
    cfg = load_task(args.config)
    langs, instruments = cfg["languages"], list(cfg["instruments"])
    L = len(langs)
    feats: dict[str, np.ndarray] = {}
    pools: dict[str, dict[int, np.ndarray]] = {}
    ids: dict[str, np.ndarray] = {}
    split_rows: dict[str, dict[str, dict[int, np.ndarray]]] = {sp: {} for sp in SPLITS}
    for m, classes in (("speech", langs), ("note", instruments)):
        path = Path(args.features) / f"{m}.npz"
        if not path.is_file():
            raise AudioclError(f"{path} not found: run stage 2 (pool_features.py) first")
        d = np.load(path)
        meta = np.load(meta_path(path))
        x, labels, split = d[m].astype(np.float64), d["labels"].astype(str), meta["split"].astype(str)
        unknown = sorted(set(labels) - set(classes))
        if unknown:
            raise AudioclError(f"{path}: labels {unknown} are not in the task's {classes}")
        tr = split == "train"
        mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-6
        feats[m] = ((x - mu) / sd).astype(np.float32)
        ids[m] = meta["ids"].astype(str)
        for sp in SPLITS:
            split_rows[sp][m] = {  # type: ignore[index]
                c: np.flatnonzero((split == sp) & (labels == name)) for c, name in enumerate(classes)
            }
            empty = [classes[c] for c, r in split_rows[sp][m].items() if len(r) == 0]  # type: ignore[union-attr]
            if empty:
                raise AudioclError(f"{path}: no {sp} clips of {empty}")
    del pools

    # text: one vector per (instrument, language, form) and one for a blank slot
    n_forms = min(len(cfg["instruments"][k]["names"][lang]) for k in instruments for lang in langs)
    words = [cfg["instruments"][k]["names"][lang][f] for k in instruments for lang in langs for f in range(n_forms)]
    vecs = embed_words(words + [str(cfg["blank"])])
    word_vec = vecs[:-1].reshape(len(instruments), L, n_forms, -1)
    blank_vec = vecs[-1]
    dim_w = vecs.shape[1]

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng_miss = np.random.default_rng([args.seed, 99])
    info: dict[str, Any] = {"languages": langs, "instruments": instruments, "word_dim": dim_w, "files": {},
                            "missing_prob": args.missing_prob}  # fmt: skip
    structure: dict[str, Any] = {}
    for task in TASKS:
        sizes = tuple_counts(cfg["tuples"], task, args.tuples)
        drawn = {}
        for si, sp in enumerate(SPLITS):
            t = draw_tuples(task, sizes[sp], L, split_rows[sp], n_forms, seed=args.seed * 10 + si)
            n = sizes[sp]
            sp_rows, nt_rows = t["speech_row"], t["note_row"]
            text = np.empty((n, L, dim_w), dtype=np.float32)
            for j in range(L):
                named = t["slots"][:, j]
                text[:, j] = np.where((named >= 0)[:, None], word_vec[np.maximum(named, 0), j, t["forms"][:, j]], blank_vec)
            text = text.reshape(n, L * dim_w)
            word_str = np.array([
                " | ".join(cfg["blank"] if s < 0 else cfg["instruments"][instruments[s]]["names"][langs[j]][f]
                           for j, (s, f) in enumerate(zip(row, frow)))
                for row, frow in zip(t["slots"], t["forms"])
            ])  # fmt: skip
            base = {"speech": feats["speech"][sp_rows], "note": feats["note"][nt_rows], "text": text}
            meta = {
                "lang": t["lang"], "instr": t["instr"], "slots": t["slots"], "words": word_str,
                "ids": np.array([f"{sp}{i:06d}:{ids['speech'][a]}+{ids['note'][b]}" for i, (a, b) in enumerate(zip(sp_rows, nt_rows))]),
            }  # fmt: skip
            none = np.zeros(n, dtype=bool)

            def save(name: str, missing: dict[str, np.ndarray], base=base, meta=meta) -> None:
                arrays = {m: with_flag(base[m], missing[m]) for m in MODALITIES}
                np.savez(out / f"{name}.npz", **arrays, **meta)
                info["files"][name] = {"rows": int(len(meta["lang"])),
                                       "missing_rate": {m: float(missing[m].mean()) for m in MODALITIES}}  # fmt: skip

            save(f"{task}_{sp}", {m: none for m in MODALITIES})
            if sp in ("train", "val"):
                save(f"{task}_{sp}_miss", {m: rng_miss.random(n) < args.missing_prob for m in MODALITIES})
            else:
                for gone in MODALITIES:
                    save(f"{task}_test_no_{gone}", {m: (~none if m == gone else none) for m in MODALITIES})
            if not valid(t["lang"], t["instr"], t["slots"]).all():
                raise AudioclError(f"internal error: invalid {task} {sp} tuple")
            drawn[sp] = t
        tr = drawn["train"]
        text_key = [tuple(r) for r in tr["slots"].tolist()]
        structure[task] = {
            "mutual_information_bits_train": {
                "speech;note": mutual_information(tr["lang"].tolist(), tr["instr"].tolist()),
                "speech;text": mutual_information(tr["lang"].tolist(), text_key),
                "note;text": mutual_information(tr["instr"].tolist(), text_key),
            },
            "text_classes_train": len(set(text_key)),
            "best_predictor_accuracy_test": plugin_accuracy(tr, drawn["test"]),
            "chance": 1.0 / L,
        }
    info["dims"] = {m: int(feats[m].shape[1] + 1) for m in ("speech", "note")}
    info["dims"]["text"] = int(L * dim_w + 1)
    (out / "arrays_info.json").write_text(json.dumps(info, indent=2) + "\n")
    (out / "structure.json").write_text(json.dumps(structure, indent=2) + "\n")
    return {"info": info, "structure": structure}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--features", required=True, help="folder with speech.npz and note.npz (pool_features.py)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--config", default=str(HERE.parent / "conf" / "task.yaml"))
    ap.add_argument("--missing-prob", type=float, default=0.4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tuples", nargs="*", default=[], metavar="SPLIT=N", help="override conf tuples, e.g. train=200")
    args = ap.parse_args(argv)
    try:
        bad = [t for t in args.tuples if "=" not in t or not t.partition("=")[2].isdigit()]
        if bad:
            raise AudioclError(f"--tuples {bad[0]!r}: expected SPLIT=COUNT, e.g. train=2000")
        args.tuples = {k: int(v) for k, v in (s.split("=", 1) for s in args.tuples)}
        res = build(args)
    except (AudioclError, ValueError) as e:
        print(f"make_arrays: error: {e}", file=sys.stderr)
        return 2
    info, st = res["info"], res["structure"]
    print(f"arrays in {args.out}: dims {info['dims']}, {len(info['files'])} files")
    for task, s in st.items():
        acc = s["best_predictor_accuracy_test"]
        line = "  ".join(f"{t}<-{g}: {v:.3f}" for t, r in acc.items() for g, v in r.items())
        print(f"{task}: best single-class predictors on test (chance {s['chance']:.2f}): {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
