"""Interoperability: LAION-CLAP checkpoints and Hugging Face ``ClapModel`` folders.

- :func:`audiocl.interop.laion.convert_laion_checkpoint`: LAION ``.pt`` -> audiocl model folder;
- :func:`audiocl.interop.hf.convert_to_hf`: audiocl model folder -> HF ``ClapModel`` folder;
- :func:`audiocl.interop.hf.convert_from_hf`: HF ``ClapModel`` folder -> audiocl model folder.

Submodules import torch/transformers lazily, so importing this package is cheap.
"""

__all__ = ["hf", "laion"]
