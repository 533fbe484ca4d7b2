"""Batch pieces that need no cluster: worker planning, run summary, resume checks, stale clean-up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wsi_pipeline.batch.cluster import TORCH_THREADS_ENV, plan_workers
from wsi_pipeline.batch.report import BatchReport, SlideRow, read_run_summary_csv, write_run_summary
from wsi_pipeline.batch.resume import is_up_to_date, plan_resume
from wsi_pipeline.batch.runner import run_batch
from wsi_pipeline.devices import parse_device, resolve_device
from wsi_pipeline.errors import OptionError, one_line
from wsi_pipeline.files import check_distinct_slides
from wsi_pipeline.options import InferenceOptions
from wsi_pipeline.outdir import clean_stale_temp
from wsi_pipeline.outputs import OUTPUT_NAMES, manifest
from wsi_pipeline.slide.identity import slide_file_identity
from wsi_pipeline.testing import sample_summary


# --- worker planning ---------------------------------------------------------------------------
def test_cpu_plan_splits_cores_between_worker_processes():
    plan = plan_workers(2, device="cpu", cores=8)
    assert (plan.n_workers, plan.threads_per_worker, plan.torch_threads, plan.gpu) == (2, 1, 4, False)
    assert plan.envs == [{"CUDA_VISIBLE_DEVICES": "", TORCH_THREADS_ENV: "4", "OMP_NUM_THREADS": "4"}] * 2
    assert plan_workers(None, device="cpu", cores=6).n_workers == 3  # default: one per two cores
    assert plan_workers(3, device="cpu", cores=2).torch_threads == 1


def test_gpu_plan_pins_one_worker_per_visible_gpu():
    plan = plan_workers(None, device="auto", cores=16, gpu_ids=["0", "3"])
    assert plan.gpu and plan.n_workers == 2 and plan.torch_threads == 8
    assert [env["CUDA_VISIBLE_DEVICES"] for env in plan.envs] == ["0", "3"]
    assert plan_workers(1, device="cuda", cores=16, gpu_ids=["0", "3"]).envs[0]["CUDA_VISIBLE_DEVICES"] == "0"
    # --device cpu ignores GPUs
    assert not plan_workers(2, device="cpu", cores=4, gpu_ids=["0"]).gpu


@pytest.mark.parametrize(
    ("workers", "device", "gpus", "match"),
    [
        (0, "cpu", [], "--workers must be >= 1"),
        (3, "auto", ["0", "1"], "only 2 GPU"),
        (None, "cuda", [], "no CUDA GPU"),
    ],
)
def test_bad_worker_requests_are_option_errors(workers, device, gpus, match):
    with pytest.raises(OptionError, match=match):
        plan_workers(workers, device=device, cores=4, gpu_ids=gpus)


# --- run summary -------------------------------------------------------------------------------
def test_run_summary_csv_and_json_twin(tmp_path):
    report = BatchReport(out_root=tmp_path, params_hash="abc", wall_seconds=2.5, n_workers=2)
    report.rows = [
        SlideRow("a.tif", "done", 0.75, 12, 1.25, "", "host:1", category="micrometastasis"),
        SlideRow("b.tif", "skipped", 0.5, 3, 0.0, category="none"),
        SlideRow("c.tif", "failed", error="c.tif: not a slide, with a comma"),
    ]
    csv_path, json_path = write_run_summary(report)
    rows = read_run_summary_csv(csv_path)
    assert [r["status"] for r in rows] == ["done", "skipped", "failed"]
    assert rows[0]["slide_score"] == "0.75" and rows[0]["n_tiles_tissue"] == "12"
    assert list(rows[0])[:4] == ["slide", "status", "slide_score", "category"]
    assert [r["category"] for r in rows] == ["micrometastasis", "none", ""]
    assert rows[2]["slide_score"] == "" and rows[2]["error"] == "c.tif: not a slide, with a comma"
    data = json.loads(json_path.read_text())
    assert (data["n_done"], data["n_skipped"], data["n_failed"]) == (1, 1, 1)
    assert [s["slide"] for s in data["slides"]] == ["a.tif", "b.tif", "c.tif"]
    assert data["slides"][2]["slide_score"] is None
    assert report.exit_code == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left
    report.rows = report.rows[:2]
    assert report.exit_code == 0


def test_slide_row_rejects_unknown_status():
    with pytest.raises(ValueError, match="status"):
        SlideRow("a.tif", "interrupted")


def test_one_line_keeps_first_line_only():
    assert one_line(ValueError("first\nsecond")) == "first"
    assert one_line(ValueError()) == "ValueError"


# --- resume ------------------------------------------------------------------------------------
def _fake_output(folder: Path, params_hash: str, slide: Path, missing: str | None = None) -> Path:
    folder.mkdir(parents=True)
    for name in OUTPUT_NAMES:
        if name in (missing, "summary.json", "manifest.json"):
            continue
        if name == "heatmap.zarr":
            (folder / name).mkdir()
            (folder / name / ".zgroup").write_text("{}")
        else:
            (folder / name).write_text("x")
    if missing != "summary.json":
        identity = slide_file_identity(slide) if slide.exists() else None
        summary = sample_summary(params_hash=params_hash, slide_score=0.25, slide_file=identity)
        (folder / "summary.json").write_text(summary.to_json())
    manifest.write(folder)
    return folder


def test_resume_keeps_only_complete_outputs_with_the_same_params(tmp_path):
    out = tmp_path / "out"
    h0, h1 = "0" * 64, "1" * 64
    names = ("same", "other_params", "no_overlay", "no_summary", "bad_json", "new")
    slides = [tmp_path / "slides" / f"{n}.tif" for n in names]
    slides[0].parent.mkdir()
    for slide in slides:
        slide.write_bytes(slide.stem.encode() * 100)
    _fake_output(out / "same", h1, slides[0])
    _fake_output(out / "other_params", h0, slides[1])
    _fake_output(out / "no_overlay", h1, slides[2], missing="overlay.png")
    _fake_output(out / "no_summary", h1, slides[3], missing="summary.json")
    (out / "bad_json").mkdir()
    for name in OUTPUT_NAMES:
        (out / "bad_json" / name).write_text("{not json")
    plan = plan_resume(slides, out, h1)
    assert list(plan.skipped) == [slides[0]]
    assert plan.skipped[slides[0]].slide_score == 0.25
    assert [p.stem for p in plan.todo] == ["other_params", "no_overlay", "no_summary", "bad_json", "new"]
    assert sorted(p.stem for p in plan.redo) == ["bad_json", "no_overlay", "no_summary", "other_params"]
    assert plan.redo[slides[2]] == "overlay.png missing"
    assert plan_resume(slides, out, h1, resume=False).skipped == {}
    assert is_up_to_date(out / "same", "", slide_file_identity(slides[0])) is None  # empty hash: no match
    assert is_up_to_date(out / "same", h1, slide_file_identity(slides[1])) is None  # another slide


def test_clean_stale_temp_removes_only_temp_entries(tmp_path):
    (tmp_path / ".a.tmp-123").mkdir()
    (tmp_path / ".a.tmp-123" / "heatmap.zarr").mkdir()
    (tmp_path / ".b.tmp-old-9").mkdir()
    (tmp_path / ".run_summary.csv.x.tmp").write_text("half")
    (tmp_path / "a").mkdir()
    (tmp_path / "notes.tmp").write_text("kept: not hidden")
    removed = clean_stale_temp(tmp_path)
    assert sorted(p.name for p in removed) == [".a.tmp-123", ".b.tmp-old-9", ".run_summary.csv.x.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "notes.tmp"]
    assert clean_stale_temp(tmp_path / "missing") == []


def test_two_slides_with_one_stem_are_refused(tmp_path):
    check_distinct_slides([Path("x/a.tif"), Path("x/b.tif")])
    with pytest.raises(OptionError, match="same name"):
        check_distinct_slides([Path("x/a.tif"), Path("y/a.svs")])
    with pytest.raises(OptionError, match="no slides"):
        run_batch([], tmp_path / "out")
    with pytest.raises(OptionError, match="--workers"):
        run_batch([tmp_path / "a.tif"], tmp_path / "out", workers=2, scheduler="tcp://127.0.0.1:8786")


def test_one_slide_file_given_twice_is_refused(tmp_path):
    """Issue 11 #3: the same slide twice would run twice at once into one folder."""
    folder = tmp_path / "s"
    folder.mkdir()
    slide = folder / "case.tif"
    slide.write_bytes(b"x")
    (tmp_path / "link.svs").symlink_to(slide)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "case.tif").symlink_to(slide)
    with pytest.raises(OptionError, match=r"case.tif: given twice"):
        check_distinct_slides([slide, Path(f"{folder}/./case.tif")])  # folder + file: two spellings
    with pytest.raises(OptionError, match=r"link.svs: the same file as .*case.tif"):
        check_distinct_slides([slide, tmp_path / "link.svs"])  # another name, same file
    with pytest.raises(OptionError, match="the same file as"):
        check_distinct_slides([slide, tmp_path / "other" / "case.tif"])
    with pytest.raises(OptionError, match="given twice"):
        check_distinct_slides([tmp_path / "missing.tif", tmp_path / "missing.tif"])
    with pytest.raises(OptionError, match="given twice"):
        run_batch([slide, slide], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused up front


def test_device_is_checked_before_any_cluster_starts(tmp_path):
    assert parse_device("cuda:1") == "cuda:1"  # remote GPU workers: syntax only
    assert str(resolve_device("cpu")) == "cpu"
    for bad in ("tpu", "cuda:x", ""):
        with pytest.raises(OptionError, match="--device"):
            parse_device(bad)
    with pytest.raises(OptionError, match="--device"):
        run_batch([tmp_path / "a.tif"], tmp_path / "out", InferenceOptions(device="tpu"))
    assert not (tmp_path / "out").exists()
