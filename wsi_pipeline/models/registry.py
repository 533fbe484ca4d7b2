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
_UNLISTED: set[str] = set()
_B = TypeVar("_B", bound=ModelBuilder)


def register_model(name: str, listed: bool = True) -> Callable[[_B], _B]:
    """Decorator registering ``builder(**kwargs) -> nn.Module`` under ``name``; ``listed=False``
    keeps it out of :func:`list_models` (test stand-ins), though models saved with it still load."""

    def decorator(builder: _B) -> _B:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = builder
        if not listed:
            _UNLISTED.add(name)
        return builder

    return decorator


def list_models(include_unlisted: bool = False) -> list[str]:
    """The registered architecture names (``wsi-pipeline models``), without test stand-ins."""
    return sorted(name for name in _REGISTRY if include_unlisted or name not in _UNLISTED)


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
