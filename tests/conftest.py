"""Shared test fixtures: the location of the real data beside the project, and the test probe model.

``wsi_pipeline.testing`` registers the ``mean_intensity_probe`` architecture the tests save models
with. Dask worker processes (and their subprocesses) import it too, through Dask's worker preload,
set here before anything imports dask.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("DASK_DISTRIBUTED__WORKER__PRELOAD", '["wsi_pipeline.testing"]')

import wsi_pipeline.testing  # noqa: E402, F401  (registers the probe architecture)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("WSI_PIPELINE_TEST_DATA", PROJECT_ROOT.parent / "shared" / "data"))


@pytest.fixture(autouse=True, scope="session")
def _private_patch_cache(tmp_path_factory) -> None:
    """Patch caches built by tests go to a temporary folder, not the user's ~/.cache."""
    os.environ["WSI_PIPELINE_CACHE"] = str(tmp_path_factory.mktemp("wsi-cache"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests that need it skip with a reason when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder not found at {SHARED_DATA} (set WSI_PIPELINE_TEST_DATA)")
    return SHARED_DATA
