"""Simulated slides: seeded plans hit the requested kind, and the written TIFF holds the planned pixels."""

from __future__ import annotations

import dataclasses
import tracemalloc
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile
from scipy import ndimage

from wsi_pipeline.aggregation import max_feret_cells
from wsi_pipeline.data import PatchDataset, open_patch_dataset
from wsi_pipeline.errors import DatasetError, OptionError
from wsi_pipeline.simulate import (
    SimulationSpec,
    SlidePlan,
    SlideTruth,
    build_slide_set,
    d4_view,
    plan_slide,
    plan_slides,
    truth_path,
    write_slide,
)
from wsi_pipeline.simulate.render import glass_tiles

CELL_MM = 96 * 0.972 / 1000
LABELS = np.array([0, 1] * 300)  # 600 patches, half tumour
POOL = np.arange(100, 500)  # only these may be placed
SMALL = SimulationSpec(grid=(16, 20), micro_mm=(0.3, 0.45), macro_mm=(2.1, 2.3))


def _check_plan(plan: SlidePlan, kind: str) -> None:
    assert plan.kind == kind
    tissue, tumour = plan.tissue, plan.tumour
    assert 0.35 <= tissue.mean() <= 0.60
    assert set(np.unique(plan.source[tissue])) <= set(POOL.tolist())
    assert (plan.source[~tissue] == -1).all()
    assert (LABELS[plan.source[tumour]] == 1).all() and (LABELS[plan.source[tissue & ~tumour]] == 0).all()
    assert (tissue == (plan.sections > 0)).all() and not (tumour & ~tissue).any()
    n_sections = int(plan.sections.max())
    assert n_sections in (2, 3)
    for k in range(1, n_sections + 1):  # separate sections, one 8-connected piece each, off the edge
        section = plan.sections == k
        assert ndimage.label(section, structure=np.ones((3, 3)))[1] == 1
        grown = ndimage.binary_dilation(section, structure=np.ones((3, 3)))
        assert not (grown & (plan.sections > 0) & ~section).any()
        assert not (section[0].any() or section[-1].any() or section[:, 0].any() or section[:, -1].any())
    for lesion in plan.lesions:
        assert lesion.diameter_mm == pytest.approx(max_feret_cells(lesion.cells) * CELL_MM)
        assert lesion.area_mm2 == pytest.approx(len(lesion.cells) * CELL_MM**2)
    sizes = [lesion.diameter_mm for lesion in plan.lesions]
    if kind == "negative":
        assert not plan.lesions and not tumour.any()
    elif kind == "itc":
        assert 1 <= len(plan.lesions) <= 3 and all(
            len(x.cells) == 1 and d < 0.2 for x, d in zip(plan.lesions, sizes, strict=True)
        )
        # isolated: no two tumour cells touch, so every cluster is one 93 um cell
        assert ndimage.label(tumour, structure=np.ones((3, 3)))[1] == len(plan.lesions)
    else:
        assert len(plan.lesions) == 1
        assert ndimage.label(tumour, structure=ndimage.generate_binary_structure(2, 1))[1] == 1
        assert (0.2 <= sizes[0] <= 2.0) if kind == "micro" else sizes[0] > 2.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_plans_hit_every_kind(seed: int) -> None:
    plans = plan_slides(LABELS, POOL, {"negative": 2, "itc": 2, "micro": 2, "macro": 2}, seed=seed)
    assert [p.kind for p in plans] == ["negative"] * 2 + ["itc"] * 2 + ["micro"] * 2 + ["macro"] * 2
    for plan in plans:
        _check_plan(plan, plan.kind)
    micro, macro = plans[4].lesions[0], plans[6].lesions[0]
    assert 0.3 <= micro.diameter_mm <= 1.8 + 0.14 and 2.3 <= macro.diameter_mm <= 3.5 + 0.14


def test_plans_are_reproducible_per_seed_and_index() -> None:
    first = plan_slides(LABELS, POOL, ["negative", "micro", "macro"], seed=7)
    again = plan_slides(LABELS, POOL, ["negative", "micro", "macro"], seed=7)
    other = plan_slides(LABELS, POOL, ["negative", "micro", "macro"], seed=8)
    assert [p.to_dict() for p in first] == [p.to_dict() for p in again]
    for a, b in zip(first, other, strict=True):
        assert not np.array_equal(a.sections, b.sections) and not np.array_equal(a.source, b.source)
    # slide i depends only on (seed, i, kind), not on the rest of the set
    alone = plan_slide(LABELS, POOL, "macro", seed=7, index=2, spec=SimulationSpec())
    assert alone.to_dict() == first[2].to_dict()


