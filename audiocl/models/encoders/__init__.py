"""Encoders: each maps one modality's input to ``Tensor[B, output_dim]``.

Built-in types: ``cnn``, ``speech_cnn``, ``htsat``, ``aisfx``, ``hf_text``,
``small_text``, ``hf_speech``, ``mlp``. Add your own with
:func:`register_encoder`.

The registry lives in :mod:`audiocl.models.encoders.base`, which imports no
encoder; the built-ins register themselves when imported here (each imports
only ``base``), so there is no import circle.
"""

from audiocl.models.encoders import (  # noqa: F401
    aisfx,
    cnn,
    hf_text,
    htsat,
    small_text,
    speech,
    vector,
    whisper,
)
from audiocl.models.encoders.base import (
    EncoderParams,
    build_encoder,
    encoder_names,
    get_encoder_class,
    register_encoder,
)

__all__ = ["EncoderParams", "build_encoder", "encoder_names", "get_encoder_class", "register_encoder"]
