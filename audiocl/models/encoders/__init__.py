"""Encoders: each maps one modality's input to ``Tensor[B, output_dim]``.

Built-in types: ``cnn``, ``speech_cnn``, ``htsat``, ``hf_text``,
``small_text``, ``hf_speech``, ``mlp``. Add your own with
:func:`register_encoder`.
"""

from audiocl.models.encoders.base import (
    EncoderParams,
    build_encoder,
    encoder_names,
    get_encoder_class,
    register_encoder,
)

__all__ = ["EncoderParams", "build_encoder", "encoder_names", "get_encoder_class", "register_encoder"]
