"""Tissue detection on a low-resolution thumbnail.

A pixel is tissue when it is not black (scanner borders) and either

* stained: its HSV saturation exceeds an Otsu threshold (clamped to ``[min_saturation,
  max_saturation]`` so all-glass and all-tissue slides behave) and it is not near-white, or
* pale (fat, loose stroma, faint eosin): darker than the slide's own glass by ``pale_delta``
  grey levels, or textured (local standard deviation above ``texture_level``) while darker than
  the glass by ``texture_delta``. The glass level is the median darkest channel of the unsaturated,
  not pure-white pixels (so white padding outside the scanned area does not count as glass).

The mask is then cleaned by a morphological closing, small holes are filled and small objects
dropped. :class:`TissueMask` answers "what fraction of
this level-0 rectangle is tissue" for many tiles at once through an integral image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.morphology import disk

from wsi_pipeline.slide.base import SlideReader
from wsi_pipeline.slide.regions import source_downsample, thumbnail


@dataclass(frozen=True)
class TissueParams:
    """Tunable settings of :func:`detect_tissue` (areas in um^2 when the slide mpp is known)."""

    mask_mpp: float = 8.0  # um per mask pixel when the slide mpp is known
    max_mask_size: int = 4096  # longest mask side (a quarter of it when the mpp is unknown)
    min_saturation: float = 0.05
    max_saturation: float = 0.15
    white_level: int = 235  # a pixel whose darkest channel is above this is glass
    black_level: int = 25  # a pixel whose brightest channel is below this is a black border
    pale_delta: float = 15.0  # grey levels below the glass that make an unsaturated pixel tissue
    texture_level: float = 4.0  # local std (3x3 mask px) of the darkest channel that marks texture
    texture_delta: float = 10.0  # ... for a textured pixel at least this much darker than the glass
    max_source_px: float = 2.0**30  # largest pyramid level the thumbnail may be read from (~32k^2 px)
    time_limit_s: float = 300.0  # longest the thumbnail read may take
    closing_um: float = 24.0
    min_object_um2: float = 2000.0
    max_hole_um2: float = 10000.0


@dataclass(frozen=True)
class TissueMask:
    """Stage 2 of the slide path: a boolean tissue mask with its geometry. Mask pixel (i, j) covers
    level-0 ``[j*scale_x, (j+1)*scale_x) x [i*scale_y, (i+1)*scale_y)``."""

    mask: np.ndarray
    scale_x: float
    scale_y: float
    slide_size: tuple[int, int]
    threshold: float = float("nan")  # saturation threshold used

    def __post_init__(self) -> None:
        mask = np.asarray(self.mask)
        if mask.ndim != 2 or mask.dtype != np.bool_:
            raise ValueError(f"tissue mask must be a 2-D boolean array, got {mask.dtype} {mask.shape}")
        if not (self.scale_x > 0 and self.scale_y > 0):
            raise ValueError(f"tissue mask scales must be > 0, got {self.scale_x}, {self.scale_y}")
        object.__setattr__(self, "mask", mask)
        object.__setattr__(self, "slide_size", (int(self.slide_size[0]), int(self.slide_size[1])))

    @property
    def scale(self) -> float:
        """Mean level-0 px per mask px."""
        return (self.scale_x + self.scale_y) / 2.0

    @property
    def is_empty(self) -> bool:
        return not bool(self.mask.any())

    @property
    def tissue_fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0

    def _integral(self) -> np.ndarray:
        """The integral image of the mask (int32 while it fits: a 4,096 x 2,048 px mask's table is
        34 MB, against 68 MB and as much again in temporaries for int64)."""
        height, width = self.mask.shape
        dtype = np.int32 if self.mask.size < 2**31 else np.int64
        table = np.zeros((height + 1, width + 1), dtype=dtype)
        np.cumsum(self.mask, axis=0, dtype=dtype, out=table[1:, 1:])
        np.cumsum(table[1:, 1:], axis=1, out=table[1:, 1:])
        return table

    def tile_fractions(
        self, xs: np.ndarray, ys: np.ndarray, w0: float, h0: float, within_slide: bool = False
    ) -> np.ndarray:
        """Tissue fraction (0..1) of each level-0 rectangle ``(xs[k], ys[k], w0, h0)``, vectorised.

        Rectangle edges are rounded to the nearest mask pixel edge (at least one pixel, the one
        holding the rectangle's centre). Parts outside the mask (the slide) count as no tissue, or,
        with ``within_slide``, not at all: the fraction is then of the rectangle's part inside the
        slide (0 when none), so a tile overhanging the slide's edge is judged by what it shows.
        """
        xs = np.asarray(xs, dtype=np.float64)
        ys = np.asarray(ys, dtype=np.float64)
        height, width = self.mask.shape
        j0, j1 = _span(xs, w0, self.scale_x)
        i0, i1 = _span(ys, h0, self.scale_y)
        area = (j1 - j0) * (i1 - i0)
        cj0, cj1 = np.clip(j0, 0, width), np.clip(j1, 0, width)
        ci0, ci1 = np.clip(i0, 0, height), np.clip(i1, 0, height)
        table = self._integral()
        inside = table[ci1, cj1] - table[ci0, cj1] - table[ci1, cj0] + table[ci0, cj0]
        if within_slide:
            area = (cj1 - cj0) * (ci1 - ci0)
            return np.where(area > 0, inside / np.maximum(area, 1), 0.0)
        return inside / area

    def fraction_in(self, x0: float, y0: float, w0: float, h0: float) -> float:
        """Tissue fraction of one level-0 rectangle."""
        return float(self.tile_fractions(np.array([x0]), np.array([y0]), w0, h0)[0])


def _span(starts: np.ndarray, length: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    lo = np.floor(starts / scale + 0.5).astype(np.int64)
    hi = np.floor((starts + length) / scale + 0.5).astype(np.int64)
    centre = np.floor((starts + length / 2.0) / scale).astype(np.int64)
    small = hi <= lo
    lo = np.where(small, centre, lo)
    hi = np.where(small, centre + 1, hi)
    return lo, hi


def tissue_mask_from_rgb(
    rgb: np.ndarray, um_per_px: float | None = None, params: TissueParams | None = None
) -> tuple[np.ndarray, float]:
    """Boolean tissue mask of an RGB uint8 thumbnail and the saturation threshold used.

    ``um_per_px`` (of the thumbnail) converts the um-based morphology settings to pixels; when
    unknown, 8 um/px is assumed.
    """
    params = params or TissueParams()
    um_per_px = um_per_px or 8.0
    saturation, high, low = _saturation(rgb)
    try:
        otsu = float(threshold_otsu(saturation))
    except ValueError:  # constant image
        otsu = params.min_saturation
    threshold = float(np.clip(otsu, params.min_saturation, params.max_saturation))
    mask = (saturation > threshold) & (low < params.white_level)
    mask |= _pale_tissue(low, saturation, params)
    mask &= high > params.black_level
    del saturation, high
    radius = int(round(params.closing_um / um_per_px))
    if radius >= 1 and mask.any():
        mask = ndimage.binary_closing(np.pad(mask, radius), disk(radius))[radius:-radius, radius:-radius]
    px_area = um_per_px**2
    mask = _fill_small_holes(mask, params.max_hole_um2 / px_area)
    mask = _remove_small_objects(mask, params.min_object_um2 / px_area)
    return mask, threshold


def _saturation(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HSV saturation (float32, Gaussian-smoothed, sigma 1 px) and the brightest and darkest channel
    (uint8) of every pixel. Worked in bands of rows so that the float temporaries stay a few
    megabytes whatever the thumbnail's size (the mask of a Camelyon-size slide has ~8 M pixels)."""
    rgb = rgb[..., :3]
    high, low = rgb.max(axis=2), rgb.min(axis=2)
    saturation = np.empty(high.shape, dtype=np.float32)
    for r0 in range(0, high.shape[0], _BAND):
        h = high[r0 : r0 + _BAND].astype(np.float32)
        sat = saturation[r0 : r0 + _BAND]
        np.subtract(h, low[r0 : r0 + _BAND], out=sat)
        np.divide(sat, np.maximum(h, 1.0), out=sat)
    smooth = np.empty_like(saturation)
    # skimage.filters.gaussian's settings (mode "nearest", truncate 4) in float32, band by band: a
    # sigma-1 kernel reaches 4 px, so bands read 4 rows of halo and agree with one whole-image pass.
    for r0, r1, a, b in _bands(high.shape[0], halo=4):
        smooth[r0:r1] = ndimage.gaussian_filter(saturation[a:b], 1.0, mode="nearest")[r0 - a : r1 - a]
    return smooth, high, low


#: Rows per band in the float steps of the mask computation.
_BAND = 256


def _bands(rows: int, halo: int) -> list[tuple[int, int, int, int]]:
    """``(r0, r1, a, b)``: band ``[r0, r1)`` and the rows ``[a, b)`` to filter for it (``halo`` more
    on each side, clipped at the image edge, so a filter's own border handling applies only there)."""
    return [
        (r0, min(r0 + _BAND, rows), max(r0 - halo, 0), min(r0 + _BAND + halo, rows))
        for r0 in range(0, rows, _BAND)
    ]


def glass_level(low: np.ndarray, saturation: np.ndarray, params: TissueParams) -> float:
    """Grey level of the slide's glass: the median darkest channel of unsaturated pixels that are
    neither pure white (padding, overexposure) nor dark; ``white_level`` when there are too few."""
    flat = (saturation < params.min_saturation) & (low < 250) & (low > 150)
    if flat.sum() < 0.01 * low.size:
        return float(params.white_level)
    return float(np.median(low[flat]))


def _pale_tissue(low: np.ndarray, saturation: np.ndarray, params: TissueParams) -> np.ndarray:
    """Unsaturated tissue: darker than the glass, or textured and somewhat darker."""
    glass = glass_level(low, saturation, params)
    out = np.empty(low.shape, dtype=bool)
    for r0, r1, a, b in _bands(low.shape[0], halo=1):
        band = low[a:b].astype(np.float32)
        mean = ndimage.uniform_filter(band, 3)
        var = ndimage.uniform_filter(band * band, 3) - mean * mean
        centre = band[r0 - a : r1 - a]
        textured = (var[r0 - a : r1 - a] > params.texture_level**2) & (centre < glass - params.texture_delta)
        out[r0:r1] = (centre < glass - params.pale_delta) | textured
    return out


def _remove_small_objects(mask: np.ndarray, min_pixels: float) -> np.ndarray:
    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[labels]


def _fill_small_holes(mask: np.ndarray, max_pixels: float) -> np.ndarray:
    holes, count = ndimage.label(~mask)
    if count == 0:
        return mask
    sizes = np.bincount(holes.ravel())
    border = np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))
    fill = sizes <= max_pixels
    fill[0] = False
    fill[border] = False
    return mask | fill[holes]


