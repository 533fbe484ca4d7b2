"""The one place that reads a ``--device`` value: ``auto | cpu | cuda | cuda:N``.

:func:`parse_device` checks the syntax only (no torch import; right for a remote cluster whose GPUs
this machine cannot see); :func:`resolve_device` also checks the device exists here and returns the
``torch.device``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wsi_pipeline.errors import OptionError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def parse_device(device: str) -> str:
    """The normalised device name (``auto``, ``cpu``, ``cuda`` or ``cuda:N``); :class:`OptionError`
    naming ``--device`` for anything else."""
    name = device.strip().lower() if isinstance(device, str) else ""
    kind, colon, index = name.partition(":")
    if name in ("auto", "cpu", "cuda") or (kind == "cuda" and colon and index.isdigit()):
        return name
    raise OptionError(f"--device: unknown device {device!r} (use {DEVICE_CHOICES})")


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; a CUDA device missing here is an :class:`OptionError`."""
    import torch

    name = parse_device(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(name)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise OptionError(
                f"--device {device}: CUDA is not available (no CUDA device is available on this machine; "
                "use cpu or auto)"
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise OptionError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present")
    return resolved