def test_plan_and_truth_round_trip_through_json(tmp_path: Path) -> None:
    plan = plan_slides(LABELS, POOL, ["micro"], seed=3)[0]
    assert SlidePlan.from_dict(plan.to_dict()).to_dict() == plan.to_dict()
    truth = SlideTruth(plan, "x.tif", upsample=4, patch_ids={5: "a"}, dataset={"n": 600})
    loaded = SlideTruth.load(truth.save(tmp_path / "x.truth.json"))
    assert loaded.to_dict() == truth.to_dict()
    assert loaded.mpp == pytest.approx(0.243) and loaded.cell_px == 384
    assert np.array_equal(loaded.plan.lesions[0].cells, plan.lesions[0].cells)
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(DatasetError, match="bad.json"):
        SlideTruth.load(tmp_path / "bad.json")


def test_plan_rejects_bad_requests() -> None:
    with pytest.raises(OptionError, match="unknown slide kind"):
        plan_slides(LABELS, POOL, ["huge"])
    with pytest.raises(DatasetError, match="no tumour"):
        plan_slides(LABELS, POOL[LABELS[POOL] == 0], ["micro"])
    with pytest.raises(DatasetError, match="out of range"):
        plan_slides(LABELS, [0, 600], ["negative"])
    with pytest.raises(OptionError, match="no slides"):
        plan_slides(LABELS, POOL, {"negative": 0})


def test_d4_views_follow_the_training_convention() -> None:
    import torch

    from wsi_pipeline.d4 import dihedral

    x = np.random.default_rng(0).integers(0, 255, (2, 5, 5, 3), dtype=np.uint8)
    for k in range(8):
        expected = dihedral(torch.from_numpy(x).permute(0, 3, 1, 2), k).permute(0, 2, 3, 1).numpy()
        assert np.array_equal(d4_view(x, k), expected), k
    assert len({d4_view(x, k).tobytes() for k in range(8)}) == 8


@pytest.fixture(scope="module")
def patches(shared_data: Path):
    return open_patch_dataset(shared_data / "hcd_patches", check="none")


def _expected_cell(plan: SlidePlan, dataset, r: int, c: int) -> np.ndarray:
    if plan.source[r, c] < 0:
        return glass_tiles(plan.glass, 96)[plan.view[r, c]]
    return d4_view(dataset.read(np.array([plan.source[r, c]])), int(plan.view[r, c]))[0]


def test_written_slide_holds_the_planned_patches(patches, tmp_path: Path) -> None:
    labels = np.asarray(patches.labels)
    pool = np.arange(2000)
    plan = plan_slides(labels, pool, ["micro"], seed=5, spec=SMALL)[0]
    path = write_slide(plan, patches, tmp_path / "s.tif")
    with tifffile.TiffFile(path) as tif:
        image = tif.pages[0].asarray()
        x_res = tif.pages[0].tags["XResolution"].value
        assert image.shape == (16 * 96, 20 * 96, 3) and tif.pages[0].is_tiled
        assert tif.pages[0].compression == tifffile.COMPRESSION.JPEG
    assert 1e4 / (x_res[0] / x_res[1]) == pytest.approx(0.972)
    cells = image.reshape(16, 96, 20, 96, 3).transpose(0, 2, 1, 3, 4).astype(np.int16)
    tumour = np.argwhere(plan.tumour)
    assert len(tumour) >= 2
    for r, c in [*tumour, *np.argwhere(plan.tissue & ~plan.tumour)[:10], *np.argwhere(~plan.tissue)[:5]]:
        expected = _expected_cell(plan, patches, r, c).astype(np.int16)
        err = np.abs(cells[r, c] - expected).mean()
        assert err < 3.0, (r, c, err)
        if plan.tissue[r, c]:  # closer to its own view than to any other view of the same patch
            others = [np.abs(cells[r, c] - d4_view(expected[None], k)[0]).mean() for k in range(1, 8)]
            assert err < min(others) / 3
    glass = cells[~plan.tissue]
    assert np.abs(glass.mean(axis=(0, 1, 2)) - np.array(plan.glass.rgb)).max() < 1.0
    assert 0.3 < glass.std() < 4 and glass.min() > 220
    truth = SlideTruth.load(truth_path(path))
    assert truth.plan.to_dict() == plan.to_dict() and truth.slide == "s.tif"
    assert truth.patch_ids == {int(i): patches.ids[int(i)] for i in plan.used_indices}
    with openslide.OpenSlide(str(path)) as slide:
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.972)
        assert slide.level_dimensions[0] == (20 * 96, 16 * 96)
        r, c = tumour[0]
        region = np.asarray(slide.read_region((int(c) * 96, int(r) * 96), 0, (96, 96)).convert("RGB"))
        assert np.abs(region.astype(np.int16) - cells[r, c]).max() <= 2


