"""The one model registry: architecture name -> builder of an ``nn.Module``.

The registry imports nothing of the package but its errors. Builders register themselves with
:func:`register_model` when their module is imported; :mod:`wsi_pipeline.models` imports the
built-in architecture modules (timm's way), so any import of the models package sees them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import nn

from wsi_pipeline.errors import UnknownArchitectureError

ModelBuilder = Callable[..., nn.Module]
_REGISTRY: dict[str, ModelBuilder] = {}
_B = TypeVar("_B", bound=ModelBuilder)


def register_model(name: str) -> Callable[[_B], _B]:
    """Decorator registering ``builder(**kwargs) -> nn.Module`` under ``name``."""

    def decorator(builder: _B) -> _B:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = builder
        return builder

    return decorator


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_builder(name: str) -> ModelBuilder:
    """The builder registered as ``name``; :class:`UnknownArchitectureError` listing the others."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownArchitectureError(
            f"unknown architecture {name!r}; available: {', '.join(sorted(_REGISTRY))}"
        ) from None


def create_model(name: str, **kwargs: object) -> nn.Module:
    """Build an untrained model by registry name."""
    return model_builder(name)(**kwargs)
