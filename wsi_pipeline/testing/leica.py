"""A small Leica SCN slide (BigTIFF + Leica XML) that OpenSlide opens with ``openslide.bounds-*``.

OpenSlide places the scanned image at its offset inside the larger "collection" (the glass slide);
everything outside is transparent, and ``openslide.bounds-x/-y/-width/-height`` give where the
image lies, in level-0 px. QuPath shows such slides cropped to the bounds, as it does MIRAX (MRXS)
slides, so this is the smallest real slide to test the bounds offset with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from wsi_pipeline.testing.slides import pyramid_levels

LEICA_XMLNS = "http://www.leica-microsystems.com/scn/2010/10/01"


def _scn_xml(
    size: tuple[int, int], levels: list[tuple[int, int]], offset: tuple[int, int], margin: int, nm: int
) -> str:
    (w, h), (ox, oy) = size, offset
    dims = "".join(
        f'<dimension sizeX="{lw}" sizeY="{lh}" r="{i}" ifd="{i}"/>' for i, (lw, lh) in enumerate(levels)
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<scn xmlns="{LEICA_XMLNS}">'
        f'<collection name="synthetic" sizeX="{(w + ox + margin) * nm}" sizeY="{(h + oy + margin) * nm}">'
        "<barcode>WSI-PIPELINE-TEST</barcode>"
        '<image name="main"><creationDate>2024-01-01T00:00:00Z</creationDate>'
        '<device model="wsi_pipeline.testing" version="1"/>'
        f'<pixels sizeX="{w}" sizeY="{h}">{dims}</pixels>'
        f'<view sizeX="{w * nm}" sizeY="{h * nm}" offsetX="{ox * nm}" offsetY="{oy * nm}" spacingZ="0"/>'
        "<scanSettings><objectiveSettings><objective>20</objective></objectiveSettings>"
        "<illuminationSettings><numericalAperture>0.7</numericalAperture>"
        "<illuminationSource>brightfield</illuminationSource></illuminationSettings></scanSettings>"
        "</image></collection></scn>"
    )


def write_leica_scn(
    path: str | Path,
    rgb: np.ndarray,
    mpp: float,
    offset: tuple[int, int] = (300, 200),
    margin: int = 64,
    levels: int = 2,
    tile: int = 256,
) -> Path:
    """Write ``rgb`` (h, w, 3 uint8) as a Leica SCN whose image lies at ``offset`` (level-0 px) in a
    collection ``margin`` px larger on the right and bottom; OpenSlide then reports
    ``openslide.bounds-x/-y = offset`` and level 0 of ``(w + offset_x + margin, h + offset_y + margin)``.
    ``mpp`` must be a whole number of nanometres per pixel (the XML counts nanometres)."""
    nm = round(mpp * 1000)
    if nm <= 0 or abs(nm - mpp * 1000) > 1e-6:
        raise ValueError(f"mpp must be a positive whole number of nanometres per pixel, got {mpp}")
    pyramid = pyramid_levels(np.ascontiguousarray(rgb[..., :3]), levels)
    sizes = [(level.shape[1], level.shape[0]) for level in pyramid]
    description = _scn_xml(sizes[0], sizes, offset, margin, nm)
    path = Path(path)
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for index, level in enumerate(pyramid):
            ppcm = 1e4 / mpp * level.shape[1] / sizes[0][0]
            tif.write(
                level,
                tile=(tile, tile),
                photometric="rgb",
                compression="jpeg",
                compressionargs={"level": 95},
                description=description if index == 0 else None,
                resolution=(ppcm, ppcm),
                resolutionunit="CENTIMETER",
                metadata=None,
            )
    return path
