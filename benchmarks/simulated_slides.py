"""Simulated slides: time to build the default 20-slide set, and memory for one very large slide.

    .venv/bin/python benchmarks/simulated_slides.py [--data ../shared/data/hcd_patches] [--large]

1. Builds the default set (8 negative, 3 ITC, 5 micro, 4 macro; 72 x 72 cells at 0.972 um/px) from
   the shipped default model's recorded validation split and prints the wall time per slide.
2. ``--large``: writes one 260 x 520-cell slide (24,960 x 49,920 px, 3.7 GB of RGB at level 0) in a
   child process and prints its peak RSS next to the level-0 size, to show that memory stays at a
   strip of tiles plus the distinct patches.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _validation_pool(data: Path):
    from wsi_pipeline.data import open_patch_dataset
    from wsi_pipeline.evaluation.validation import validation_indices

    dataset = open_patch_dataset(data, check="none")
    config = json.loads((ROOT / "wsi_pipeline/models/weights/default/config.json").read_text())
    return dataset, validation_indices(config["data"], np.asarray(dataset.labels))


def default_set(data: Path) -> None:
    from wsi_pipeline.simulate import build_slide_set

    dataset, pool = _validation_pool(data)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        written = build_slide_set(dataset, pool, tmp, seed=0)
        wall = time.perf_counter() - start
        size = sum(p.stat().st_size for p, _ in written) / 1e6
    print(
        f"default set: {len(written)} slides in {wall:.1f} s "
        f"({wall / len(written):.2f} s/slide), {size:.0f} MB"
    )


def large_child(data: Path, out: Path) -> None:
    import dataclasses

    from wsi_pipeline.simulate import SimulationSpec, plan_slides, write_slide

    dataset, pool = _validation_pool(data)
    spec = dataclasses.replace(SimulationSpec(), grid=(260, 520), macro_mm=(6.0, 8.0))
    plan = plan_slides(np.asarray(dataset.labels), pool, ["macro"], seed=0, spec=spec)[0]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    write_slide(plan, dataset, out)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    level0 = 260 * 96 * 520 * 96 * 3 / 2**20
    print(
        f"large slide {520 * 96} x {260 * 96} px: {wall:.0f} s, peak RSS {peak:.0f} MiB "
        f"(before writing {before:.0f} MiB; level 0 is {level0:.0f} MiB), "
        f"file {out.stat().st_size / 1e6:.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/hcd_patches")
    parser.add_argument("--large", action="store_true", help="also write one 25k x 50k px slide")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        large_child(args.data, args.child)
        return
    default_set(args.data)
    if args.large:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [
                sys.executable,
                __file__,
                "--data",
                str(args.data),
                "--child",
                str(Path(tmp) / "large.tif"),
            ]
            subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
