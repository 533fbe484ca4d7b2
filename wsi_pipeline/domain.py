"""Out-of-domain check: does a slide's tissue look like the patches the model was trained on?

Each patch (model resolution, RGB uint8) is described by :data:`FEATURES`: the mean haematoxylin,
eosin and DAB concentrations of its pixels (colour deconvolution, :mod:`wsi_pipeline.hed`), the
spread of haematoxylin and eosin, the 90th percentile of haematoxylin (how dark the nuclei are) and
the mean grey-level gradient (texture). :class:`DomainStats` records the training patches' mean and
covariance of these features and a threshold: the ``quantile`` of their squared Mahalanobis
distances to that mean. It is stored in the model config (``domain``) by training, by
:func:`wsi_pipeline.evaluation.validation.domain_statistics_for_model` and by
``wsi-pipeline domain-stats MODEL --data DATASET``.

At inference :func:`check_domain` takes a sample of the slide's tissue tiles: when the median tile
distance exceeds the threshold, the slide gets a warning (``summary.json`` ``warnings``). Lymph-node
slides built from PCam patches sit near the training median (squared distance ~5, threshold ~17 at
the 95th percentile); the skin slide CMU-1 is at 31-38.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from wsi_pipeline.errors import ModelConfigError

FEATURES = ("h_mean", "e_mean", "d_mean", "h_std", "e_std", "h_p90", "gradient")
DEFAULT_QUANTILE = 0.95
#: Training patches used for the statistics, and tissue tiles sampled per slide at inference.
DEFAULT_PATCHES = 4000
MAX_SLIDE_TILES = 256


def _hed_matrix() -> np.ndarray:
    from wsi_pipeline.hed import HED_FROM_RGB

    return HED_FROM_RGB.numpy().astype(np.float32)


def patch_features(images: np.ndarray, chunk: int = 32) -> np.ndarray:
    """``(N, len(FEATURES))`` float64 features of uint8 RGB patches ``(N, H, W, 3)``, worked out ``chunk``
    patches at a time (float32 temporaries of ~4 MB each for 32 patches of 96 px)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] < 3 or images.dtype != np.uint8:
        raise ValueError(f"patch features need uint8 (N, H, W, 3) patches, got {images.dtype} {images.shape}")
    to_hed = _hed_matrix()
    out = np.empty((len(images), len(FEATURES)), dtype=np.float64)
    for start in range(0, len(images), chunk):
        rgb = images[start : start + chunk, ..., :3].astype(np.float32)
        od = -np.log(np.maximum(rgb / 255.0, 1.0 / 255.0)).reshape(len(rgb), -1, 3)
        hed = od @ to_hed
        grey = rgb.mean(axis=-1)
        gradient = np.abs(np.diff(grey, axis=1)).mean((1, 2)) + np.abs(np.diff(grey, axis=2)).mean((1, 2))
        out[start : start + len(rgb)] = np.column_stack(
            [
                hed.mean(axis=1),
                hed[..., 0].std(axis=1),
                hed[..., 1].std(axis=1),
                np.percentile(hed[..., 0], 90, axis=1),
                gradient / 255.0,
            ]
        )
    return out


@dataclass(frozen=True)
class DomainStats:
    """The training patches' feature distribution (model config section ``domain``)."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    covariance: tuple[tuple[float, ...], ...]
    quantile: float
    threshold: float  # the quantile of the training patches' squared Mahalanobis distances
    n_patches: int
    source: str = ""

    def __post_init__(self) -> None:
        k = len(self.features)
        object.__setattr__(self, "features", tuple(str(f) for f in self.features))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "covariance", tuple(tuple(float(v) for v in row) for row in self.covariance))
        if self.features != FEATURES:
            raise ModelConfigError(
                f"domain statistics: features must be {list(FEATURES)}, got {list(self.features)}"
            )
        if len(self.mean) != k or len(self.covariance) != k or any(len(row) != k for row in self.covariance):
            raise ModelConfigError(f"domain statistics: mean and covariance must have {k} features")
        values = [*self.mean, *(v for row in self.covariance for v in row), self.threshold]
        if not all(math.isfinite(v) for v in values) or not self.threshold > 0:
            raise ModelConfigError("domain statistics: values must be finite, threshold > 0")
        if not 0 < self.quantile < 1 or int(self.n_patches) < 2:
            raise ModelConfigError("domain statistics: quantile in (0, 1) and >= 2 patches expected")

    @classmethod
    def from_dict(cls, data: Any) -> DomainStats:
        if isinstance(data, DomainStats):
            return data
        if not isinstance(data, dict):
            raise ModelConfigError("domain statistics: expected a mapping")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ModelConfigError(f"domain statistics: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distances of feature rows to the training mean."""
        inverse = np.linalg.pinv(np.asarray(self.covariance))
        centred = np.asarray(features, dtype=np.float64) - np.asarray(self.mean)
        return np.einsum("ni,ij,nj->n", centred, inverse, centred)


def domain_statistics(
    images: np.ndarray, quantile: float = DEFAULT_QUANTILE, source: str = ""
) -> DomainStats:
    """:class:`DomainStats` of training patches ``images`` (uint8 ``(N, H, W, 3)``, N >= 2)."""
    features = patch_features(images)
    if len(features) < 2:
        raise ValueError("domain statistics need at least 2 patches")
    mean = features.mean(axis=0)
    covariance = np.cov(features, rowvar=False)
    partial = DomainStats(FEATURES, tuple(mean), tuple(map(tuple, covariance)), quantile, 1.0, len(features))
    threshold = float(np.quantile(partial.distances(features), quantile))
    return DomainStats(FEATURES, partial.mean, partial.covariance, quantile, threshold, len(features), source)


@dataclass(frozen=True)
class DomainCheck:
    """The slide's sampled tissue tiles against the training statistics."""

    n_tiles: int
    median_distance: float
    threshold: float

    @property
    def out_of_domain(self) -> bool:
        return self.median_distance > self.threshold

    def warning(self) -> str | None:
        if not self.out_of_domain:
            return None
        return (
            "tissue does not look like the model's training data (median stain/texture distance "
            f"{self.median_distance:.1f} over {self.n_tiles} tissue tiles, training patches' limit "
            f"{self.threshold:.1f}): results may be unreliable"
        )


def check_domain(stats: DomainStats, tiles: np.ndarray) -> DomainCheck:
    """Compare tissue tiles (uint8 ``(N, H, W, 3)`` at the model's resolution) with ``stats``."""
    distances = stats.distances(patch_features(tiles))
    return DomainCheck(len(tiles), float(np.median(distances)), stats.threshold)


def sample_rows(n: int, limit: int = MAX_SLIDE_TILES) -> np.ndarray:
    """At most ``limit`` indices spread evenly over ``range(n)`` (deterministic)."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))
