"""Multi-tower models: towers, encoders, projections, saving/loading, and the embedding API."""

from audiocl.models.api import embed_audio_files, embed_texts, embed_waveforms, load_model
from audiocl.models.config import ModelConfig, TowerConfig, load_model_config
from audiocl.models.encoders import build_encoder, register_encoder
from audiocl.models.model import MultiTowerModel
from audiocl.models.towers import FrozenEmbeddingCache, Tower

__all__ = [
    "FrozenEmbeddingCache",
    "ModelConfig",
    "MultiTowerModel",
    "Tower",
    "TowerConfig",
    "build_encoder",
    "embed_audio_files",
    "embed_texts",
    "embed_waveforms",
    "load_model",
    "load_model_config",
    "register_encoder",
]
