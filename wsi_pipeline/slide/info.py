"""Stage 1 of the slide path: what the opened slide is (:class:`SlideInfo`), and its um/px.

``mpp`` values are checked here and only here (:func:`check_mpp`): the ``--mpp`` option, the slide's
metadata and the tile grid all go through it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path

from wsi_pipeline.errors import OptionError, UnknownMppError
from wsi_pipeline.slide.base import SlideReader

MPP_SOURCES = ("metadata", "option")


def check_mpp(value: object, name: str = "--mpp") -> float:
    """``value`` as a float when it is a positive finite number, else :class:`OptionError` naming ``name``."""
    if isinstance(value, Real) and not isinstance(value, bool):
        number = float(value)
        if 0 < number < math.inf:
            return number
    raise OptionError(f"{name} must be a positive number, got {value!r}")


def resolve_mpp(reader: SlideReader, override: float | None = None) -> float:
    """Level-0 microns per pixel: ``override`` if given, else the slide metadata, else an error."""
    if override is not None:
        try:
            return check_mpp(override)
        except OptionError as exc:
            raise OptionError(f"{reader.path}: {exc}") from None
    mpp = reader.metadata_mpp
    if mpp is None:
        raise UnknownMppError(
            f"{reader.path}: microns-per-pixel is not in the slide metadata; give it with --mpp"
        )
    return float(mpp)


@dataclass(frozen=True)
class SlideInfo:
    """An opened slide: where it is, its format, pyramid and level-0 um/px (and where that came from).

    ``path`` is made absolute (what the summary records); ``name`` is the file name as the caller gave it
    (a symlink keeps its own name) and error messages name the slide as given (:attr:`shown_path`).
    """

    path: Path
    format: str
    dimensions: tuple[int, int]  # (width, height) of level 0
    level_downsamples: tuple[float, ...]
    mpp: float
    mpp_source: str  # "metadata" | "option"
    name: str = ""  # default: the given path's file name
    given_path: Path | None = field(default=None, compare=False, repr=False)
    #: ``(x, y, width, height)`` level-0 px of the region OpenSlide declares non-empty
    #: (``openslide.bounds-*``); QuPath shows such slides cropped to it (see :attr:`bounds_offset`).
    bounds: tuple[int, int, int, int] | None = None

    def __post_init__(self) -> None:
        given_path = Path(self.given_path or self.path)
        object.__setattr__(self, "given_path", given_path)
        object.__setattr__(self, "name", self.name or given_path.name)
        object.__setattr__(self, "path", Path(self.path).resolve())
        width, height = self.dimensions
        if not (int(width) == width > 0 and int(height) == height > 0):
            raise ValueError(
                f"{self.path}: slide dimensions must be positive integers, got {self.dimensions}"
            )
        object.__setattr__(self, "dimensions", (int(width), int(height)))
        downsamples = tuple(float(d) for d in self.level_downsamples)
        if not downsamples or not all(0 < d < math.inf for d in downsamples):
            raise ValueError(f"{self.path}: level downsamples must be positive, got {self.level_downsamples}")
        object.__setattr__(self, "level_downsamples", downsamples)
        object.__setattr__(self, "mpp", check_mpp(self.mpp, "slide mpp"))
        if self.bounds is not None:
            bounds = tuple(int(v) for v in self.bounds)
            if len(bounds) != 4 or min(bounds) < 0 or min(bounds[2:]) <= 0:
                raise ValueError(f"{self.path}: bounds must be (x, y, width, height) >= 0, got {self.bounds}")
            object.__setattr__(self, "bounds", bounds)
        if self.mpp_source not in MPP_SOURCES:
            raise ValueError(f"mpp_source must be one of {MPP_SOURCES}, got {self.mpp_source!r}")

    @property
    def level_count(self) -> int:
        return len(self.level_downsamples)

    @property
    def bounds_offset(self) -> tuple[int, int]:
        """Level-0 ``(x, y)`` subtracted from every coordinate we write (GeoJSON, CSV, Zarr
        translation): the bounds' origin, where QuPath's (0, 0) lies; ``(0, 0)`` without bounds."""
        return (0, 0) if self.bounds is None else (self.bounds[0], self.bounds[1])

    @property
    def resolved_path(self) -> str:
        return str(self.path)

    @property
    def shown_path(self) -> Path:
        """The slide's path as the caller gave it (what error messages name)."""
        return self.given_path if self.given_path is not None else self.path


def describe_slide(reader: SlideReader, mpp_override: float | None = None) -> SlideInfo:
    """The :class:`SlideInfo` of an open slide; ``mpp_override`` (``--mpp``) wins over the metadata."""
    return SlideInfo(
        path=reader.path,
        format=reader.format_name,
        dimensions=reader.dimensions,
        level_downsamples=tuple(reader.level_downsamples),
        mpp=resolve_mpp(reader, mpp_override),
        mpp_source="option" if mpp_override is not None else "metadata",
        bounds=reader.bounds,
    )
