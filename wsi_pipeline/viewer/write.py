"""``write_viewer``: ``viewer.html`` plus a Deep Zoom pyramid of the slide beside it."""

from __future__ import annotations

from pathlib import Path

from wsi_pipeline.errors import OutputError
from wsi_pipeline.slide import SlideReader
from wsi_pipeline.viewer.data import ViewerData
from wsi_pipeline.viewer.layers import DEFAULT_MIN_PROB
from wsi_pipeline.viewer.page import TileSource, render_page
from wsi_pipeline.viewer.pyramid import (
    DEFAULT_OVERLAP,
    DEFAULT_QUALITY,
    DEFAULT_TILE_SIZE,
    dzi_xml,
    write_pyramid,
)

VIEWER_NAME = "viewer.html"
TILES_NAME = "viewer_files"
DZI_NAME = "viewer.dzi"
#: The model's resolution: the pyramid shows what the model saw.
DEFAULT_PYRAMID_MPP = 0.972
#: A slide level within this fraction of the wanted resolution is used as it is (read, never
#: resampled: 4-5x faster), e.g. the 1.0 um/px level of a 0.25 um/px scan for 0.972 um/px.
SNAP_TO_LEVEL = 0.05


def pyramid_scale(reader: SlideReader, wanted: float) -> float:
    """Level-0 px per pyramid px: ``wanted``, or a slide level's downsample close to it; >= 1."""
    for downsample in reader.level_downsamples:
        if abs(downsample / wanted - 1.0) <= SNAP_TO_LEVEL:
            return max(1.0, float(downsample))
    return max(1.0, wanted)


def write_viewer(
    folder: str | Path,
    data: ViewerData,
    slide_reader: SlideReader | None,
    pyramid_mpp: float = DEFAULT_PYRAMID_MPP,
    *,
    min_prob: float = DEFAULT_MIN_PROB,
    tile_size: int = DEFAULT_TILE_SIZE,
    overlap: int = DEFAULT_OVERLAP,
    quality: int = DEFAULT_QUALITY,
) -> list[Path]:
    """Write ``folder/viewer.html`` (open it from the file system; no server, no network) and,
    with a slide, ``viewer_files/`` (JPEG Deep Zoom tiles at ``pyramid_mpp`` um/px, or the slide's
    own resolution when that is coarser; a slide level within 5 % of it is used as it is) and
    ``viewer.dzi``. Returns the paths written.

    Without a slide (``slide_reader=None``) the page shows the layers on plain glass.
    ``min_prob``: heatmap cells below it are transparent.
    """
    folder = Path(folder)
    if not (pyramid_mpp > 0 and pyramid_mpp < float("inf")):
        raise ValueError(f"pyramid_mpp must be a positive number, got {pyramid_mpp!r}")
    if slide_reader is not None and tuple(slide_reader.dimensions) != data.size:
        raise ValueError(f"slide is {slide_reader.dimensions} px but the viewer data say {data.size}")
    written: list[Path] = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if slide_reader is None:
            tiles = TileSource.glass_only(data.size)
        else:
            pyramid = write_pyramid(
                slide_reader,
                folder / TILES_NAME,
                pyramid_scale(slide_reader, pyramid_mpp / data.mpp),
                tile_size=tile_size,
                overlap=overlap,
                quality=quality,
            )
            tiles = TileSource.from_pyramid(pyramid, f"{TILES_NAME}/")
            (folder / DZI_NAME).write_text(dzi_xml(pyramid), encoding="utf-8")
            written += [folder / TILES_NAME, folder / DZI_NAME]
        page = folder / VIEWER_NAME
        page.write_text(render_page(data, tiles, "file", min_prob), encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"{folder}: cannot write the viewer: {exc.strerror or exc}") from exc
    return [page, *written]
