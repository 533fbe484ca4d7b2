"""SlideReader backed by tifffile: OME-TIFF (pyramids in SubIFDs) and TIFFs OpenSlide refuses.

Only the tiles/strips that a request touches are read from disk and decoded (never a whole level);
decoded segments are kept in a small LRU cache shared by all levels.
"""

from __future__ import annotations

import math
import re
import threading
import xml.etree.ElementTree as ET
from collections import OrderedDict
from pathlib import Path

import numpy as np
import tifffile

from wsi_pipeline.errors import SlideOpenError, SlideReadError
from wsi_pipeline.slide._color import to_rgb, to_uint8
from wsi_pipeline.slide.base import SlideReader

# Length units (OME and TIFF) -> micrometres.
_UNIT_UM = {
    "m": 1e6,
    "dm": 1e5,
    "cm": 1e4,
    "mm": 1e3,
    "µm": 1.0,
    "um": 1.0,
    "μm": 1.0,
    "micron": 1.0,
    "nm": 1e-3,
    "pm": 1e-6,
    "Å": 1e-4,
    "in": 25400.0,
    "inch": 25400.0,
}
_TIFF_RESUNIT_UM = {2: 25400.0, 3: 1e4, 4: 1e3, 5: 1.0}  # INCH, CENTIMETER, (tifffile) MILLIMETER, MICROMETER
_SUPPORTED_PHOTOMETRIC = {0, 1, 2, 3, 6}  # MINISWHITE, MINISBLACK, RGB, PALETTE, YCBCR (JPEG)


class _Level:
    """One pyramid level: its pages (one, or one per channel) and the segment layout."""

    def __init__(self, pages: list, keyframe: tifffile.TiffPage) -> None:
        self.pages = pages
        self.key = keyframe
        self.width = int(keyframe.imagewidth)
        self.height = int(keyframe.imagelength)
        self.spp = int(keyframe.samplesperpixel)
        self.planar_separate = keyframe.planarconfig == 2 and self.spp > 1
        if keyframe.is_tiled:
            self.seg_w, self.seg_h = int(keyframe.tilewidth), int(keyframe.tilelength)
        else:
            self.seg_w = self.width
            self.seg_h = max(1, min(int(keyframe.rowsperstrip or self.height), self.height))
        self.nx = math.ceil(self.width / self.seg_w)
        self.ny = math.ceil(self.height / self.seg_h)
        self.channels = self.spp * len(pages)


