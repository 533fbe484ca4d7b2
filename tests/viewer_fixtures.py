"""A small coloured slide with a known heatmap and lesions, for the review-view tests.

Level 0 is 3000 x 2000 px at 0.5 um/px: glass, a pink tissue rectangle, a purple "tumour" block
(lesion 1, heatmap 0.95) and a green block. Heatmap cells are 200 px from (100, 100); tissue
cells outside the tumour hold 0.05 (below the layer's threshold, so transparent).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsi_pipeline.testing.slides import write_pyramidal_tiff
from wsi_pipeline.viewer import Lesion, ViewerData

SIZE = (3000, 2000)
MPP = 0.5
GLASS = (240, 240, 240)
TISSUE = (220, 150, 190)
TUMOUR = (80, 40, 140)
GREEN = (40, 160, 60)
TISSUE_BOX = (300, 300, 2700, 1700)  # x0, y0, x1, y1 (level-0 px)
TUMOUR_BOX = (1700, 500, 2300, 1100)
GREEN_BOX = (500, 1200, 900, 1600)
LESION2_OUTER = (500, 400, 900, 800)
LESION2_HOLE = (650, 550, 750, 650)
CELL_ORIGIN = (100.0, 100.0)
CELL = 200.0
TUMOUR_PROB = 0.95


def _box(rgb: np.ndarray, box: tuple[int, int, int, int], colour: tuple[int, int, int]) -> None:
    rgb[box[1] : box[3], box[0] : box[2]] = colour


def ring(box: tuple[int, int, int, int]) -> list[tuple[float, float]]:
    x0, y0, x1, y1 = box
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def write_review_slide(path: Path) -> Path:
    rgb = np.full((SIZE[1], SIZE[0], 3), GLASS, dtype=np.uint8)
    _box(rgb, TISSUE_BOX, TISSUE)
    _box(rgb, TUMOUR_BOX, TUMOUR)
    _box(rgb, GREEN_BOX, GREEN)
    return write_pyramidal_tiff(path, rgb, mpp=MPP, levels=3, compression="jpeg")


def review_heatmap() -> np.ndarray:
    heatmap = np.full((9, 14), np.nan, dtype=np.float32)
    heatmap[1:8, 1:13] = 0.05  # tissue: x 300..2700, y 300..1700
    heatmap[2:5, 8:11] = TUMOUR_PROB  # x 1700..2300, y 500..1100
    return heatmap


def review_data(name: str = "review.tif") -> ViewerData:
    lesions = (
        Lesion([ring(LESION2_OUTER), ring(LESION2_HOLE)], 0.283, 0.0375, 0.6, "micrometastasis", "small"),
        Lesion([ring(TUMOUR_BOX)], 0.424, 0.09, 0.93, "micrometastasis", "Tumor region 1"),
    )
    return ViewerData(
        slide_name=name,
        size=SIZE,
        mpp=MPP,
        heatmap=review_heatmap(),
        heatmap_origin=CELL_ORIGIN,
        heatmap_cell_px=CELL,
        lesions=lesions,
        call="micrometastasis (0.42 mm)",
        score=0.93,
        notes=(("model", "test </script> model"),),
    )


def centre(box: tuple[int, int, int, int]) -> tuple[float, float]:
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
