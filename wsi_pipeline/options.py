"""The user-settable parameters of a slide run (:class:`InferenceOptions`) and the resume hash.

``params_hash(model, options)`` fingerprints everything that changes a slide's outputs (weights,
model config, result-changing options, pipeline version); batch runs skip slides whose summary
records the same hash.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from numbers import Real
from typing import TYPE_CHECKING

from wsi_pipeline.devices import parse_device
from wsi_pipeline.errors import OptionError
from wsi_pipeline.files import JsonDict, json_safe
from wsi_pipeline.precision import PRECISIONS
from wsi_pipeline.slide.info import check_mpp

if TYPE_CHECKING:
    from wsi_pipeline.models.io import LoadedModel

#: Bumped whenever a change to the pipeline changes results for the same model and options.
PIPELINE_VERSION = 2  # 2: edge tiles analysed, pale tissue kept, out-of-domain warning; calibrated
# probabilities and the hysteresis-topk lesion rule

#: Model config fields that record provenance, not how tiles are scored.
_PROVENANCE = ("data", "metrics", "training", "name")


@dataclass(frozen=True)
class InferenceOptions:
    """User-settable parameters of a slide run (all recorded in summary.json); checked on construction."""

    mpp: float | None = None  # override the slide's level-0 um/px
    stride: int | None = None  # in model pixels; None = patch size (96)
    batch_size: int = 256
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    tissue_threshold: float = 0.25  # min tissue fraction of a tile
    # Lesion rule overrides (None: the model config's decision_rule, else the built-in default)
    tumor_threshold: float | None = None  # rule "low": cells >= it grow candidate regions
    lesion_threshold: float | None = None  # rule "high": a region's confidence needed to keep it
    lesion_support_mm2: float | None = None  # rule "support_mm2": area whose top cells set confidence
    num_readers: int = 2  # background tile-reading threads
    precision: str = "auto"  # "auto" (measured per machine and model) | "fp32" | "bf16"
    viewer: bool = True  # also write viewer.html + its slide pyramid (does not change results)
    tta: bool = False  # mean over the 8 dihedral views of each tile (8x the model's cost)

    def __post_init__(self) -> None:
        if self.mpp is not None:
            check_mpp(self.mpp, "--mpp")
        for name, flag, low in (
            ("stride", "--stride", 1),
            ("batch_size", "--batch-size", 1),
            ("num_readers", "num_readers", 1),
        ):
            value = getattr(self, name)
            if value is None and name == "stride":
                continue
            if not (isinstance(value, Real) and not isinstance(value, bool) and float(value).is_integer()):
                raise OptionError(f"{flag} must be a whole number, got {value!r}")
            if value < low:
                unit = " model pixel" if name == "stride" else ""
                raise OptionError(f"{flag} must be >= {low}{unit}, got {value}")
        parse_device(self.device)
        if self.precision not in PRECISIONS:
            raise OptionError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        for name in ("viewer", "tta"):
            if not isinstance(getattr(self, name), bool):
                raise OptionError(f"{name} must be True or False, got {getattr(self, name)!r}")
        for name in ("tissue_threshold", "tumor_threshold", "lesion_threshold"):
            value = getattr(self, name)
            if value is None and name != "tissue_threshold":
                continue
            if not (isinstance(value, Real) and 0.0 <= float(value) <= 1.0):
                raise OptionError(f"--{name.replace('_', '-')} must be within [0, 1], got {value}")
        support = self.lesion_support_mm2
        if support is not None and not (isinstance(support, Real) and 0.0 <= float(support) <= 100.0):
            raise OptionError(f"--lesion-support must be within [0, 100] mm2, got {support}")

    def to_dict(self) -> JsonDict:
        return {key: json_safe(value) for key, value in asdict(self).items()}

    def result_params(self) -> JsonDict:
        """The options that change results (device, batch size, readers, precision and the viewer do
        not; bf16 changes probabilities by at most 0.01 and is recorded in ``inference``)."""
        return {
            "mpp": self.mpp,
            "stride": self.stride,
            "tissue_threshold": float(self.tissue_threshold),
            "tumor_threshold": self.tumor_threshold,
            "lesion_threshold": self.lesion_threshold,
            "lesion_support_mm2": self.lesion_support_mm2,
            **({"tta": True} if self.tta else {}),  # absent when off: earlier runs keep their key
        }

    def rule_overrides(self) -> dict[str, float | None]:
        """The decision-rule parameters given as options, by rule parameter name (None: not given)."""

        def number(value: float | None) -> float | None:
            return None if value is None else float(value)

        return {
            "low": number(self.tumor_threshold),
            "high": number(self.lesion_threshold),
            "support_mm2": number(self.lesion_support_mm2),
        }


def result_params(model: LoadedModel, options: InferenceOptions) -> JsonDict:
    """Everything that determines a slide's outputs: weights, model config, options, pipeline version."""
    config = model.config.to_dict()
    for provenance in _PROVENANCE:
        config.pop(provenance, None)
    return {
        "pipeline_version": PIPELINE_VERSION,
        "model_weights_sha256": model.weights_sha256,
        "model_config": json_safe(config),
        **options.result_params(),
    }


def params_hash(model: LoadedModel, options: InferenceOptions) -> str:
    """Stable sha256 of :func:`result_params`; batch runs skip slides whose summary has the same."""
    text = json.dumps(result_params(model, options), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
