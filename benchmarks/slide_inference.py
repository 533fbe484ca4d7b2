"""Tile inference engine: block reads vs one read per tile, and peak memory vs slide size.

    .venv/bin/python benchmarks/slide_inference.py                 # real slide + synthetic sizes
    .venv/bin/python benchmarks/slide_inference.py --sizes 64 128 256 --threads 2

Part 1 runs the engine on a real slide (``cmu1_small_pyramid_generic.tif`` from ../shared/data)
with the deterministic probe model at the PCam geometry (96 px at 0.972 um/px, stride 48): 16 x 16-tile
blocks through ``fast_block_reader`` (what run_slide uses), the same blocks through OpenSlide, and one
OpenSlide read per tile; it prints tiles/s side by side.

Part 2 feeds the engine synthetic grids of N x N tiles (a generator stands in for the slide) and
prints the Python-heap peak (tracemalloc, which sees numpy buffers) for each N: it must stay flat
as the slide grows, because readers are throttled by a bounded queue.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

from wsi_pipeline.inference import TileInference
from wsi_pipeline.pcam import PCAM_MPP
from wsi_pipeline.slide import describe_slide, open_slide
from wsi_pipeline.slide.fast_blocks import fast_block_reader
from wsi_pipeline.stages import grid_block_reader
from wsi_pipeline.testing import load_probe_model
from wsi_pipeline.tiling import plan_grid

REPO = Path(__file__).resolve().parents[1]
SLIDE = REPO.parent / "shared" / "data" / "slides" / "cmu1_small_pyramid_generic.tif"


def real_slide(model, block_tiles: int, readers: int, fast: bool) -> tuple[float, int]:
    with open_slide(SLIDE) as reader:
        grid = plan_grid(describe_slide(reader), model.config.patch_size, model.config.mpp, stride=48)
        cells = np.argwhere(np.ones(grid.shape, dtype=bool))
        engine = TileInference(model, batch_size=256, num_readers=readers, block_tiles=block_tiles)
        source = fast_block_reader(reader) if fast else reader
        t0 = time.perf_counter()
        engine.run(cells, grid_block_reader(source, grid), grid.patch_size, grid.stride_px)
        seconds = time.perf_counter() - t0
        if source is not reader:
            source.close()
        return seconds, len(cells)


def synthetic_peak(model, n: int, readers: int) -> tuple[float, float]:
    tile, stride = 96, 96
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, size=(2048, 2048, 3), dtype=np.uint8)

    def read_block(row0: int, col0: int, n_rows: int, n_cols: int) -> np.ndarray:
        h, w = (n_rows - 1) * stride + tile, (n_cols - 1) * stride + tile
        return np.ascontiguousarray(texture[:h, :w])  # a fresh block, like a real decode

    cells = np.argwhere(np.ones((n, n), dtype=bool))
    engine = TileInference(model, batch_size=256, num_readers=readers)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    engine.run(cells, read_block, tile, stride)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return seconds, peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--readers", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model = load_probe_model(Path(tmp) / "probe", patch_size=96, mpp=PCAM_MPP)
    if SLIDE.is_file():
        print(f"real slide {SLIDE.name}, stride 48, probe model, {args.readers} readers")
        print(f"{'reads':>34} {'tiles':>7} {'seconds':>8} {'tiles/s':>8}")
        rows = (
            ("16x16-tile blocks, fast_block_reader", 16, True),
            ("16x16-tile blocks, OpenSlide", 16, False),
            ("one read per tile, OpenSlide", 1, False),
        )
        for label, k, fast in rows:
            real_slide(model, k, args.readers, fast)  # warm the OS cache
            seconds, n = real_slide(model, k, args.readers, fast)
            print(f"{label:>34} {n:>7} {seconds:>8.2f} {n / seconds:>8.0f}")
    else:
        print(f"(skipping real-slide part: {SLIDE} not found)")
    print("\nsynthetic N x N grid of 96 px tiles: peak traced memory must not grow with N")
    print(f"{'N':>6} {'tiles':>8} {'seconds':>8} {'tiles/s':>8} {'peak MiB':>9}")
    for n in args.sizes:
        seconds, peak = synthetic_peak(model, n, args.readers)
        print(f"{n:>6} {n * n:>8} {seconds:>8.2f} {n * n / seconds:>8.0f} {peak:>9.1f}")


if __name__ == "__main__":
    main()
