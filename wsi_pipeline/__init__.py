"""wsi_pipeline: find metastatic cancer in lymph-node whole-slide images."""

__version__ = "0.1.0"

__all__ = ["__version__"]
