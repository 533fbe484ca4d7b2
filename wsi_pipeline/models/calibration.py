"""What travels with the weights to turn logits into slide calls: the probability calibration
(:class:`Calibration`, temperature scaling) and the lesion rule's parameters (:class:`DecisionRule`).

Both are optional sections of ``config.json`` (``calibration``, ``decision_rule``); a model without
them is read with the documented built-in defaults (temperature 1, i.e. the plain sigmoid, and
:data:`DEFAULT_RULE`). :func:`fit_temperature` fits the temperature on labelled logits (the model's
recorded validation split, ``wsi-pipeline calibrate``). The rule itself is applied by
:mod:`wsi_pipeline.lesions`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

import numpy as np

from wsi_pipeline.errors import ModelConfigError

RULE_NAME = "hysteresis-topk"


def _number(value: object, name: str, low: float, high: float, low_open: bool = False) -> float:
    if not isinstance(value, Real) or isinstance(value, bool) or not math.isfinite(float(value)):
        raise ModelConfigError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if value < low or value > high or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise ModelConfigError(f"{name} must be within {bracket}{low:g}, {high:g}], got {value:g}")
    return value


@dataclass(frozen=True)
class Calibration:
    """Temperature scaling: calibrated probability = ``sigmoid(logit / temperature)``.

    A temperature > 1 softens an over-confident model; it never moves the 0.5 point, so patch
    accuracy and AUC are unchanged. ``fitted_on`` records the data it was fitted on (free form).
    """

    temperature: float = 1.0
    method: str = "temperature"
    fitted_on: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "temperature", _number(self.temperature, "calibration.temperature", 0.0, 100.0, True)
        )
        if self.method != "temperature":
            raise ModelConfigError(f"calibration.method must be 'temperature', got {self.method!r}")
        if not isinstance(self.fitted_on, dict):
            raise ModelConfigError("calibration.fitted_on must be a mapping")


@dataclass(frozen=True)
class DecisionRule:
    """Parameters of the lesion rule (see :mod:`wsi_pipeline.lesions`), all on calibrated probabilities.

    - ``low``: cells >= ``low`` are grown into 8-connected candidate regions;
    - ``support_mm2``: a region's confidence is the mean of its ``k`` most confident cells, ``k`` =
      the number of heatmap cells covering ``support_mm2`` (at least 1), missing cells counting 0;
    - ``high``: a region is kept as a lesion when its confidence is >= ``high`` (so it holds seed
      cells >= ``high`` and at least ``ceil(k * high)`` cells).
    """

    high: float = 0.9
    low: float = 0.5
    support_mm2: float = 0.026
    name: str = RULE_NAME
    fitted_on: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name != RULE_NAME:
            raise ModelConfigError(f"decision_rule.name must be {RULE_NAME!r}, got {self.name!r}")
        object.__setattr__(self, "high", _number(self.high, "decision_rule.high", 0.0, 1.0, True))
        object.__setattr__(self, "low", _number(self.low, "decision_rule.low", 0.0, 1.0))
        object.__setattr__(
            self, "support_mm2", _number(self.support_mm2, "decision_rule.support_mm2", 0.0, 100.0)
        )
        if self.low > self.high:
            raise ModelConfigError(
                f"decision_rule.low ({self.low:g}) must not be above decision_rule.high ({self.high:g})"
            )
        if not isinstance(self.fitted_on, dict):
            raise ModelConfigError("decision_rule.fitted_on must be a mapping")

    def support_cells(self, cell_um: float) -> int:
        """``k``: heatmap cells of ``cell_um`` covering ``support_mm2`` (rounded, at least 1)."""
        cell_mm2 = (cell_um / 1000.0) ** 2
        return max(1, int(round(self.support_mm2 / cell_mm2)))

    def parameters(self) -> dict[str, float]:
        return {"high": self.high, "low": self.low, "support_mm2": self.support_mm2}


#: The rule of a model whose config has no ``decision_rule`` section.
DEFAULT_RULE = DecisionRule()


def calibrated(logits: Any, temperature: float) -> Any:
    """``sigmoid(logits / temperature)`` for a torch tensor or a numpy array (same type back)."""
    if isinstance(logits, np.ndarray):
        z = logits.astype(np.float64) / temperature
        return (0.5 * (1.0 + np.tanh(0.5 * z))).astype(np.float32)
    import torch

    return torch.sigmoid(logits / temperature if temperature != 1.0 else logits)


def calibrated_logit(probs: Any, temperature: float, eps: float = 1e-7) -> Any:
    """The logit whose :func:`calibrated` probability is ``probs`` (torch): ``T * logit(p)``, with ``p``
    kept inside ``(eps, 1 - eps)``; how a probability averaged elsewhere (TTA) re-enters the engine."""
    import torch

    return temperature * torch.logit(probs.clamp(eps, 1.0 - eps))


def _nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    z = logits / temperature
    # mean binary cross-entropy of sigmoid(z), computed stably
    return float(np.mean(np.logaddexp(0.0, z) - labels * z))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the mean negative log-likelihood of ``labels`` (0/1) under
    ``sigmoid(logits / T)``, searched over T in [0.05, 20] (bounded scalar minimisation on log T)."""
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    if len(logits) != len(labels) or len(logits) == 0:
        raise ValueError(f"need as many labels as logits (> 0), got {len(labels)} and {len(logits)}")
    if labels.min() == labels.max():
        raise ValueError("temperature scaling needs both classes among the labels")
    result = minimize_scalar(
        lambda log_t: _nll(logits, labels, math.exp(log_t)),
        bounds=(math.log(0.05), math.log(20.0)),
        method="bounded",
        options={"xatol": 1e-5},
    )
    return float(math.exp(result.x))


def calibration_report(logits: np.ndarray, labels: np.ndarray, temperature: float) -> dict[str, float]:
    """NLL and expected calibration error (10 equal-width bins) before and after ``temperature``."""
    logits = np.asarray(logits, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    out = {}
    for tag, t in (("uncalibrated", 1.0), ("calibrated", temperature)):
        probs = calibrated(logits, t).astype(np.float64)
        out[f"nll_{tag}"] = _nll(logits, labels, t)
        out[f"ece_{tag}"] = expected_calibration_error(probs, labels)
    return out


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Mean |accuracy - confidence| over equal-width probability bins, weighted by bin size."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    which = np.minimum((probs * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.sum() * abs(labels[inside].mean() - probs[inside].mean())
    return float(total / max(len(probs), 1))
