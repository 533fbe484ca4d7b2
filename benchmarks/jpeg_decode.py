"""Block reads of a JPEG-tiled slide on the CPU: OpenSlide vs tifffile vs batched JPEG decoding.

    .venv/bin/python benchmarks/jpeg_decode.py                  # 8,064 px mosaic, 2,048 px blocks
    .venv/bin/python benchmarks/jpeg_decode.py --side 16128 --block 1536 --repeats 5

Builds (once, cached) a generic pyramidal-style TIFF of ``side`` x ``side`` px made of real patches
from ``../shared/data/hcd_patches``, in 256 px JPEG tiles (quality 90, YCbCr 4:2:0, as most scanners
write), then reads it in ``block`` px blocks that do not line up with the tiles (as the inference
engine's reads do) with each reader, side by side in one run, several rounds interleaved so machine
noise hits them alike (best round reported):

* OpenSlide ``read_region`` (``OpenSlideReader``),
* today's tifffile path (``TiffFileReader``, what ``fast_block_reader`` used before batched decoding),
* ``JpegBlockReader`` with libjpeg-turbo on 1 and 2 threads (what ``fast_block_reader`` uses now),
* and, as the ceiling, libjpeg-turbo decoding the same tiles with nothing else (1 thread).

Prints Mpx/s of block pixels per wall second and per CPU second (what reading takes from the model on
a small machine), the ratios to OpenSlide and to the tifffile path, each reader's largest pixel
difference from OpenSlide, and the CPU. ``--device cuda`` adds nvJPEG (nvImageCodec) when it
is installed and sees a GPU; ``--slide`` reads another JPEG-tiled TIFF (level 0) instead.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import imagecodecs
import numpy as np
import tifffile
from PIL import Image

from wsi_pipeline.precision import cpu_name
from wsi_pipeline.slide import OpenSlideReader, TiffFileReader
from wsi_pipeline.slide.jpeg_blocks import JpegBlockReader, jpeg_block_reader
from wsi_pipeline.slide.jpeg_gpu import tile_decoder
from wsi_pipeline.slide.jpeg_tiles import CpuJpegDecoder, JpegLevel, TileDecoder, jpeg_level, read_tiles

REPO = Path(__file__).resolve().parents[1]
PATCHES = REPO.parent / "shared" / "data" / "hcd_patches"
TILE = 256
PATCH = 96


def build_slide(path: Path, side: int, patch_dir: Path, seed: int = 0) -> Path:
    """``side`` x ``side`` px of random real patches, JPEG tiles, written strip by strip."""
    if path.is_file():
        return path
    with open(patch_dir / "train_labels.csv", newline="") as fh:
        ids = [row["id"] for row in csv.DictReader(fh)]
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(ids))[:1500]
    patches = np.stack(
        [np.asarray(Image.open(patch_dir / "train" / f"{ids[i]}.jpg").convert("RGB")) for i in chosen]
    )
    grid = -(-side // PATCH)
    cells = rng.integers(0, len(patches), size=(grid, grid))

    def tiles() -> Iterator[np.ndarray]:
        for ty in range(0, side, TILE):
            r0, r1 = ty // PATCH, min(grid, (ty + TILE - 1) // PATCH + 1)
            strip = patches[cells[r0:r1]].transpose(0, 2, 1, 3, 4).reshape((r1 - r0) * PATCH, grid * PATCH, 3)
            strip = strip[ty - r0 * PATCH : ty - r0 * PATCH + TILE]
            for tx in range(0, side, TILE):
                tile = np.full((TILE, TILE, 3), 255, np.uint8)
                part = strip[:, tx : min(tx + TILE, side)]
                tile[: part.shape[0], : part.shape[1]] = part
                yield tile

    tmp = path.with_name(path.name + ".tmp")
    with tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        tif.write(
            tiles(),
            shape=(side, side, 3),
            dtype=np.uint8,
            tile=(TILE, TILE),
            photometric="rgb",
            compression="jpeg",
            compressionargs={"level": 90},
            resolution=(1e4 / 0.25, 1e4 / 0.25),
            resolutionunit="CENTIMETER",
            metadata=None,
        )
    tmp.replace(path)
    return path


def block_origins(side: int, block: int, offset: int = 100) -> list[tuple[int, int]]:
    starts = range(offset, side - block + 1, block)
    return [(x, y) for y in starts for x in starts]


def timed(
    read: Callable[[int, int], np.ndarray], origins: list[tuple[int, int]]
) -> tuple[float, float, list]:
    """Wall seconds, CPU seconds (all threads of the process) and the blocks."""
    t0, c0 = time.perf_counter(), time.process_time()
    blocks = [read(x, y) for x, y in origins]
    return time.perf_counter() - t0, time.process_time() - c0, blocks


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--side", type=int, default=8064, help="mosaic side in px")
    parser.add_argument("--block", type=int, default=2048, help="block side in px (read_region_at_mpp's max)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--patches", type=Path, default=PATCHES)
    parser.add_argument("--slide", type=Path, help="benchmark this JPEG-tiled TIFF instead of the mosaic")
    parser.add_argument("--device", default="cpu", help="also time the decoder for this device (e.g. cuda)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "wsi_pipeline_bench")
    args = parser.parse_args()
    t0 = time.perf_counter()
    if args.slide is not None:
        slide = args.slide
    else:
        if not (args.patches / "train_labels.csv").is_file():
            raise SystemExit(f"patch folder not found: {args.patches} (give --patches or --slide)")
        args.cache.mkdir(parents=True, exist_ok=True)
        slide = build_slide(args.cache / f"jpeg_mosaic_{args.side}.tif", args.side, args.patches)
    with TiffFileReader(slide) as tiff:
        width, height = tiff.dimensions
        level = jpeg_level(tiff.level_page(0))
    if level is None:
        raise SystemExit(f"{slide}: level 0 is not JPEG-tiled")
    print(
        f"slide: {slide} ({width} x {height} px, {level.tile_w} px JPEG tiles), "
        f"ready in {time.perf_counter() - t0:.1f} s"
    )
    origins = block_origins(min(width, height), args.block)
    mpx = len(origins) * args.block**2 / 1e6
    print(f"reads: {len(origins)} blocks of {args.block} px ({mpx:.0f} Mpx), best of {args.repeats} rounds")
    print(f"CPU: {cpu_name()}, {os.cpu_count()} logical cores; Python {platform.python_version()}")

    def openslide_run() -> tuple[float, float, list]:
        with OpenSlideReader(slide) as reader:
            return timed(lambda x, y: reader.read_region((x, y), 0, (args.block, args.block)), origins)

    def tifffile_run() -> tuple[float, float, list]:
        with TiffFileReader(slide) as reader:
            return timed(lambda x, y: reader.read_region((x, y), 0, (args.block, args.block)), origins)

    def batched_run(make_decoder: Callable[[], TileDecoder]):
        def run():
            with TiffFileReader(slide) as tiff:
                jpeg = jpeg_block_reader(tiff, {0}, make_decoder())
            assert isinstance(jpeg, JpegBlockReader)
            try:
                return timed(lambda x, y: jpeg.read_block(0, x, y, args.block, args.block), origins)
            finally:
                jpeg.close()

        return run

    runs = {
        "OpenSlide read_region": openslide_run,
        "tifffile path (TiffFileReader)": tifffile_run,
        "batched JPEG, 1 thread": batched_run(lambda: CpuJpegDecoder(1)),
        "batched JPEG, 2 threads": batched_run(lambda: CpuJpegDecoder(2)),
    }
    device_decoder = tile_decoder(args.device)
    if not isinstance(device_decoder, CpuJpegDecoder):
        runs[f"batched JPEG, {device_decoder.name}"] = batched_run(lambda: tile_decoder(args.device))
    elif args.device != "cpu":
        print(f"no GPU JPEG decoder for --device {args.device}: nvImageCodec missing or no GPU")
    device_decoder.close()
    runs["libjpeg-turbo tiles only, 1 thread"] = lambda: decode_only(slide, level)
    best = dict.fromkeys(runs, float("inf"))
    best_cpu = dict.fromkeys(runs, float("inf"))
    diff = dict.fromkeys(runs, 0)
    reference: list | None = None
    for _ in range(args.repeats):
        for name, run in runs.items():
            seconds, cpu_seconds, blocks = run()
            best[name] = min(best[name], seconds)
            best_cpu[name] = min(best_cpu[name], cpu_seconds)
            reference = reference if reference is not None else blocks
            if blocks:
                pairs = zip(reference, blocks, strict=True)
                diff[name] = max([diff[name]] + [int(np.abs(a.astype(np.int16) - b).max()) for a, b in pairs])
    decoded_mpx = level.offsets.size * level.tile_w * level.tile_h / 1e6
    base, today = mpx / best["OpenSlide read_region"], mpx / best["tifffile path (TiffFileReader)"]
    base_cpu = mpx / best_cpu["OpenSlide read_region"]
    columns = ("Mpx/s", "x OpenSlide", "x tifffile", "Mpx/CPU-s", "x OpenSlide", "max diff")
    print(f"\n{'reader':36s} " + " ".join(f"{c:>11s}" for c in columns))
    for name, seconds in best.items():
        pixels = decoded_mpx if name.startswith("libjpeg") else mpx
        rate, cpu_rate = pixels / seconds, pixels / best_cpu[name]
        shown = "-" if name.startswith("libjpeg") else str(diff[name])
        values = (f"{rate:.1f}", f"{rate / base:.2f}", f"{rate / today:.2f}", f"{cpu_rate:.1f}")
        values += (f"{cpu_rate / base_cpu:.2f}", shown)
        print(f"{name:36s} " + " ".join(f"{v:>11s}" for v in values))
    print("\nMpx/s: block pixels per wall second; Mpx/CPU-s: per CPU second of the whole process (what a")
    print(
        "read takes from the model on a small machine); max diff: largest difference from OpenSlide's pixels"
    )


def decode_only(slide: Path, level: JpegLevel) -> tuple[float, float, list]:
    """Every tile of level 0 decoded once with libjpeg-turbo and nothing else (reads not timed)."""
    with open(slide, "rb") as fh:
        raw = read_tiles(fh.fileno(), level, range(level.offsets.size))
    t0, c0 = time.perf_counter(), time.process_time()
    for data in raw:
        imagecodecs.jpeg8_decode(
            data, tables=level.tables, colorspace="RGB" if level.rgb_coded else None, outcolorspace="RGB"
        )
    return time.perf_counter() - t0, time.process_time() - c0, []


if __name__ == "__main__":
    main()
