"""Analyse one slide from Python and read the results back.

python examples/analyse_slide.py SLIDE [--mpp 0.25] [--stride 48]
"""

from __future__ import annotations

import argparse

import numpy as np

from wsi_pipeline import InferenceOptions, load_model, run_slide
from wsi_pipeline.outputs import read_heatmap_zarr, read_summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slide")
    parser.add_argument("-o", "--out", default="results")
    parser.add_argument("--mpp", type=float, default=None)
    parser.add_argument("--stride", type=int, default=None)
    args = parser.parse_args()

    model = load_model(None)  # the shipped default; load_model("runs/x/model") for your own
    result = run_slide(args.slide, args.out, InferenceOptions(mpp=args.mpp, stride=args.stride), model)
    s = result.summary  # also in memory: result.heatmap, result.regions, result.scores
    print(
        f"{result.out_dir}: score {s.slide_score:.3f} ({s.category}), {len(result.regions)} tumour region(s)"
    )
    # ... and read back from the files, as any other tool would
    heatmap, attrs = read_heatmap_zarr(result.out_dir / "heatmap.zarr")
    assert read_summary(result.out_dir) == s and np.array_equal(heatmap, result.heatmap, equal_nan=True)
    cells = int(np.isfinite(heatmap).sum())
    print(f"heatmap {heatmap.shape}, {cells} tissue cells of {attrs['cell_size_um']} um")


if __name__ == "__main__":
    main()
