"""Patch classifiers: registry, typed config, and weights I/O."""

from wsi_pipeline.models.config import ModelConfig
from wsi_pipeline.models.io import LoadedModel, default_model_dir, load_model, save_model
from wsi_pipeline.models.registry import create_model, list_models, register_model

__all__ = [
    "LoadedModel",
    "ModelConfig",
    "create_model",
    "default_model_dir",
    "list_models",
    "load_model",
    "register_model",
    "save_model",
]
