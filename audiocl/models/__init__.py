"""Multi-tower models: towers, encoders, projections, saving/loading, and the embedding API."""

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
    "load_model_config",
    "register_encoder",
]