class TiffFileReader(SlideReader):
    """Reads the main image series of a TIFF (OME or not) with tifffile, tile by tile."""

    def __init__(self, path: str | Path, cache_bytes: int = 64 * 2**20) -> None:
        self.path = Path(path)
        try:
            self._tif = tifffile.TiffFile(str(self.path))
        except Exception as exc:  # tifffile raises many types on malformed input
            raise SlideOpenError(f"{self.path}: not a readable TIFF: {exc}") from exc
        try:
            self._init_levels()
        except SlideOpenError:
            self._tif.close()
            raise
        except Exception as exc:
            self._tif.close()
            raise SlideOpenError(f"{self.path}: cannot parse TIFF structure: {exc}") from exc
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[int, int, int], np.ndarray | None] = OrderedDict()
        self._cache_bytes = 0
        self._cache_limit = cache_bytes

    # -- structure -----------------------------------------------------------
    def _init_levels(self) -> None:
        if not self._tif.series or not self._tif.pages:
            raise SlideOpenError(f"{self.path}: TIFF holds no image (truncated or empty directory)")
        # The main image: the series with the largest first page (skips thumbnails, labels, macros).
        series = max(self._tif.series, key=_series_area)
        self._series = series
        levels: list[_Level] = []
        for level_series in series.levels:
            key = level_series.keyframe
            if key is None:
                continue
            if key.photometric not in _SUPPORTED_PHOTOMETRIC:
                raise SlideOpenError(
                    f"{self.path}: unsupported TIFF photometric interpretation "
                    f"{_photometric_name(key.photometric)}"
                )
            pages = [p for p in level_series.pages if p is not None]
            extra_axes = level_series.axes[: len(level_series.axes) - len(key.axes)]
            # Channels stored as separate pages (OME "CYX"): stack up to 4 of them; otherwise plane 0.
            if extra_axes == "C" and key.samplesperpixel == 1 and 1 < len(pages) <= 4:
                planes = pages
            else:
                planes = pages[:1]
            levels.append(_Level(planes, key))
        if not levels:
            raise SlideOpenError(f"{self.path}: TIFF holds no readable image level")
        # Keep levels in decreasing size order only (drop anything not smaller than its predecessor).
        kept = [levels[0]]
        for level in levels[1:]:
            if level.width < kept[-1].width and level.height < kept[-1].height:
                kept.append(level)
        self._levels = kept
        self._downsamples_xy = [(kept[0].width / lv.width, kept[0].height / lv.height) for lv in kept]

    @property
    def is_ome(self) -> bool:
        return bool(self._tif.is_ome)

    @property
    def format_name(self) -> str:
        return "tifffile:ome-tiff" if self.is_ome else "tifffile:tiff"

    @property
    def dimensions(self) -> tuple[int, int]:
        return (self._levels[0].width, self._levels[0].height)

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        return [(lv.width, lv.height) for lv in self._levels]

    @property
    def level_downsamples(self) -> list[float]:
        return [(dx + dy) / 2.0 for dx, dy in self._downsamples_xy]

    @property
    def metadata_mpp(self) -> float | None:
        for source in (self._ome_mpp, self._tiff_resolution_mpp, self._aperio_mpp):
            try:
                value = source()
            except Exception:  # malformed metadata is treated as absent
                value = None
            if value is not None and math.isfinite(value) and value > 0:
                return value
        return None

    def _ome_mpp(self) -> float | None:
        if not self._tif.is_ome or not self._tif.ome_metadata:
            return None
        root = ET.fromstring(self._tif.ome_metadata)
        for element in root.iter():
            if element.tag.rsplit("}", 1)[-1] == "Pixels" and "PhysicalSizeX" in element.attrib:
                unit = element.attrib.get("PhysicalSizeXUnit", "µm")
                return float(element.attrib["PhysicalSizeX"]) * _UNIT_UM[unit]
        return None

    def _tiff_resolution_mpp(self) -> float | None:
        page = self._levels[0].key
        tag = page.tags.get("XResolution")
        unit_tag = page.tags.get("ResolutionUnit")
        if tag is None:
            return None
        unit = int(unit_tag.value) if unit_tag is not None else 2  # TIFF default unit is inch
        if unit not in _TIFF_RESUNIT_UM:
            return None
        num, den = tag.value if isinstance(tag.value, tuple) else (tag.value, 1)
        pixels_per_unit = float(num) / float(den) if den else 0.0
        return _TIFF_RESUNIT_UM[unit] / pixels_per_unit if pixels_per_unit > 0 else None

    def _aperio_mpp(self) -> float | None:
        match = re.search(r"\bMPP\s*=\s*([0-9.eE+-]+)", self._levels[0].key.description or "")
        return float(match.group(1)) if match else None

    def level_page(self, level: int) -> tifffile.TiffPage | tifffile.TiffFrame | None:
        """The one TIFF page that holds ``level`` (None when its channels are separate pages)."""
        pages = self._levels[level].pages
        return pages[0] if len(pages) == 1 else None

    # -- pixels --------------------------------------------------------------
    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        width, height = int(size[0]), int(size[1])
        if width <= 0 or height <= 0:
            return np.full((max(height, 0), max(width, 0), 3), 255, np.uint8)
        if not 0 <= level < len(self._levels):
            raise ValueError(f"level {level} out of range 0..{len(self._levels) - 1}")
        lv = self._levels[level]
        # Like OpenSlide: level coordinate = level-0 location / (mean) level downsample. OpenSlide
        # blends neighbours for fractional results; we take the nearest level pixel.
        ds = self.level_downsamples[level]
        lx0 = int(math.floor(location[0] / ds + 0.5))
        ly0 = int(math.floor(location[1] / ds + 0.5))
        out = np.full((height, width, lv.channels), _white_value(lv.key), dtype=lv.key.dtype)
        # Intersection of the request with the level.
        ix0, iy0 = max(lx0, 0), max(ly0, 0)
        ix1, iy1 = min(lx0 + width, lv.width), min(ly0 + height, lv.height)
        if ix0 < ix1 and iy0 < iy1:
            for ty in range(iy0 // lv.seg_h, (iy1 - 1) // lv.seg_h + 1):
                for tx in range(ix0 // lv.seg_w, (ix1 - 1) // lv.seg_w + 1):
                    self._paste_segment(level, lv, tx, ty, out, lx0, ly0, (ix0, iy0, ix1, iy1))
        rgb = self._finish(lv, out)
        inside = np.zeros((height, width), dtype=bool)
        inside[max(iy0 - ly0, 0) : max(iy1 - ly0, 0), max(ix0 - lx0, 0) : max(ix1 - lx0, 0)] = True
        rgb[~inside] = 255
        return rgb

    def _paste_segment(self, level, lv: _Level, tx, ty, out, lx0, ly0, bounds) -> None:
        ix0, iy0, ix1, iy1 = bounds
        sx0, sy0 = tx * lv.seg_w, ty * lv.seg_h
        x0, y0 = max(ix0, sx0), max(iy0, sy0)
        x1, y1 = min(ix1, sx0 + lv.seg_w), min(iy1, sy0 + lv.seg_h)
        channel = 0
        for plane_index in range(len(lv.pages)):
            samples = range(lv.spp) if lv.planar_separate else range(1)
            for sample in samples:
                seg = self._segment(level, lv, plane_index, sample * lv.ny * lv.nx + ty * lv.nx + tx)
                n = 1 if lv.planar_separate else lv.spp
                if seg is not None:
                    block = seg[y0 - sy0 : y1 - sy0, x0 - sx0 : x1 - sx0]
                    bh, bw = block.shape[:2]
                    out[y0 - ly0 : y0 - ly0 + bh, x0 - lx0 : x0 - lx0 + bw, channel : channel + n] = block
                channel += n

    def _segment(self, level: int, lv: _Level, plane: int, index: int) -> np.ndarray | None:
        key = (level, plane, index)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            page = lv.pages[plane]
            offset, count = int(page.dataoffsets[index]), int(page.databytecounts[index])
            data = None
            if count > 0 and offset > 0:
                fh = self._tif.filehandle
                fh.seek(offset)
                data = fh.read(count)
                if len(data) < count:
                    raise SlideReadError(
                        f"{self.path}: tile {index} of level {level} is cut short (file truncated)"
                    )
        if data is None:
            segment = None  # sparse tile: leave white
        else:
            try:
                decoded, _, _ = lv.key.decode(
                    data, index, jpegtables=lv.key.jpegtables, jpegheader=lv.key.jpegheader
                )
            except Exception as exc:
                raise SlideReadError(
                    f"{self.path}: cannot decode tile {index} of level {level}: {exc}"
                ) from exc
            if decoded is None:
                raise SlideReadError(f"{self.path}: cannot decode tile {index} of level {level}")
            segment = decoded.reshape(decoded.shape[-3:])  # (depth=1, h, w, s) -> (h, w, s)
        with self._lock:
            self._cache[key] = segment
            self._cache_bytes += 0 if segment is None else segment.nbytes
            while self._cache_bytes > self._cache_limit and len(self._cache) > 1:
                _, old = self._cache.popitem(last=False)
                self._cache_bytes -= 0 if old is None else old.nbytes
        return segment

    def _finish(self, lv: _Level, out: np.ndarray) -> np.ndarray:
        key = lv.key
        if key.photometric == 3 and key.colormap is not None:  # PALETTE
            cmap = to_uint8(np.asarray(key.colormap).T)
            return cmap[out[..., 0].astype(np.intp)]
        pixels = to_uint8(out)
        if key.photometric == 0:  # MINISWHITE
            pixels = 255 - pixels
        premultiplied = 1 in tuple(int(v) for v in (key.extrasamples or ()))
        return to_rgb(pixels, premultiplied_alpha=premultiplied)

    def close(self) -> None:
        self._tif.close()


def _series_area(series: tifffile.TiffPageSeries) -> int:
    key = series.keyframe
    return 0 if key is None else int(key.imagewidth) * int(key.imagelength)


def _white_value(page: tifffile.TiffPage) -> float | int:
    """Native sample value that renders as white (used for sparse, never-written tiles)."""
    if page.photometric == 0:  # MINISWHITE
        return 0
    dtype = np.dtype(page.dtype)
    return np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else 1.0


def _photometric_name(value: int) -> str:
    """The TIFF photometric tag's name (tifffile's enum member), else its number."""
    try:
        return tifffile.PHOTOMETRIC(value).name
    except ValueError:
        return str(value)
