"""Size and time cost of ``viewer.html`` + its Deep Zoom pyramid (``write_viewer``).

    .venv/bin/python benchmarks/viewer_pyramid.py [--data ../shared/data] [--synthetic 24000] [--mpp 0.972]

For each real slide in ``DATA/slides`` (and one synthetic slide of ``--synthetic`` px a side at
0.25 um/px, written tile by tile) it writes the viewer in a fresh process and prints pyramid
size, tiles written / skipped as blank glass, bytes on disk, bytes per pyramid Mpx, bytes per
mm2 of slide, time, and the process's peak memory above its baseline (RSS high-water mark).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SLIDES = ["cmu1_small_region.svs", "cmu1_small_pyramid_generic.tif", "os1_detail.ome.tif"]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _disk_bytes(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def measure_one(slide: Path, mpp: float) -> dict:
    from wsi_pipeline.slide import open_slide
    from wsi_pipeline.viewer import ViewerData, write_viewer

    with open_slide(slide) as reader, tempfile.TemporaryDirectory() as tmp:
        slide_mpp = reader.metadata_mpp or 0.25
        data = ViewerData(slide.name, reader.dimensions, slide_mpp)
        base = _rss_mb()
        start = time.perf_counter()
        write_viewer(tmp, data, reader, mpp)
        seconds = time.perf_counter() - start
        tiles_bytes, n_files = _disk_bytes(Path(tmp) / "viewer_files")
        page = (Path(tmp) / "viewer.html").read_text()
        payload = json.loads(page.split('id="viewer-data">', 1)[1].split("</script>", 1)[0])
        tiles = payload["tiles"]
        w0, h0 = reader.dimensions
        return {
            "slide": slide.name,
            "level0": f"{w0}x{h0}",
            "mpp": slide_mpp,
            "pyramid": f"{tiles['width']}x{tiles['height']}",
            "mpx": tiles["width"] * tiles["height"] / 1e6,
            "files": n_files,
            "tiles_bytes": tiles_bytes,
            "html_bytes": len(page.encode()),
            "mm2": w0 * h0 * slide_mpp**2 / 1e6,
            "seconds": seconds,
            "peak_mb": _rss_mb() - base,
        }


def synthetic_slide(path: Path, size: int, mpp: float = 0.25, tile: int = 512) -> Path:
    """Pyramidal TIFF (levels 1, 1/4, 1/16) of a textured tissue ellipse on glass, written tile by
    tile so that a large slide needs little memory."""
    import tifffile

    def tiles(scale: int):
        side = size // scale
        for ty in range(0, side, tile):
            for tx in range(0, side, tile):
                yy, xx = np.mgrid[ty : ty + tile, tx : tx + tile].astype(np.float32) * scale
                inside = ((yy - size / 2) / (size * 0.45)) ** 2 + ((xx - size / 2) / (size * 0.3)) ** 2 < 1
                mix = ((np.sin(xx / 37.0) * np.cos(yy / 53.0) + 1) / 2)[..., None]
                rgb = np.array([225, 140, 185]) * mix + np.array([120, 70, 165]) * (1 - mix)
                out = np.where(inside[..., None], rgb, 242).astype(np.uint8)
                yield out

    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for index, scale in enumerate((1, 4, 16)):
            side = size // scale
            tif.write(tiles(scale), shape=(side, side, 3), dtype=np.uint8, tile=(tile, tile),
                      photometric="rgb", compression="jpeg", subfiletype=1 if index else 0,
                      resolution=(1e4 / (mpp * scale),) * 2, resolutionunit="CENTIMETER")  # fmt: skip
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data"
    )
    parser.add_argument(
        "--synthetic", type=int, default=24000, help="side (px) of the synthetic slide; 0: none"
    )
    parser.add_argument("--mpp", type=float, default=0.972, help="pyramid resolution (um/px)")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one, args.mpp)))
        return
    slides = [args.data / "slides" / name for name in SLIDES if (args.data / "slides" / name).is_file()]
    with tempfile.TemporaryDirectory() as tmp:
        if args.synthetic:
            start = time.perf_counter()
            slides.append(synthetic_slide(Path(tmp) / f"synthetic_{args.synthetic}.tif", args.synthetic))
            print(f"(synthetic slide written in {time.perf_counter() - start:.0f} s)")
        header = f"{'slide':32} {'level 0':>11} {'pyramid':>11} {'Mpx':>6} {'files':>6} {'tiles MB':>8} "
        print(header + f"{'B/Mpx':>8} {'MB/cm2':>7} {'html KB':>7} {'s':>6} {'peak MB':>7}")
        for slide in slides:
            command = [sys.executable, __file__, "--one", str(slide), "--mpp", str(args.mpp)]
            done = subprocess.run(command, capture_output=True, text=True, check=True, env=dict(os.environ))
            r = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{r['slide']:32} {r['level0']:>11} {r['pyramid']:>11} {r['mpx']:6.1f} {r['files']:6d} "
                  f"{r['tiles_bytes'] / 1e6:8.2f} {r['tiles_bytes'] / r['mpx']:8.0f} "
                  f"{r['tiles_bytes'] / 1e6 / (r['mm2'] / 100):7.1f} {r['html_bytes'] / 1e3:7.0f} "
                  f"{r['seconds']:6.2f} {r['peak_mb']:7.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
