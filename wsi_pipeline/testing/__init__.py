"""Helpers for tests and benchmarks: the deterministic probe model, a small-slide factory and a sample
slide summary.

Importing this package registers the ``mean_intensity_probe`` architecture, so models saved with it
load (in a Dask worker too: ``DASK_DISTRIBUTED__WORKER__PRELOAD='["wsi_pipeline.testing"]'``).
Nothing in the package itself imports it.
"""

from wsi_pipeline.testing.leica import write_leica_scn
from wsi_pipeline.testing.probe import (
    PROBE_KWARGS,
    MeanIntensityProbe,
    load_probe_model,
    probe_probability,
    save_probe_model,
)
from wsi_pipeline.testing.slides import (
    PATCH,
    build_patch_mosaic,
    gradient_image,
    pyramid_levels,
    write_empty_giant_tiff,
    write_ome_tiff,
    write_pyramidal_tiff,
)
from wsi_pipeline.testing.summaries import sample_summary

__all__ = [
    "PATCH",
    "PROBE_KWARGS",
    "MeanIntensityProbe",
    "build_patch_mosaic",
    "gradient_image",
    "load_probe_model",
    "probe_probability",
    "pyramid_levels",
    "sample_summary",
    "save_probe_model",
    "write_empty_giant_tiff",
    "write_leica_scn",
    "write_ome_tiff",
    "write_pyramidal_tiff",
]
