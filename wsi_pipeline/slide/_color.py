"""Conversion of decoded pixel blocks to RGB uint8 composited on white."""

from __future__ import annotations

import numpy as np


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale any integer/float/bool pixel array to uint8 (0-255)."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        if info.min < 0:
            array = np.clip(array, 0, info.max)
        shift = info.bits - 8
        return (array.astype(np.uint64) >> shift).astype(np.uint8)
    values = array.astype(np.float32)
    finite = values[np.isfinite(values)]
    scale = 255.0 if finite.size == 0 or float(finite.max()) <= 1.0 else 1.0
    return np.clip(np.nan_to_num(values) * scale, 0, 255).round().astype(np.uint8)


def composite_on_white(rgb: np.ndarray, alpha: np.ndarray, premultiplied: bool) -> np.ndarray:
    """Composite ``rgb`` (h, w, 3 uint8) with ``alpha`` (h, w uint8) over a white background."""
    opaque = alpha == 255
    if opaque.all():
        return np.ascontiguousarray(rgb)
    clear = alpha == 0
    out = np.array(rgb, dtype=np.uint8, order="C")
    out[clear] = 255
    partial = ~(opaque | clear)
    if partial.any():  # integer blend; rgb * a + 255 * (255 - a) <= 65025 fits uint16
        a = alpha[partial].astype(np.uint16)[:, None]
        c = rgb[partial].astype(np.uint16)
        over = np.minimum(c + (255 - a), 255) if premultiplied else (c * a + 255 * (255 - a) + 127) // 255
        out[partial] = over.astype(np.uint8)
    return out


def to_rgb(pixels: np.ndarray, premultiplied_alpha: bool = False) -> np.ndarray:
    """Turn ``(h, w)`` or ``(h, w, c)`` pixels of any dtype into RGB uint8 ``(h, w, 3)``.

    1 channel = grey, 2 = grey + alpha, 3 = RGB, 4+ = RGB + alpha (extra channels dropped).
    Alpha is composited on white.
    """
    pixels = to_uint8(pixels)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    channels = pixels.shape[2]
    if channels == 1:
        return np.repeat(pixels, 3, axis=2)
    if channels == 2:
        grey = np.repeat(pixels[..., :1], 3, axis=2)
        return composite_on_white(grey, pixels[..., 1], premultiplied_alpha)
    if channels == 3:
        return np.ascontiguousarray(pixels)
    return composite_on_white(pixels[..., :3], pixels[..., 3], premultiplied_alpha)
