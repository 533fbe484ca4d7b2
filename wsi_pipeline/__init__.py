"""wsi_pipeline: find metastatic cancer in lymph-node whole-slide images.

``run_slide``, ``InferenceOptions``, ``load_model`` and ``open_slide`` are importable from here; they
are loaded on first use (PEP 562), so ``import wsi_pipeline`` stays light (no torch).
"""

from __future__ import annotations

from importlib import import_module

__version__ = "0.1.0"

_LAZY = {
    "run_slide": "wsi_pipeline.pipeline",
    "InferenceOptions": "wsi_pipeline.options",
    "load_model": "wsi_pipeline.models.io",
    "open_slide": "wsi_pipeline.slide",
}

__all__ = ["InferenceOptions", "__version__", "load_model", "open_slide", "run_slide"]


def __getattr__(name: str) -> object:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'wsi_pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
