"""The one place that turns a ``--device`` value into a torch device."""

from __future__ import annotations

import torch

from wsi_pipeline.errors import OptionError


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an :class:`OptionError`."""
    name = (device or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(name)
    except (RuntimeError, ValueError):
        raise OptionError(f"--device: unknown device {device!r} (use auto, cpu, cuda or cuda:N)") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise OptionError(
                f"--device {device}: CUDA is not available (no CUDA device is available on this machine; "
                "use cpu or auto)"
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise OptionError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif resolved.type != "cpu":
        raise OptionError(f"--device: unsupported device {device!r} (use auto, cpu, cuda or cuda:N)")
    return resolved
