"""Small real models for tests (saved with save_model, loaded with load_model); the deterministic probe
model lives in :mod:`wsi_pipeline.testing`."""

from __future__ import annotations

from pathlib import Path

from wsi_pipeline.models import ModelConfig, create_model, save_model


def save_small_bn_model(
    folder: Path,
    center_crop: int | None = None,
    stain: dict | None = None,
    seed: int = 3,
    mean: tuple[float, float, float] = (0.70, 0.55, 0.70),
    std: tuple[float, float, float] = (0.20, 0.25, 0.18),
) -> Path:
    """Save a tiny ``tiny_resnet`` with non-trivial BatchNorm statistics (outputs spread away from
    0.5), for tests that compare a transformed network (export, BN folding) with ``predict_proba``."""
    import torch

    torch.manual_seed(seed)
    kwargs = {"widths": [8, 16, 16], "dropout": 0.0}
    module = create_model("tiny_resnet", **kwargs)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.3, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    config = ModelConfig(
        architecture="tiny_resnet",
        arch_kwargs=kwargs,
        name="small-test",
        mean=list(mean),
        std=list(std),
        center_crop=center_crop,
        stain_normalization=stain,
    )
    return save_model(folder, module, config)


def save_nan_output_model(folder: Path, patch_size: int = 32, mpp: float = 1.0) -> Path:
    """A ``tiny_resnet`` whose weights are all finite but whose output is NaN for every patch: one
    BatchNorm's running variance is negative (``sqrt`` of a negative number), the kind of broken
    statistics a bad training run or a hand-edited file can leave. Saved with ``save_model``."""
    import torch

    torch.manual_seed(0)
    kwargs = {"widths": [4, 8, 8], "dropout": 0.0}
    module = create_model("tiny_resnet", **kwargs)
    first_bn = next(m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d))
    first_bn.running_var.fill_(-1.0)
    config = ModelConfig(
        architecture="tiny_resnet", arch_kwargs=kwargs, name="nan-out", patch_size=patch_size, mpp=mpp
    )
    return save_model(folder, module, config)


DENSE_SMALL = {"widths": [8, 8, 16, 16, 16], "dropout": 0.0}


def save_dense_model(folder: Path, seed: int = 0, **config: object) -> Path:
    """A small seeded dense_cnn with non-trivial BatchNorm statistics, saved with save_model."""
    import torch

    torch.manual_seed(seed)
    module = create_model("dense_cnn", **DENSE_SMALL)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    cfg = ModelConfig(
        architecture="dense_cnn",
        arch_kwargs=dict(DENSE_SMALL),
        name=f"dense-test-{seed}",
        mean=[0.70, 0.55, 0.70],
        std=[0.20, 0.25, 0.18],
        **config,  # type: ignore[arg-type]
    )
    return save_model(folder, module, cfg)
