"""The one model registry: architecture name -> builder of an ``nn.Module``.

The registry imports nothing of the package but its errors. Builders register themselves with
:func:`register_model` when their module is imported; :mod:`wsi_pipeline.models` imports the
built-in architecture modules (timm's way), so any import of the models package sees them.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from numbers import Integral, Real
from typing import Any, TypeVar, Union

from torch import nn

from wsi_pipeline.errors import ModelConfigError, UnknownArchitectureError

ModelBuilder = Callable[..., nn.Module]
#: Extra check of a builder's keyword arguments beyond its signature (an ensemble's members).
KwargsCheck = Callable[[Mapping[str, Any]], None]
_REGISTRY: dict[str, ModelBuilder] = {}
_UNLISTED: set[str] = set()
_CHECKS: dict[str, KwargsCheck] = {}
_B = TypeVar("_B", bound=ModelBuilder)


def register_model(name: str, listed: bool = True, check: KwargsCheck | None = None) -> Callable[[_B], _B]:
    """Decorator registering ``builder(**kwargs) -> nn.Module`` under ``name``; ``listed=False``
    keeps it out of :func:`list_models` (test stand-ins), though models saved with it still load;
    ``check(kwargs)`` is run by :func:`check_model_kwargs` after the signature check."""

    def decorator(builder: _B) -> _B:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = builder
        if not listed:
            _UNLISTED.add(name)
        if check is not None:
            _CHECKS[name] = check
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


def check_model_kwargs(name: str, kwargs: Mapping[str, Any]) -> None:
    """Check ``kwargs`` against the signature of the builder registered as ``name`` (a model
    config's ``arch_kwargs``, before anything is built): unknown or missing keywords and values that
    do not fit the annotated types (``int``, ``float``, ``bool``, ``str``, sequences of those,
    ``None``) are a :class:`ModelConfigError`; :class:`UnknownArchitectureError` for a bad name."""
    builder = model_builder(name)
    where = f"arch_kwargs for {name!r}"
    signature = inspect.signature(builder)
    params = signature.parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    accepted = [n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown and not takes_any:
        raise ModelConfigError(
            f"{where}: unknown keyword(s) {', '.join(map(repr, unknown))}; accepted: {', '.join(accepted)}"
        )
    missing = [n for n in accepted if params[n].default is inspect.Parameter.empty and n not in kwargs]
    if missing:
        raise ModelConfigError(f"{where}: missing keyword(s) {', '.join(map(repr, missing))}")
    try:
        hints = typing.get_type_hints(builder)
    except Exception:  # unresolvable annotations: the signature check is all we can do
        hints = {}
    for key, value in kwargs.items():
        hint = hints.get(key)
        if hint is not None and not _fits(value, hint):
            raise ModelConfigError(
                f"{where}: {key!r} must be {_type_name(hint)}, got {type(value).__name__} {value!r}"
            )
    extra = _CHECKS.get(name)
    if extra is not None:
        extra(kwargs)


def _fits(value: object, hint: Any) -> bool:
    """Whether a JSON value fits a (simple) annotation; unknown annotations accept anything."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin is Union or origin is types.UnionType:
        return any(_fits(value, arg) for arg in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, Real) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        element = (
            args[0] if args and (origin is not tuple or len(args) == 2 and args[1] is Ellipsis) else None
        )
        return element is None or all(_fits(v, element) for v in value)
    if origin in (dict, Mapping) or hint is dict:
        return isinstance(value, Mapping)
    return True


def _type_name(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "").replace("collections.abc.", "")
