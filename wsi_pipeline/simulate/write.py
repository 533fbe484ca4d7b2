"""Write a planned slide as a tiled, JPEG-compressed pyramidal TIFF plus its truth JSON.

The TIFF is a generic tiled pyramid (what OpenSlide calls "generic-tiff"; tifffile reads it too):
one page per level, level L at downsample 2**L, levels down to about 1,000 px. Each page carries its
um/px as TIFF resolution in pixels per centimetre, which OpenSlide reports as ``openslide.mpp-x/y``.
Pixels are produced one strip of tiles at a time (:func:`~wsi_pipeline.simulate.render.strips`), so
memory is one strip plus the slide's distinct patches, whatever the slide's size.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile

from wsi_pipeline.errors import OutputError
from wsi_pipeline.simulate.render import SlideRenderer, level_cell_px, strips
from wsi_pipeline.simulate.truth import SlidePlan, SlideTruth, truth_path

TILE = 256
MIN_LEVEL_PX = 1000


def pyramid_levels(renderer: SlideRenderer) -> list[int]:
    """Level 0, then halvings while the level stays >= ``MIN_LEVEL_PX`` px and cells stay whole."""
    levels = [0]
    while True:
        nxt = levels[-1] + 1
        if level_cell_px(renderer.patch_px, renderer.upsample, nxt) is None:
            return levels
        if max(renderer.level_shape(nxt)) < MIN_LEVEL_PX:
            return levels
        levels.append(nxt)


def _tiles(renderer: SlideRenderer, level: int, tile: int) -> Iterator[np.ndarray]:
    _, width = renderer.level_shape(level)
    fill = np.asarray(renderer.plan.glass.rgb, dtype=np.uint8)
    for _, strip in strips(renderer, level, tile):
        for x0 in range(0, width, tile):
            part = strip[:, x0 : x0 + tile]
            if part.shape[:2] == (tile, tile):
                yield np.ascontiguousarray(part)
                continue
            out = np.empty((tile, tile, 3), dtype=np.uint8)
            out[:] = fill  # padding beyond the image edge (not part of the slide)
            out[: part.shape[0], : part.shape[1]] = part
            yield out


def write_tiff(path: Path, renderer: SlideRenderer, quality: int = 90, tile: int = TILE) -> Path:
    """Write the renderer's slide to ``path`` (through a temporary file, replaced when complete)."""
    mpp0 = renderer.plan.spec.patch_mpp / renderer.upsample
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tifffile.TiffWriter(tmp, bigtiff=True) as tif:
            for level in pyramid_levels(renderer):
                mpp = mpp0 * 2**level
                tif.write(
                    _tiles(renderer, level, tile),
                    shape=(*renderer.level_shape(level), 3),
                    dtype=np.uint8,
                    tile=(tile, tile),
                    photometric="rgb",
                    compression="jpeg",
                    compressionargs={"level": quality},
                    resolution=(1e4 / mpp, 1e4 / mpp),
                    resolutionunit="CENTIMETER",
                    subfiletype=1 if level else 0,
                    software="wsi_pipeline.simulate",
                    metadata=None,
                )
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write slide: {exc.strerror or exc}") from exc
    return path


def write_slide(
    plan: SlidePlan, dataset, path: Path | str, upsample: int = 1, quality: int = 90, tile: int = TILE
) -> Path:
    """Render ``plan`` with the patches of ``dataset`` (a :class:`~wsi_pipeline.data.PatchDataset`)
    to a pyramidal TIFF at ``path`` and its :class:`SlideTruth` to :func:`truth_path` beside it.

    ``upsample`` (integer) enlarges every patch by pixel repetition: level 0 is then at
    ``patch_mpp / upsample`` um/px (4 mimics a 0.243 um/px scan of 0.972 um/px patches).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{path.parent}: cannot create output folder: {exc.strerror or exc}") from exc
    used = plan.used_indices
    patches = dataset.read(used)
    renderer = SlideRenderer(plan, used, patches, upsample)
    write_tiff(path, renderer, quality=quality, tile=tile)
    ids = dataset.ids
    truth = SlideTruth(
        plan=plan,
        slide=path.name,
        upsample=int(upsample),
        patch_ids={int(i): ids[int(i)] for i in used},
        dataset=dataset.describe(),
    )
    try:
        truth.save(truth_path(path))
    except OSError as exc:
        raise OutputError(f"{truth_path(path)}: cannot write truth: {exc.strerror or exc}") from exc
    return path
