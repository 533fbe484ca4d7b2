"""Small real models for the slide-pipeline tests (saved with save_model, loaded with load_model)."""

from __future__ import annotations

from pathlib import Path

from wsi_pipeline.models import ModelConfig, create_model, load_model, save_model
from wsi_pipeline.models.io import LoadedModel

PROBE_KWARGS = {"red": 6.0, "green": 0.0, "blue": -6.0, "bias": 0.0}


def save_probe_model(directory: Path, patch_size: int = 32, mpp: float = 1.0, **kwargs: float) -> Path:
    """Save the deterministic ``mean_intensity_probe`` (mean 0, std 1) and return its folder."""
    arch_kwargs = {**PROBE_KWARGS, **kwargs}
    config = ModelConfig(
        architecture="mean_intensity_probe",
        arch_kwargs=arch_kwargs,
        name="probe",
        patch_size=patch_size,
        mpp=mpp,
    )
    return save_model(directory, create_model(config.architecture, **arch_kwargs), config)


def load_probe_model(directory: Path, patch_size: int = 32, mpp: float = 1.0, **kwargs: float) -> LoadedModel:
    return load_model(save_probe_model(directory, patch_size=patch_size, mpp=mpp, **kwargs))
