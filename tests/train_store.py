"""A small real feature store for the trainer tests (FSDD spoken digits, 16 kHz log-mel).

Built once per test session with the project's own extraction code (in
process, no Ray) and shared by the test_train_* modules.
"""

from __future__ import annotations

from pathlib import Path

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def build_store(shared: Path, out: Path, n: int = 96, names: list[str] | None = None) -> tuple[Path, Path]:
    """(store dir, manifest) with ``n`` FSDD clips (or the recordings ``names``), each captioned twice."""
    from audiocl.audio.frontend import get_preset
    from audiocl.data.extract import extract
    from audiocl.data.manifest import AudioItem, write_manifest

    store, manifest = out / "store", out / "manifest.jsonl"
    if (store / "index.jsonl").is_file() and manifest.is_file():
        return store, manifest
    out.mkdir(parents=True, exist_ok=True)
    rec = shared / "data" / "fsdd-dev" / "recordings"
    files = [rec / f for f in names] if names else sorted(rec.glob("*.wav"))[:n]
    items = []
    for f in files:
        digit, speaker, _ = f.stem.split("_")
        word = DIGITS[int(digit)]
        items.append(
            AudioItem(
                id=f.stem, path=str(f), texts=[f"{speaker} says {word}", f"the word {word}"],
                labels=[word], speaker=speaker,
            )
        )
    write_manifest(items, manifest)
    fe = get_preset("speech16k", n_mels=32, clip_samples=16000)
    extract(manifest, store, fe, runner="inline", progress=False, shard_size=32)
    return store, manifest


def model_config(n_mels: int = 32, dim: int = 16) -> dict:
    return {
        "embed_dim": dim,
        "towers": {
            "audio": {
                "modality": "audio",
                "encoder": {"type": "cnn", "variant": "cnn6", "channels": 4, "n_mels": n_mels, "dropout": 0.1},
                "projection": {"type": "linear"},
            },
            "text": {
                "modality": "text",
                "encoder": {"type": "small_text", "d_model": 16, "layers": 1, "heads": 2, "dropout": 0.1, "max_length": 32},
                "projection": {"type": "linear"},
            },
        },
    }
