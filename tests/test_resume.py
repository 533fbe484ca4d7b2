"""Resume keyed on the slide file itself and on a completion manifest, with real slides, real model
outputs and real Zarr chunks (no cluster: :func:`plan_resume` is what the batch runner asks)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from wsi_pipeline.batch.resume import is_up_to_date, plan_resume, read_complete_summary
from wsi_pipeline.options import InferenceOptions
from wsi_pipeline.outputs import OUTPUT_FILES, check_outputs, read_summary
from wsi_pipeline.outputs.manifest import NAME as MANIFEST
from wsi_pipeline.outputs.manifest import read_manifest
from wsi_pipeline.pipeline import run_slide
from wsi_pipeline.slide.identity import SAMPLED, WHOLE, slide_file_identity
from wsi_pipeline.testing import load_probe_model, write_pyramidal_tiff

OPTIONS = InferenceOptions(device="cpu", num_readers=1)


def _image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((256, 256, 3), 245, np.uint8)
    img[32:224, 32:224] = rng.integers(60, 200, (192, 192, 3), dtype=np.uint8)
    return img


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    return load_probe_model(tmp_path_factory.mktemp("probe") / "probe", patch_size=32, mpp=1.0)


@pytest.fixture(scope="module")
def done(tmp_path_factory, probe):
    """s1/case.tif analysed into a reference folder (copied per test), and s2/case.tif: another slide."""
    root = tmp_path_factory.mktemp("resume")
    for name in ("s1", "s2"):
        (root / name).mkdir()
    s1 = write_pyramidal_tiff(root / "s1" / "case.tif", _image(1), mpp=1.0, compression=None)
    s2 = write_pyramidal_tiff(root / "s2" / "case.tif", _image(2), mpp=1.0, compression=None)
    result = run_slide(s1, root / "ref", OPTIONS, probe)
    return {"s1": s1, "s2": s2, "ref": root / "ref", "result": result}


def _out(done, tmp_path) -> Path:
    out = tmp_path / "R"
    shutil.copytree(done["ref"], out)
    return out


def _plan(slide: Path, out: Path, done):
    return plan_resume([slide], out, done["result"].summary.params_hash, options=OPTIONS)


def test_summary_records_the_slide_file_and_the_folder_its_manifest(done):
    out_dir = done["result"].out_dir
    recorded = json.loads((out_dir / "summary.json").read_text())["slide_file"]
    st = done["s1"].stat()
    assert recorded["path"] == str(done["s1"].resolve())
    assert (recorded["size"], recorded["mtime_ns"]) == (st.st_size, st.st_mtime_ns)
    assert recorded["digest_method"] == WHOLE and len(recorded["digest"]) == 64
    assert read_summary(out_dir).slide_file == slide_file_identity(done["s1"])
    # the manifest lists every file of the folder (Zarr metadata and chunks too) with its real size
    files = read_manifest(out_dir)
    on_disk = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file())
    assert sorted(files) == [name for name in on_disk if name != MANIFEST]
    assert "heatmap.zarr/0/0.0" in files and "heatmap.zarr/.zmetadata" in files  # chunks, metadata
    assert "summary.json" in files and "viewer.html" in files
    assert all(files[name]["size"] == (out_dir / name).stat().st_size for name in files)
    assert MANIFEST in OUTPUT_FILES and done["result"].summary.outputs[-1] == MANIFEST


def test_same_slide_untouched_is_skipped(done, tmp_path):
    out = _out(done, tmp_path)
    plan = _plan(done["s1"], out, done)
    assert list(plan.skipped) == [done["s1"]] and plan.todo == []
    assert plan.skipped[done["s1"]].slide_score == done["result"].summary.slide_score


def test_another_slide_with_the_same_stem_is_redone(done, tmp_path):
    """Issue 11 #1: s2/case.tif into an OUT holding s1/case.tif's result."""
    out = _out(done, tmp_path)
    plan = _plan(done["s2"], out, done)
    assert plan.todo == [done["s2"]] and plan.skipped == {}
    assert "another or a changed slide file" in plan.redo[done["s2"]]


def test_slide_replaced_in_place_is_redone_even_with_same_size_and_mtime(done, tmp_path, probe):
    slide = tmp_path / "s1" / "case.tif"
    slide.parent.mkdir()
    shutil.copy2(done["s1"], slide)
    out = tmp_path / "R"
    run_slide(slide, out, OPTIONS, probe)
    assert list(_plan(slide, out, done).skipped) == [slide]
    # replaced by another slide of the very same size, modification time kept (cp -p)
    mtime = slide.stat().st_mtime_ns
    shutil.copyfile(done["s2"], slide)
    os.utime(slide, ns=(mtime, mtime))
    assert slide.stat().st_size == done["s1"].stat().st_size and slide.stat().st_mtime_ns == mtime
    assert _plan(slide, out, done).todo == [slide]
    # the old bytes back but a new modification time: redone too (the file was rewritten)
    shutil.copyfile(done["s1"], slide)
    assert _plan(slide, out, done).todo == [slide]
    os.utime(slide, ns=(mtime, mtime))
    assert list(_plan(slide, out, done).skipped) == [slide]


