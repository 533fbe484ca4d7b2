"""The one model registry: architecture name -> builder of an ``nn.Module``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

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
    _ensure_builtin_models()
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build an untrained model by registry name."""
    _ensure_builtin_models()
    try:
        builder = _REGISTRY[name]
    except KeyError:
        raise UnknownArchitectureError(
            f"unknown architecture {name!r}; available: {', '.join(sorted(_REGISTRY))}"
        ) from None
    return builder(**kwargs)


def _ensure_builtin_models() -> None:
    # Importing the module runs its @register_model decorators.
    from wsi_pipeline.models import architectures, dense_cnn, ensemble, reference_models  # noqa: F401