def test_upsampled_slide_and_its_pyramid(patches, tmp_path: Path) -> None:
    labels = np.asarray(patches.labels)
    spec = dataclasses.replace(SMALL, grid=(12, 12))
    plan = plan_slides(labels, np.arange(500), ["itc"], seed=1, spec=spec)[0]
    path = write_slide(plan, patches, tmp_path / "up.tif", upsample=4)
    with openslide.OpenSlide(str(path)) as slide:
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.243)
        assert slide.level_dimensions[0] == (12 * 384, 12 * 384)
        assert slide.level_downsamples[:2] == pytest.approx((1.0, 2.0))
    with tifffile.TiffFile(path) as tif:
        level0, level2 = tif.series[0].levels[0].asarray(), tif.series[0].levels[2].asarray()
        assert len(tif.series[0].levels) == 3  # 4608, 2304, 1152 px; 576 would be under 1,000
        res = tif.series[0].levels[2].pages[0].tags["XResolution"].value
        assert 1e4 / (res[0] / res[1]) == pytest.approx(0.972)
    r, c = np.argwhere(plan.tumour)[0]
    expected = _expected_cell(plan, patches, r, c).astype(np.int16)
    big = level0[r * 384 : (r + 1) * 384, c * 384 : (c + 1) * 384].astype(np.int16)
    assert np.abs(big - expected.repeat(4, 0).repeat(4, 1)).mean() < 3.0
    small = level2[r * 96 : (r + 1) * 96, c * 96 : (c + 1) * 96].astype(np.int16)
    assert np.abs(small - expected).mean() < 3.0  # level 2 of a 4x upsampled slide is the patch itself


def test_build_slide_set_writes_slides_and_truths(patches, tmp_path: Path) -> None:
    labels = np.asarray(patches.labels)
    spec = dataclasses.replace(SMALL, grid=(24, 40))
    written = build_slide_set(
        patches, np.arange(800), tmp_path, {"negative": 1, "macro": 1}, seed=4, spec=spec
    )
    assert [p.name for p, _ in written] == ["sim_s4_000.tif", "sim_s4_001.tif"]
    kinds = [SlideTruth.load(t).plan.kind for _, t in written]
    assert kinds == ["negative", "macro"]
    again = plan_slides(labels, np.arange(800), {"negative": 1, "macro": 1}, seed=4, spec=spec)
    assert SlideTruth.load(written[1][1]).plan.to_dict() == again[1].to_dict()


class _InMemory(PatchDataset):
    """Patches held in an array (the generator reads through the PatchDataset contract)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self._labels = images, labels.astype(np.int64)

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    @property
    def ids(self) -> list[str]:
        return [f"mem:{i}" for i in range(len(self._labels))]

    def read(self, indices: np.ndarray) -> np.ndarray:
        return self.images[np.asarray(indices, dtype=np.int64)]


def test_large_slide_is_written_in_bounded_memory(tmp_path: Path) -> None:
    yy, xx = np.mgrid[0:96, 0:96]
    base = np.stack([yy * 2, xx * 2, (yy + xx)], axis=-1).astype(np.uint8)
    images = np.stack([np.roll(base, i, axis=0) for i in range(20)])
    dataset = _InMemory(images, np.array([0, 1] * 10))
    spec = dataclasses.replace(SimulationSpec(), grid=(200, 24))  # 19,200 x 2,304 px
    plan = plan_slides(dataset.labels, np.arange(20), ["macro"], seed=0, spec=spec)[0]
    full = 200 * 96 * 24 * 96 * 3
    tracemalloc.start()
    try:
        write_slide(plan, dataset, tmp_path / "big.tif", quality=70)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < full / 10, f"peak {peak / 1e6:.1f} MB for a {full / 1e6:.0f} MB level 0"
    with tifffile.TiffFile(tmp_path / "big.tif") as tif:
        assert tif.pages[0].shape == (19200, 2304, 3)