def _first_chunk(out_dir: Path) -> Path:
    """The full-resolution heatmap's first chunk (Zarr v2 key ``0/0.0``)."""
    chunk = out_dir / "heatmap.zarr" / "0" / "0.0"
    assert chunk.is_file() and chunk.stat().st_size > 0
    return chunk


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("empty_chunk", "bytes, the manifest says"),
        ("delete_chunk_folder", "missing"),
        ("empty_overlay", "overlay.png is 0 bytes"),
        ("empty_tumor_geojson", "tumor.geojson is 0 bytes"),
        ("flip_byte_overlay", "checksum differs"),
        ("delete_viewer_tile", "missing"),
        ("no_manifest", "manifest.json missing"),
        ("bad_manifest", "manifest.json missing or unreadable"),
    ],
)
def test_damaged_outputs_are_redone(done, tmp_path, damage, reason):
    """Issue 11 #4: a truncated, emptied, changed or deleted file or chunk is not skipped."""
    out = _out(done, tmp_path)
    folder = out / "case"
    if damage == "empty_chunk":
        _first_chunk(folder).write_bytes(b"")
    elif damage == "delete_chunk_folder":
        shutil.rmtree(_first_chunk(folder).parent)
    elif damage == "empty_overlay":
        (folder / "overlay.png").write_bytes(b"")
    elif damage == "empty_tumor_geojson":
        (folder / "tumor.geojson").write_bytes(b"")
    elif damage == "flip_byte_overlay":
        data = bytearray((folder / "overlay.png").read_bytes())
        data[-20] ^= 0xFF
        (folder / "overlay.png").write_bytes(bytes(data))
    elif damage == "delete_viewer_tile":
        tile = next(p for p in sorted((folder / "viewer_files").rglob("*")) if p.is_file())
        tile.unlink()
    elif damage == "no_manifest":
        (folder / MANIFEST).unlink()
    elif damage == "bad_manifest":
        (folder / MANIFEST).write_text('{"files": ')
    plan = _plan(done["s1"], out, done)
    assert plan.todo == [done["s1"]] and plan.skipped == {}
    assert reason in plan.redo[done["s1"]]
    assert read_complete_summary(folder) is None
    assert reason in (check_outputs(folder, OPTIONS) or "")


def test_summary_without_slide_identity_is_redone(done, tmp_path):
    """A result written before the slide was recorded (no slide_file) is not trusted."""
    out = _out(done, tmp_path)
    data = json.loads((out / "case" / "summary.json").read_text())
    del data["slide_file"]
    (out / "case" / "summary.json").write_text(json.dumps(data))
    assert read_summary(out / "case") is None
    assert _plan(done["s1"], out, done).todo == [done["s1"]]
    assert is_up_to_date(out / "case", done["result"].summary.params_hash, None) is None


def test_missing_or_odd_slide_files_are_todo_not_errors(done, tmp_path):
    out = _out(done, tmp_path)
    fifo = tmp_path / "case.tif"
    os.mkfifo(fifo)  # must not block: only regular files are read for the identity
    assert _plan(fifo, out, done).todo == [fifo]
    assert _plan(tmp_path / "gone" / "case.tif", out, done).todo == [tmp_path / "gone" / "case.tif"]


def test_large_files_get_a_sampled_digest_that_sees_the_middle(tmp_path):
    big = tmp_path / "big.bin"
    rng = np.random.default_rng(0)
    data = bytearray(rng.integers(0, 256, 20 << 20, dtype=np.uint8).tobytes())
    big.write_bytes(bytes(data))
    first = slide_file_identity(big)
    assert first.digest_method == SAMPLED and first.size == 20 << 20
    offset = (1 << 20) + ((20 << 20) - (2 << 20) - (64 << 10)) * 7 // 15 + 100  # inside sampled chunk 7
    data[offset] ^= 1
    big.write_bytes(bytes(data))
    os.utime(big, ns=(first.mtime_ns, first.mtime_ns))
    second = slide_file_identity(big)
    assert second.mtime_ns == first.mtime_ns and second.digest != first.digest
    link = tmp_path / "link.svs"
    link.symlink_to(big)
    assert slide_file_identity(link).path == str(big.resolve())
