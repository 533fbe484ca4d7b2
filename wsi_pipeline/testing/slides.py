"""Small test slides written with tifffile (``from wsi_pipeline.testing import write_pyramidal_tiff``).

* :func:`write_pyramidal_tiff` - tiled pyramidal generic TIFF that OpenSlide opens ("generic-tiff"),
  um/px stored as TIFF resolution in pixels per centimetre (what OpenSlide reads as ``openslide.mpp-x``).
* :func:`write_ome_tiff` - OME-TIFF with the pyramid in SubIFDs (OpenSlide sees one level, tifffile all).
* :func:`build_patch_mosaic` - 96x96 patches in a grid on a white background, with the truth grid.
* :func:`gradient_image` - smooth RGB test image with known pixel values.
* :func:`write_empty_giant_tiff` - a tiled TIFF without a pyramid that claims any size but stores no
  tile data (a few hundred KB for 100,000 x 100,000 px; readers show white).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tifffile

from wsi_pipeline.pcam import PCAM_PATCH as PATCH


def pyramid_levels(rgb: np.ndarray, levels: int) -> list[np.ndarray]:
    """Level 0 plus ``levels - 1`` successive 2x area-averaged reductions (odd edges dropped)."""
    out = [np.ascontiguousarray(rgb)]
    for _ in range(levels - 1):
        prev = out[-1]
        h, w = prev.shape[0] // 2, prev.shape[1] // 2
        if h < 1 or w < 1:
            break
        block = prev[: 2 * h, : 2 * w].astype(np.float32).reshape(h, 2, w, 2, -1).mean(axis=(1, 3))
        out.append(np.round(block).astype(np.uint8).reshape((h, w) + prev.shape[2:]))
    return out


def _options(mpp: float | None, tile: int, compression: str | None) -> dict:
    opts: dict = {"tile": (tile, tile), "metadata": None}
    if compression == "jpeg":
        opts["compression"] = "jpeg"
        opts["compressionargs"] = {"level": 95}
    elif compression is not None:
        opts["compression"] = compression
    if mpp is not None:
        opts["resolution"] = (1e4 / mpp, 1e4 / mpp)
        opts["resolutionunit"] = "CENTIMETER"
    return opts


def write_pyramidal_tiff(
    path: str | Path,
    rgb: np.ndarray,
    mpp: float | None,
    levels: int = 3,
    tile: int = 256,
    compression: str | None = "zlib",
) -> Path:
    """Write ``rgb`` (h, w, 3|4 or h, w uint8) as a tiled pyramidal TIFF; each level is a page."""
    path = Path(path)
    photometric = "minisblack" if rgb.ndim == 2 else "rgb"
    extrasamples = ("unassalpha",) if rgb.ndim == 3 and rgb.shape[2] == 4 else None
    with tifffile.TiffWriter(path, bigtiff=False) as tif:
        for index, level in enumerate(pyramid_levels(rgb, levels)):
            level_mpp = None if mpp is None else mpp * rgb.shape[1] / level.shape[1]
            tif.write(
                level,
                photometric=photometric,
                extrasamples=extrasamples,
                subfiletype=1 if index else 0,
                **_options(level_mpp, tile, compression),
            )
    return path


def write_ome_tiff(
    path: str | Path,
    rgb: np.ndarray,
    mpp: float | None,
    levels: int = 3,
    tile: int = 256,
    compression: str | None = "zlib",
) -> Path:
    """Write ``rgb`` as an OME-TIFF whose reduced levels live in SubIFDs of the first page."""
    path = Path(path)
    pyramid = pyramid_levels(rgb, levels)
    metadata: dict = {"axes": "YXS" if rgb.ndim == 3 else "YX"}
    if mpp is not None:
        metadata.update(PhysicalSizeX=mpp, PhysicalSizeXUnit="µm", PhysicalSizeY=mpp, PhysicalSizeYUnit="µm")
    photometric = "rgb" if rgb.ndim == 3 else "minisblack"
    with tifffile.TiffWriter(path, ome=True) as tif:
        opts = _options(mpp, tile, compression)
        opts["metadata"] = metadata
        tif.write(pyramid[0], photometric=photometric, subifds=len(pyramid) - 1, **opts)
        for level in pyramid[1:]:
            level_mpp = None if mpp is None else mpp * rgb.shape[1] / level.shape[1]
            tif.write(level, photometric=photometric, subfiletype=1, **_options(level_mpp, tile, compression))
    return path


def gradient_image(height: int, width: int) -> np.ndarray:
    """RGB uint8 image: R ramps along x, G along y, B = a slow checker of both (known everywhere)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    red = 255.0 * xx / max(width - 1, 1)
    green = 255.0 * yy / max(height - 1, 1)
    blue = 127.5 + 127.5 * np.sin(xx / 37.0) * np.cos(yy / 53.0)
    return np.round(np.stack([red, green, blue], axis=-1)).astype(np.uint8)


def build_patch_mosaic(
    patches: np.ndarray | Sequence[np.ndarray],
    labels: Sequence[int] | np.ndarray,
    layout: np.ndarray,
    background: str | int = "white",
) -> tuple[np.ndarray, np.ndarray]:
    """Place 96x96 patches on a grid.

    ``layout`` is an int array (rows, cols): a patch index, or -1 for background. Returns
    ``(image, truth)``: image is (rows*96, cols*96, 3) uint8; truth is int8 (rows, cols) holding
    the placed patch's label (0/1) and -1 for background cells. Cell (r, c) covers pixels
    ``[r*96:(r+1)*96, c*96:(c+1)*96]``.
    """
    layout = np.asarray(layout)
    if layout.ndim != 2:
        raise ValueError("layout must be a 2-D array of patch indices (-1 = background)")
    fill = 255 if background == "white" else int(background)
    rows, cols = layout.shape
    image = np.full((rows * PATCH, cols * PATCH, 3), fill, dtype=np.uint8)
    truth = np.full((rows, cols), -1, dtype=np.int8)
    labels = np.asarray(labels)
    for r in range(rows):
        for c in range(cols):
            index = int(layout[r, c])
            if index < 0:
                continue
            patch = np.asarray(patches[index])
            if patch.shape[:2] != (PATCH, PATCH):
                raise ValueError(f"patch {index} has shape {patch.shape}, expected (96, 96, 3)")
            image[r * PATCH : (r + 1) * PATCH, c * PATCH : (c + 1) * PATCH] = patch[..., :3]
            truth[r, c] = int(labels[index])
    return image, truth


def write_empty_giant_tiff(
    path: str | Path, width: int, height: int, mpp: float | None = 0.25, tile: int = 512
) -> Path:
    """A single-level tiled RGB TIFF of ``width x height`` px whose tiles are all empty (byte count 0):
    a real file of the size a huge slide without a pyramid claims, written in well under a second."""
    path = Path(path)
    n_tiles = -(-width // tile) * -(-height // tile)
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(
            (b"" for _ in range(n_tiles)),
            shape=(height, width, 3),
            dtype=np.uint8,
            photometric="rgb",
            **_options(mpp, tile, "zlib"),
        )
    return path
