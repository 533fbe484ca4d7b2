"""Resampled reads: a level-0 rectangle at any output size, and slide thumbnails.

Reads come from the best pyramid level (never upsampling from a coarser one) and are resized
the rest of the way by exact area averaging (each output pixel is the mean of its footprint,
level pixels weighted by their overlap with it, fractional edges included), or bicubic (PIL)
when upsampling. Large requests
are processed in blocks, so memory stays bounded even for slides without a pyramid.
"""

from __future__ import annotations

import math
import time

import numpy as np
from PIL import Image
from scipy import sparse

from wsi_pipeline.errors import SlideTooLargeError
from wsi_pipeline.slide.base import SlideReader

MAX_BLOCK = 2048  # level pixels per side read at once
#: Level pixels per side of one block of a whole-slide thumbnail: a 2,048 px block costs ~180 MB of
#: temporaries (RGBA read, float32 resampling), a 1,024 px one a quarter of that, for the same pixels.
THUMBNAIL_BLOCK = 1024


def read_region_at_mpp(
    reader: SlideReader,
    x0: float,
    y0: float,
    width0: float,
    height0: float,
    out_w: int,
    out_h: int,
    max_block: int = MAX_BLOCK,
    deadline: float | None = None,
) -> np.ndarray:
    """RGB uint8 ``(out_h, out_w, 3)`` image of the level-0 rectangle ``(x0, y0, width0, height0)``.

    Coordinates may be fractional. To read at a target resolution, pass
    ``width0 = out_w * target_mpp / slide_mpp`` (same for height). Outside the slide is white.
    ``deadline`` (``time.monotonic()`` seconds): :class:`SlideTooLargeError` when a block-wise read
    is still running then.
    """
    out_w, out_h = int(out_w), int(out_h)
    if out_w <= 0 or out_h <= 0 or width0 <= 0 or height0 <= 0:
        raise ValueError(f"empty region request: {width0}x{height0} level-0 px -> {out_w}x{out_h}")
    fx, fy = width0 / out_w, height0 / out_h  # level-0 px per output px
    level = reader.best_level_for_downsample(min(fx, fy))
    lds = reader.level_downsamples[level]
    rx, ry = fx / lds, fy / lds  # level px per output px
    block_w = max(1, int(max_block / max(rx, 1.0)))
    block_h = max(1, int(max_block / max(ry, 1.0)))
    if block_w >= out_w and block_h >= out_h:
        return _read_block(reader, level, lds, x0, y0, fx, fy, out_w, out_h)
    out = np.empty((out_h, out_w, 3), dtype=np.uint8)
    for oy in range(0, out_h, block_h):
        oh = min(block_h, out_h - oy)
        for ox in range(0, out_w, block_w):
            if deadline is not None and time.monotonic() > deadline:
                raise SlideTooLargeError(
                    f"{reader.path}: reading {width0:.0f} x {height0:.0f} level-0 px from level {level} "
                    "ran past its time limit; the slide is too large to process without a pyramid"
                )
            ow = min(block_w, out_w - ox)
            out[oy : oy + oh, ox : ox + ow] = _read_block(
                reader, level, lds, x0 + ox * fx, y0 + oy * fy, fx, fy, ow, oh
            )
    return out


def _read_block(
    reader: SlideReader, level: int, lds: float, x0: float, y0: float, fx: float, fy: float, ow: int, oh: int
) -> np.ndarray:
    u0, v0 = x0 / lds, y0 / lds  # level coordinates of the block
    u1, v1 = u0 + ow * fx / lds, v0 + oh * fy / lds
    exact = (
        abs(fx - lds) < 1e-9 * lds
        and abs(fy - lds) < 1e-9 * lds
        and abs(u0 - round(u0)) < 1e-6
        and abs(v0 - round(v0)) < 1e-6
    )
    if exact:
        return reader.read_region(_level0_location(round(u0), round(v0), lds), level, (ow, oh))
    downsampling = fx >= lds and fy >= lds
    margin = 1 if downsampling else 3
    lx0, ly0 = math.floor(u0) - margin, math.floor(v0) - margin
    lx1, ly1 = math.ceil(u1) + margin, math.ceil(v1) + margin
    pixels = reader.read_region(_level0_location(lx0, ly0, lds), level, (lx1 - lx0, ly1 - ly0))
    if downsampling:
        return area_resample(pixels, u0 - lx0, v0 - ly0, fx / lds, fy / lds, ow, oh)
    box = (u0 - lx0, v0 - ly0, u1 - lx0, v1 - ly0)
    return np.asarray(Image.fromarray(pixels).resize((ow, oh), Image.Resampling.BICUBIC, box=box))