def detect_tissue(
    reader: SlideReader, mpp: float | None = None, params: TissueParams | None = None
) -> TissueMask:
    """Tissue mask of a slide from a thumbnail at ``params.mask_mpp`` um/px (``mpp`` = level-0 um/px,
    or None when unknown: the thumbnail then fits ``max_mask_size / 4``).

    The thumbnail comes from a pyramid level of at most ``params.max_source_px`` pixels (coarser
    than asked if need be) within ``params.time_limit_s``; a slide with no such level raises
    :class:`~wsi_pipeline.errors.SlideTooLargeError` before anything is read."""
    params = params or TissueParams()
    width, height = reader.dimensions
    if mpp:
        downsample = max(params.mask_mpp / mpp, max(width, height) / params.max_mask_size, 1.0)
    else:
        downsample = max(max(width, height) / (params.max_mask_size / 4), 1.0)
    downsample = source_downsample(reader, downsample, params.max_source_px)
    thumb = thumbnail(reader, downsample=downsample, time_limit_s=params.time_limit_s)
    scale_x, scale_y = width / thumb.shape[1], height / thumb.shape[0]
    um_per_px = mpp * (scale_x + scale_y) / 2 if mpp else None
    mask, threshold = tissue_mask_from_rgb(thumb, um_per_px, params)
    return TissueMask(mask, scale_x, scale_y, (width, height), threshold)
