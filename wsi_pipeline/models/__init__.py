"""Patch classifiers: registry, typed config, preprocessing, stain normalisation and weights I/O.

Importing this package registers the built-in architectures: each module below runs its
``@register_model`` decorators when imported. A new architecture module is one more line here.
"""

from wsi_pipeline.models import architectures as architectures  # seed_cnn, tiny_resnet, context_cnn
from wsi_pipeline.models import dense_cnn as dense_cnn  # dense_cnn (dense-capable, optional D4)
from wsi_pipeline.models import ensemble as ensemble  # ensemble
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
