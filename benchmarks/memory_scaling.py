"""Peak memory of ``wsi-infer`` against slide size (issue 13, item 3), side by side in one run.

Builds mosaic slides of real patches (``_mosaic.py``: tiled pyramidal JPEG TIFFs written strip by
strip, never as one array) of increasing size, runs the same ``wsi-infer`` command on each in a
fresh process and samples the PSS summed over the whole process tree (every 20 ms), then prints
wall time, tiles, peak PSS and each slide's peak as a ratio of the smallest one's.

    python benchmarks/memory_scaling.py                       # 9,600 and 24,000 px squares
    python benchmarks/memory_scaling.py --camelyon            # + a 25,000 x 50,000 px slide

Target (issue 13): peak PSS on the 24,000 px mosaic <= 1.15x that on the 9,600 px one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from _mosaic import build_mosaic  # beside this script (python puts its folder on sys.path)
from _pss import tree_pss_mb

from wsi_pipeline.pcam import PCAM_PATCH
from wsi_pipeline.precision import cpu_name

ROOT = Path(__file__).resolve().parents[1]
PATCH_DIR = ROOT.parent / "shared" / "data" / "hcd_patches"
DEFAULT_CACHE = Path.home() / ".cache" / "wsi_pipeline" / "bench"


def run_measured(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int, str]:
    """Wall seconds, peak PSS (MB) of the process tree, return code and the output's last line."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0.0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_pss_mb(proc.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    sampler.join()
    lines = [line for line in out.splitlines() if line.strip()]
    return time.perf_counter() - t0, peak[0], proc.returncode, lines[-2] if len(lines) >= 2 else out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grids", type=int, nargs="+", default=[100, 250], help="square mosaics, cells per side")
    ap.add_argument("--camelyon", action="store_true", help="also a 25,000 x 50,000 px slide")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--patches", type=Path, default=PATCH_DIR)
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of wsi-infer")
    ap.add_argument("--infer-args", default="", help="extra wsi-infer arguments, e.g. '--no-viewer'")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if not (args.patches / "train_labels.csv").is_file():
        sys.exit(f"error: no Kaggle-layout patches at {args.patches} (--patches)")
    slides = [(f"{g * PCAM_PATCH:,} px square", g, None) for g in args.grids]
    if args.camelyon:
        slides.append((f"{520 * PCAM_PATCH:,} x {260 * PCAM_PATCH:,} px (Camelyon size)", 520, 260))
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    infer = str(Path(sys.executable).with_name("wsi-infer"))
    print(f"CPU: {cpu_name()} ({os.cpu_count()} logical), Python {platform.python_version()}")
    rows = []
    for label, grid, grid_rows in slides:
        name = f"mosaic_{grid}" + (f"x{grid_rows}" if grid_rows else "")
        t0 = time.perf_counter()
        path, layout = build_mosaic(args.cache / f"{name}.tif", args.patches, grid=grid, rows=grid_rows)
        built = time.perf_counter() - t0
        out = args.cache / f"out_{name}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [infer, str(path), "-o", str(out), "--no-progress", *args.infer_args.split()]
        wall, peak, rc, last = run_measured(cmd, env)
        if rc != 0:
            sys.exit(f"error: wsi-infer failed on {path} (rc {rc}): {last}")
        summary = json.loads((out / path.stem / "summary.json").read_text())
        tiles = int(summary["n_tiles_tissue"])
        rows.append(
            {
                "slide": label,
                "path": str(path),
                "cells": int((layout.cells >= 0).sum()),
                "tiles": tiles,
                "wall_s": wall,
                "peak_pss_mb": peak,
                "build_s": built,
            }
        )
        print(f"  {label}: {wall:.1f} s, peak PSS {peak:.0f} MB (slide built in {built:.0f} s)", flush=True)
    base = rows[0]["peak_pss_mb"]
    print(f"\n| slide | tissue tiles | wall | peak PSS | vs {rows[0]['slide']} |\n|---|---|---|---|---|")
    for row in rows:
        row["ratio"] = row["peak_pss_mb"] / base
        print(
            f"| {row['slide']} | {row['tiles']:,} | {row['wall_s']:.0f} s | {row['peak_pss_mb']:.0f} MB "
            f"| {row['ratio']:.2f}x |"
        )
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
