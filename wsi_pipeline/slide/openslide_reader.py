"""SlideReader backed by OpenSlide (SVS, generic tiled TIFF, NDPI, MRXS, DICOM, ...)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide

from wsi_pipeline.errors import SlideOpenError, SlideReadError
from wsi_pipeline.slide._color import to_rgb
from wsi_pipeline.slide.base import SlideReader


class OpenSlideReader(SlideReader):
    """Reads any format OpenSlide supports. Thread-safe (OpenSlide handles are)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._slide = openslide.OpenSlide(str(self.path))
        except openslide.OpenSlideError as exc:
            raise SlideOpenError(f"{self.path}: OpenSlide cannot open it: {exc}") from exc
        self._level_dimensions: list[tuple[int, int]] = [
            (int(w), int(h)) for w, h in self._slide.level_dimensions
        ]
        self._level_downsamples = [float(d) for d in self._slide.level_downsamples]

    @property
    def vendor(self) -> str | None:
        return self._slide.properties.get(openslide.PROPERTY_NAME_VENDOR)

    @property
    def format_name(self) -> str:
        return f"openslide:{self.vendor or 'unknown'}"

    @property
    def properties(self) -> dict[str, str]:
        return dict(self._slide.properties)

    @property
    def dimensions(self) -> tuple[int, int]:
        return self._level_dimensions[0]

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        return list(self._level_dimensions)

    @property
    def level_downsamples(self) -> list[float]:
        return list(self._level_downsamples)

    @property
    def metadata_mpp(self) -> float | None:
        raw = self._slide.properties.get(openslide.PROPERTY_NAME_MPP_X)
        try:
            value = float(raw) if raw is not None else None
        except ValueError:
            return None
        return value if value is not None and np.isfinite(value) and value > 0 else None

    @property
    def bounds(self) -> tuple[int, int, int, int] | None:
        """``openslide.bounds-x/-y/-width/-height`` (level-0 px), None when the slide has none."""
        props = self._slide.properties
        width, height = self.dimensions
        try:
            x = int(props.get(openslide.PROPERTY_NAME_BOUNDS_X, 0))
            y = int(props.get(openslide.PROPERTY_NAME_BOUNDS_Y, 0))
            w = int(props.get(openslide.PROPERTY_NAME_BOUNDS_WIDTH, width - x))
            h = int(props.get(openslide.PROPERTY_NAME_BOUNDS_HEIGHT, height - y))
        except ValueError:
            return None
        if not any(key.startswith("openslide.bounds-") for key in props):
            return None
        if not (0 <= x < width and 0 <= y < height and w > 0 and h > 0):
            return None
        return (x, y, w, h)

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        width, height = int(size[0]), int(size[1])
        if width <= 0 or height <= 0:
            return np.full((max(height, 0), max(width, 0), 3), 255, np.uint8)
        if not 0 <= level < len(self._level_dimensions):
            raise ValueError(f"level {level} out of range 0..{len(self._level_dimensions) - 1}")
        try:
            image = self._slide.read_region((int(location[0]), int(location[1])), level, (width, height))
        except openslide.OpenSlideError as exc:
            raise SlideReadError(
                f"{self.path}: cannot read pixels at level {level}, location {tuple(location)}: {exc}"
            ) from exc
        # openslide-python returns non-premultiplied RGBA; transparent = outside the slide.
        return to_rgb(np.asarray(image), premultiplied_alpha=False)

    def close(self) -> None:
        self._slide.close()