def area_resample(
    pixels: np.ndarray, left: float, top: float, step_x: float, step_y: float, out_w: int, out_h: int
) -> np.ndarray:
    """Exact area-average downsampling of ``pixels`` (h, w, c uint8).

    Output pixel (i, j) is the mean of input area ``[left + j*step_x, left + (j+1)*step_x) x
    [top + i*step_y, ...)`` where input pixel (r, c) covers ``[c, c+1) x [r, r+1)``.
    """
    height, width, channels = pixels.shape
    rows = _area_matrix(top, step_y, out_h, height)  # (out_h, height) sparse
    cols = _area_matrix(left, step_x, out_w, width)  # (out_w, width) sparse
    tmp = rows @ pixels.reshape(height, width * channels).astype(np.float32)  # (out_h, width*c)
    tmp = tmp.reshape(out_h, width, channels).transpose(1, 0, 2).reshape(width, out_h * channels)
    out = (cols @ tmp).reshape(out_w, out_h, channels).transpose(1, 0, 2)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8, order="C")


def _area_matrix(start: float, step: float, count: int, size: int) -> sparse.csr_matrix:
    idx, weights = _area_weights(start, step, count, size)
    row = np.repeat(np.arange(count), idx.shape[1])
    return sparse.csr_matrix((weights.ravel(), (row, idx.ravel())), shape=(count, size))


def _area_weights(start: float, step: float, count: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Input indices (count, m) and overlap weights (rows sum to 1) for output intervals."""
    lo = start + np.arange(count, dtype=np.float64) * step
    hi = lo + step
    width = int(math.ceil(step)) + 1
    idx = np.floor(lo).astype(np.int64)[:, None] + np.arange(width)[None, :]
    overlap = np.minimum(idx + 1, hi[:, None]) - np.maximum(idx, lo[:, None])
    overlap = np.where((idx >= 0) & (idx < size), np.clip(overlap, 0.0, None), 0.0)
    total = overlap.sum(axis=1, keepdims=True)
    weights = overlap / np.where(total > 0, total, 1.0)
    return np.clip(idx, 0, size - 1), weights.astype(np.float32)


def _level0_location(lx: int, ly: int, lds: float) -> tuple[int, int]:
    """Level-0 location closest to level pixel (lx, ly): readers map location / downsample to the
    nearest level pixel (OpenSlide blends by the remaining fraction, at most 0.5 / downsample)."""
    return (round(lx * lds), round(ly * lds))


def thumbnail(
    reader: SlideReader,
    max_size: int | None = 1024,
    downsample: float | None = None,
    max_block: int = THUMBNAIL_BLOCK,
    time_limit_s: float | None = None,
) -> np.ndarray:
    """Whole-slide RGB thumbnail at ``downsample`` (level-0 px per thumbnail px) or fitting ``max_size``.

    The level-0 px per thumbnail px along x and y are ``dimensions / thumbnail.shape``.
    :class:`SlideTooLargeError` when reading takes longer than ``time_limit_s`` seconds.
    """
    width, height = reader.dimensions
    if downsample is None:
        if max_size is None or max_size <= 0:
            raise ValueError("thumbnail needs a positive max_size or downsample")
        downsample = max(width, height) / max_size
    downsample = max(float(downsample), 1e-9)
    out_w = max(1, round(width / downsample))
    out_h = max(1, round(height / downsample))
    deadline = None if time_limit_s is None else time.monotonic() + time_limit_s
    return read_region_at_mpp(
        reader, 0, 0, width, height, out_w, out_h, max_block=max_block, deadline=deadline
    )


def source_downsample(reader: SlideReader, downsample: float, max_source_px: float) -> float:
    """The downsample to read a whole-slide thumbnail at, at least ``downsample``, so that the pyramid
    level it is read from holds at most ``max_source_px`` pixels (a coarser level when the one for
    ``downsample`` is larger). :class:`SlideTooLargeError` when no level is that small."""
    sizes = [w * h for w, h in reader.level_dimensions]
    if sizes[reader.best_level_for_downsample(downsample)] <= max_source_px:
        return downsample
    fits = [ds for size, ds in zip(sizes, reader.level_downsamples, strict=True) if size <= max_source_px]
    if fits:
        return max(downsample, min(fits))
    width, height = reader.dimensions
    raise SlideTooLargeError(
        f"{reader.path}: slide of {width} x {height} px has no pyramid level of at most "
        f"{_pixels(max_source_px)} (the smallest holds {_pixels(min(sizes))}): too large to "
        "process without a pyramid; save it as a tiled pyramidal TIFF (e.g. vips tiffsave --tile --pyramid)"
    )


def _pixels(count: float) -> str:
    return f"{count / 1e9:.3g} Gpx" if count >= 1e9 else f"{count / 1e6:.3g} Mpx"
