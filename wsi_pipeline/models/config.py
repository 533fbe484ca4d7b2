"""Typed model configuration stored as ``config.json`` beside the weights."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from wsi_pipeline.domain import DomainStats
from wsi_pipeline.errors import ModelConfigError, ModelError
from wsi_pipeline.models.calibration import DEFAULT_RULE, Calibration, DecisionRule
from wsi_pipeline.models.registry import check_model_kwargs
from wsi_pipeline.pcam import PCAM_MPP, PCAM_PATCH
from wsi_pipeline.strict import build_dataclass

CONFIG_FILENAME = "config.json"
WEIGHTS_FILENAME = "model.safetensors"


@dataclass
class ModelConfig:
    """Everything needed to rebuild a patch model and feed it pixels.

    The model maps a float tensor ``(N, 3, patch_size, patch_size)`` (RGB scaled to
    [0, 1], then ``(x - mean) / std``) to one logit per patch; the tumour
    probability is ``sigmoid(logit / calibration.temperature)`` (temperature 1 without a
    ``calibration`` section). ``decision_rule`` holds the lesion rule's parameters fitted for this
    model (:data:`~wsi_pipeline.models.calibration.DEFAULT_RULE` without one). Both sections are
    omitted from ``config.json`` when unset, so older configs read and save unchanged.
    """

    architecture: str
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    patch_size: int = PCAM_PATCH
    mpp: float = PCAM_MPP
    class_names: list[str] = field(default_factory=lambda: ["normal", "tumor"])
    mean: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    std: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    #: Optional centre crop (px) applied before the network, e.g. 32 for the study's variant.
    center_crop: int | None = None
    #: Optional stain normalisation: {"method": "macenko"|"reinhard", ...reference params}.
    stain_normalization: dict[str, Any] | None = None
    #: Free-form provenance: data summary, split, metrics, training settings.
    data: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    #: Training patches' stain/texture statistics for the out-of-domain warning (None: no check).
    domain: DomainStats | None = None
    format_version: int = 1
    calibration: Calibration | None = None
    decision_rule: DecisionRule | None = None

    def __post_init__(self) -> None:
        """Checks every field's type and range (a config read from a file holds anything JSON can
        say), so a bad value is a one-line :class:`ModelConfigError` when the config is read, not a
        ``TypeError`` while the network is built or a ``RuntimeError`` at inference."""
        for name, cls in (("calibration", Calibration), ("decision_rule", DecisionRule)):
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, build_dataclass(cls, value, f"model config: {name}", ModelConfigError))
            elif value is not None and not isinstance(value, cls):
                raise ModelConfigError(f"model config: {name} must be a mapping, got {value!r}")
        if not isinstance(self.architecture, str) or not self.architecture:
            raise ModelConfigError("model config: 'architecture' must be a non-empty string")
        if not isinstance(self.arch_kwargs, dict) or not all(isinstance(k, str) for k in self.arch_kwargs):
            raise ModelConfigError(
                f"model config: arch_kwargs must be a mapping of keyword arguments, got {self.arch_kwargs!r}"
            )
        if not _is_whole(self.patch_size) or self.patch_size <= 0:
            raise ModelConfigError(
                f"model config: patch_size must be a whole number > 0, got {self.patch_size!r}"
            )
        if not _is_number(self.mpp) or not 0 < float(self.mpp) < math.inf:
            raise ModelConfigError(f"model config: mpp must be a positive number, got {self.mpp!r}")
        if self.center_crop is not None:
            if not _is_whole(self.center_crop) or self.center_crop <= 0:
                raise ModelConfigError(
                    "model config: center_crop must be a whole number > 0 (or null), "
                    f"got {self.center_crop!r}"
                )
            if self.center_crop > self.patch_size:
                raise ModelConfigError(
                    f"model config: center_crop {self.center_crop} px is larger than the "
                    f"patch_size {self.patch_size} px it is cut from"
                )
        for name in ("mean", "std"):
            values = getattr(self, name)
            if not (isinstance(values, (list, tuple)) and len(values) == 3 and all(map(_is_number, values))):
                raise ModelConfigError(f"model config: {name} must be 3 numbers (R, G, B), got {values!r}")
            if not all(math.isfinite(v) for v in values):
                raise ModelConfigError(f"model config: {name} must be finite, got {values!r}")
        if any(s <= 0 for s in self.std):
            raise ModelConfigError(f"model config: std values must be > 0, got {self.std!r}")
        if not (
            isinstance(self.class_names, (list, tuple))
            and len(self.class_names) == 2
            and all(isinstance(c, str) for c in self.class_names)
        ):
            raise ModelConfigError("model config: class_names must name 2 classes (normal, tumour)")
        if self.stain_normalization is not None and not isinstance(self.stain_normalization, dict):
            raise ModelConfigError("model config: stain_normalization must be a mapping or null")
        if self.domain is not None:
            self.domain = DomainStats.from_dict(self.domain)

    @property
    def input_size(self) -> int:
        """Side of the square the network actually sees."""
        return self.center_crop or self.patch_size

    @property
    def temperature(self) -> float:
        """The calibration temperature (1.0: plain sigmoid, no calibration recorded)."""
        return 1.0 if self.calibration is None else self.calibration.temperature

    @property
    def rule(self) -> DecisionRule:
        """The model's lesion rule parameters (the built-in default when none are recorded)."""
        return DEFAULT_RULE if self.decision_rule is None else self.decision_rule

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("calibration", "decision_rule"):
            if data[name] is None:
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model config") -> ModelConfig:
        return build_dataclass(cls, data, source, ModelConfigError, strip_prefix="model config: ")

    def save(self, directory: Path) -> Path:
        path = Path(directory) / CONFIG_FILENAME
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, path: Path) -> ModelConfig:
        """Read and check ``config.json`` (fields and ``arch_kwargs`` against the registered
        builder's signature); every problem is a :class:`ModelConfigError` naming the file."""
        path = Path(path)
        if path.is_dir():
            path = path / CONFIG_FILENAME
        if not path.is_file():
            raise ModelConfigError(f"{path}: model config not found")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelConfigError(f"{path}: cannot parse model config: {exc}") from exc
        config = cls.from_dict(data, source=f"{path}: model config")
        try:
            check_model_kwargs(config.architecture, config.arch_kwargs)
        except ModelError as exc:  # ModelConfigError, UnknownArchitectureError
            raise type(exc)(f"{path}: {exc}") from None
        return config


def _is_number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _is_whole(value: object) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)
