"""Strict construction of a settings dataclass from a mapping (a JSON or YAML file, CLI overrides).

Unknown keys, missing required keys and values of the wrong type are one-line errors naming the
source; the dataclass's own ``__post_init__`` checks the values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TypeVar

from wsi_pipeline.errors import OptionError, WsiPipelineError

T = TypeVar("T")


def build_dataclass(
    cls: type[T],
    data: object,
    source: str,
    error: type[WsiPipelineError] = OptionError,
    strip_prefix: str = "",
) -> T:
    """``cls(**data)`` with every failure as ``error("<source>: <reason>")``.

    ``strip_prefix`` is removed from the messages of ``error`` raised by ``cls`` itself, so a nested
    source (``config.yaml``) replaces the generic one (``training config: ``).
    """
    if not isinstance(data, Mapping):
        raise error(f"{source}: expected a mapping of settings")
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(str(k) for k in set(data) - set(known))
    if unknown:
        raise error(f"{source}: unknown setting(s) {unknown}; known: {', '.join(sorted(known))}")
    required = [
        f.name
        for f in dataclasses.fields(cls)
        if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [name for name in required if name not in data]
    if missing:
        raise error(f"{source}: missing setting(s) {missing}")
    try:
        return cls(**data)
    except error as exc:
        raise error(f"{source}: {str(exc).removeprefix(strip_prefix)}") from None
    except TypeError as exc:  # wrong value types
        raise error(f"{source}: {exc}") from None
