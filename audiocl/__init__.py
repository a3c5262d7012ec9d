"""audiocl: contrastive representation learning on audio and paired modalities.

The package is laid out along the data flow (see README.md):
``audio`` (decode, resample, front-ends) -> ``data`` (manifests, importers,
feature store, Ray extraction, loaders) -> ``models`` + ``losses`` -> ``train``
-> ``eval``; ``interop`` converts LAION-CLAP and Hugging Face checkpoints.

Importing ``audiocl`` is cheap: heavy dependencies (torch, ray, transformers)
are imported by the submodules that need them.
"""

__version__ = "0.1.0"
