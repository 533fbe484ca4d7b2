"""Batch throughput: slides/hour with 1 and 2 (or more) Dask worker processes on this machine.

    .venv/bin/python benchmarks/batch_throughput.py [--slides 6] [--size 1536] [--workers 1 2]

Writes ``--slides`` synthetic pyramidal TIFF slides (pink/purple tissue on white glass) into a
temp folder, then for each worker count starts a local cluster (start-up timed separately) and
runs ``run_batch`` into a fresh output folder. Uses the shipped default model when installed,
else an untrained ``seed_cnn`` saved with ``save_model`` (same compute per tile as a trained one).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from wsi_pipeline.batch.cluster import open_client, plan_workers
from wsi_pipeline.batch.runner import run_batch
from wsi_pipeline.models import ModelConfig, create_model, save_model
from wsi_pipeline.models.io import default_model_dir
from wsi_pipeline.options import InferenceOptions


def synthetic_slide(path: Path, seed: int, size: int, mpp: float = 0.5) -> Path:
    """A tiled 3-level pyramidal TIFF of one textured tissue ellipse on white glass."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    img = np.full((size, size, 3), 245, np.uint8)
    blob = ((yy - size / 2) / (size * 0.45)) ** 2 + ((xx - size / 2) / (size * 0.4)) ** 2 < 1
    mix = ((np.sin(xx / (23.0 + 3 * seed)) * np.cos(yy / 31.0) + 1) / 2)[..., None]
    colour = (
        np.array([225, 140, 185]) * mix + np.array([120, 70, 165]) * (1 - mix) + rng.normal(0, 8, img.shape)
    )
    img[blob] = np.clip(colour[blob], 0, 255).astype(np.uint8)
    with tifffile.TiffWriter(path) as tif:
        level = img
        for i in range(3):
            res = 1e4 / (mpp * 2**i)
            tif.write(
                level,
                photometric="rgb",
                tile=(256, 256),
                compression="zlib",
                subfiletype=1 if i else 0,
                resolution=(res, res),
                resolutionunit="CENTIMETER",
                metadata=None,
            )
            h, w = level.shape[0] // 2, level.shape[1] // 2
            level = level[: 2 * h, : 2 * w].reshape(h, 2, w, 2, 3).mean(axis=(1, 3)).astype(np.uint8)
    return path


def model_folder(tmp: Path) -> tuple[Path, str]:
    if (default_model_dir() / "config.json").is_file():
        return default_model_dir(), "default model"
    config = ModelConfig(architecture="seed_cnn", name="bench-seed-cnn")
    return save_model(tmp / "seed_cnn", create_model("seed_cnn"), config), "untrained seed_cnn"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slides", type=int, default=6)
    parser.add_argument("--size", type=int, default=3072, help="level-0 side of each slide in px (0.5 um/px)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="wsi-batch-bench-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "slides").mkdir()
        slides = [synthetic_slide(tmp / "slides" / f"s{i:02d}.tif", i, args.size) for i in range(args.slides)]
        model, model_name = model_folder(tmp)
        options = InferenceOptions(device=args.device)
        print(
            f"{len(slides)} slides of {args.size}x{args.size} px at 0.5 um/px; {model_name}; "
            f"{os.cpu_count()} CPU cores; device {args.device}",
            flush=True,
        )
        results = []
        for n in args.workers:
            plan = plan_workers(n, args.device)
            t0 = time.perf_counter()
            with open_client(None, plan, echo=lambda _s: None) as client:
                start_s = time.perf_counter() - t0
                report = run_batch(
                    slides,
                    tmp / f"out{n}",
                    options,
                    model,
                    scheduler=client.cluster.scheduler_address,
                    progress=False,
                    echo=lambda _s: None,
                )
            if report.n_done != len(slides):
                sys.exit(f"benchmark run with {n} worker(s) failed: {report.one_line()}")
            tiles = sum(r.n_tiles_tissue or 0 for r in report.rows)
            results.append((n, plan.torch_threads, start_s, report.wall_seconds, tiles))
        base = results[0][3]
        print(
            f"{'workers':>7} {'torch thr':>9} {'start s':>8} {'run s':>7} {'slides/h':>9} {'tiles/s':>8} "
            f"{'speed-up':>8}"
        )
        for n, threads, start_s, run_s, tiles in results:
            print(
                f"{n:>7} {threads:>9} {start_s:>8.1f} {run_s:>7.1f} {len(slides) * 3600 / run_s:>9.0f} "
                f"{tiles / run_s:>8.1f} {base / run_s:>7.2f}x"
            )


if __name__ == "__main__":
    main()
