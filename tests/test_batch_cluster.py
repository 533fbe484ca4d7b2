"""Batch runs on a real Dask LocalCluster of 2 worker processes with real slides and a real model.

One cluster is shared by the module (tests connect to it through ``scheduler=``), so the
process start-up cost is paid once. Slides are small pyramidal TIFFs written with tifffile;
the model is the deterministic ``mean_intensity_probe`` saved with ``save_model``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from wsi_pipeline.batch.cluster import TORCH_THREADS_ENV, plan_workers, start_local_cluster
from wsi_pipeline.batch.report import read_run_summary_csv
from wsi_pipeline.batch.runner import run_batch
from wsi_pipeline.errors import OptionError
from wsi_pipeline.models import load_model
from wsi_pipeline.options import InferenceOptions
from wsi_pipeline.outputs import OUTPUT_FILES, read_heatmap_zarr
from wsi_pipeline.pipeline import run_slide
from wsi_pipeline.testing import save_probe_model, write_pyramidal_tiff

GOOD = ("alpha", "bravo", "charlie")
OPTIONS = InferenceOptions(device="cpu", batch_size=64, num_readers=1)


def tissue_image(seed: int, size: int = 512) -> np.ndarray:
    """White glass with one elliptic pink/purple 'tissue' region whose texture depends on ``seed``."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), 245, np.uint8)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    blob = ((yy - size / 2) / (size * 0.42)) ** 2 + ((xx - size / 2) / (size * 0.38)) ** 2 < 1
    mix = ((np.sin(xx / (17.0 + 6 * seed)) * np.cos(yy / 29.0) + 1) / 2)[..., None]
    colour = np.array([225, 140, 185]) * mix + np.array([120, 70, 165]) * (1 - mix)
    colour += rng.normal(0, 8, colour.shape)
    img[blob] = np.clip(colour[blob], 0, 255).astype(np.uint8)
    return img


def _echo_to(lines: list[str]):
    return lines.append


def _heatmap(out_root: Path, stem: str) -> np.ndarray:
    return read_heatmap_zarr(out_root / stem / "heatmap.zarr")[0]


def _summary(out_root: Path, stem: str) -> dict:
    return json.loads((out_root / stem / "summary.json").read_text())


def _temp_entries(out_root: Path) -> list[str]:
    return [p.name for p in out_root.iterdir() if ".tmp" in p.name]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Three good slides + one broken file, the probe model, and serial reference outputs."""
    root = tmp_path_factory.mktemp("batch")
    slide_dir = root / "slides"
    slide_dir.mkdir()
    good = [
        write_pyramidal_tiff(slide_dir / f"{name}.tif", tissue_image(i), mpp=1.0)
        for i, name in enumerate(GOOD)
    ]
    broken = slide_dir / "broken.tif"
    broken.write_text("this is not a TIFF file\n")
    model_dir = save_probe_model(root / "model", patch_size=32, mpp=1.0)
    serial_out = root / "serial"
    model = load_model(model_dir)
    for slide in good:
        run_slide(slide, serial_out, OPTIONS, model)
    return {"root": root, "good": good, "broken": broken, "model": model_dir, "serial": serial_out}


@pytest.fixture(scope="module")
def cluster():
    """A real LocalCluster of 2 worker processes, started by our own start-up code."""
    from distributed import Client

    plan = plan_workers(2, device="cpu")
    local = start_local_cluster(plan, allowed_failures=3)
    client = Client(local)
    client.wait_for_workers(2, timeout=90)
    yield {"address": local.scheduler_address, "client": client, "plan": plan}
    client.close()
    local.close()


def test_workers_are_separate_processes_with_thread_settings(cluster):
    client = cluster["client"]
    info = client.run(
        lambda: (os.getpid(), os.environ.get(TORCH_THREADS_ENV), os.environ.get("CUDA_VISIBLE_DEVICES"))
    )
    pids = {v[0] for v in info.values()}
    assert len(pids) == 2 and os.getpid() not in pids
    assert {v[1:] for v in info.values()} == {(str(cluster["plan"].torch_threads), "")}


@pytest.mark.slow  # first use of the workers: imports torch & co in both processes
def test_batch_matches_serial_and_records_the_broken_slide(data, cluster, tmp_path):
    out = tmp_path / "out"
    lines: list[str] = []
    errors: list[str] = []
    slides = [*data["good"], data["broken"]]
    report = run_batch(
        slides,
        out,
        OPTIONS,
        data["model"],
        scheduler=cluster["address"],
        progress=False,
        echo=_echo_to(lines),
        echo_err=_echo_to(errors),
    )
    assert (report.n_done, report.n_skipped, report.n_failed, report.exit_code) == (3, 0, 1, 1)
    assert report.n_workers == 2
    for slide in data["good"]:
        np.testing.assert_array_equal(_heatmap(out, slide.stem), _heatmap(data["serial"], slide.stem))
        row = report.row(slide)
        assert row.slide_score == pytest.approx(_summary(data["serial"], slide.stem)["slide_score"])
        assert row.n_tiles_tissue == _summary(data["serial"], slide.stem)["n_tiles_tissue"] > 0
    failed = report.row(data["broken"])
    assert "broken.tif" in failed.error and "\n" not in failed.error
    assert not (out / "broken").exists()
    rows = read_run_summary_csv(out / "run_summary.csv")
    assert [(r["slide"], r["status"]) for r in rows] == [(str(s), "done") for s in data["good"]] + [
        (str(data["broken"]), "failed")
    ]
    twin = json.loads((out / "run_summary.json").read_text())
    assert [s["status"] for s in twin["slides"]] == ["done", "done", "done", "failed"]
    assert twin["n_failed"] == 1
    assert _temp_entries(out) == []
    assert len(errors) == 1 and errors[0].startswith(f"error: {data['broken']}")
    assert any("3 done, 0 skipped, 1 failed" in line for line in lines)


def test_interrupted_run_resumes_to_a_complete_result(data, cluster, tmp_path):
    out = tmp_path / "out"
    first, second, third = data["good"]
    # A run that got through two slides before being stopped ...
    run_batch(
        [first, second],
        out,
        OPTIONS,
        data["model"],
        scheduler=cluster["address"],
        progress=False,
        echo=_echo_to([]),
    )
    # ... leaving a half-written temp folder for the third and an incomplete folder.
    (out / f".{third.stem}.tmp-killed").mkdir()
    (out / f".{third.stem}.tmp-killed" / "tiles.csv").write_text("row,col\n1,")
    shutil.copytree(out / first.stem, out / third.stem)
    (out / third.stem / "overlay.png").unlink()
    mtime_first = (out / first.stem / "summary.json").stat().st_mtime_ns

    lines: list[str] = []
    report = run_batch(
        data["good"],
        out,
        OPTIONS,
        data["model"],
        scheduler=cluster["address"],
        progress=False,
        echo=_echo_to(lines),
    )
    assert [report.row(s).status for s in data["good"]] == ["skipped", "skipped", "done"]
    assert report.exit_code == 0 and report.stale_removed == 1
    assert any("Skipped 2 slide(s)" in line for line in lines)
    assert (out / first.stem / "summary.json").stat().st_mtime_ns == mtime_first  # not redone
    assert report.row(first).slide_score == pytest.approx(_summary(data["serial"], first.stem)["slide_score"])
    for slide in data["good"]:
        np.testing.assert_array_equal(_heatmap(out, slide.stem), _heatmap(data["serial"], slide.stem))
    assert _temp_entries(out) == []

    # A result-changing option (stride) makes resume redo the slide ...
    changed = InferenceOptions(device="cpu", batch_size=64, num_readers=1, stride=16)
    kwargs = {"scheduler": cluster["address"], "progress": False, "echo": _echo_to([])}
    report2 = run_batch([first, second], out, changed, data["model"], **kwargs)
    assert [r.status for r in report2.rows] == ["done", "done"]
    assert report2.params_hash != report.params_hash
    assert _summary(out, first.stem)["params_hash"] == report2.params_hash
    assert _summary(out, third.stem)["params_hash"] == report.params_hash
    assert _heatmap(out, first.stem).shape != _heatmap(data["serial"], first.stem).shape
    # ... while device, batch size and reader threads do not change results: still skipped.
    same = InferenceOptions(device="cpu", batch_size=8, num_readers=2, stride=16)
    report3 = run_batch([first, second], out, same, data["model"], **kwargs)
    assert [r.status for r in report3.rows] == ["skipped"] * 2


def _executing(dask_worker) -> tuple[int, list[str]]:
    return os.getpid(), [str(ts.key) for ts in dask_worker.state.executing]


@contextlib.contextmanager
def _held_slide(client, folder: Path, source: Path):
    """A copy of ``source`` named held.tif whose task waits in every worker until released
    (:mod:`wsi_pipeline.testing.hold`; a FIFO is refused as a slide). Yields the slide and
    ``release(fail)``; on exit a task still waiting is released to fail (so an abandoned task writes
    nothing) and awaited, and the hold is removed."""
    from wsi_pipeline.testing.hold import hold_slide, unhold_all

    held = folder / "held.tif"
    shutil.copy(source, held)
    gate = folder.parent / "release-held"
    client.run(hold_slide, held.name, str(gate))

    def release(fail: bool = False) -> None:
        if not gate.exists():
            gate.write_text("fail" if fail else "")

    try:
        yield held, release
    finally:
        release(fail=True)
        deadline = time.monotonic() + 60
        while any(any("-held-" in k for k in keys) for _, keys in client.run(_executing).values()):
            assert time.monotonic() < deadline, "a held task never ended"
            time.sleep(0.05)
        client.run(unhold_all)


@pytest.mark.slow  # includes the restart of a worker process
def test_killed_worker_mid_slide_is_retried_elsewhere(data, cluster, tmp_path):
    """SIGKILL the worker process that is in the middle of a slide; the slide is rerun elsewhere."""
    client = cluster["client"]
    slide_dir = tmp_path / "slides"
    slide_dir.mkdir()
    stack = contextlib.ExitStack()
    held, release = stack.enter_context(_held_slide(client, slide_dir, data["good"][0]))
    slides = [held]
    for src in data["good"]:
        slides.append(slide_dir / f"{src.stem}_copy.tif")
        shutil.copy(src, slides[-1])
    killed: dict = {}

    def killer() -> None:
        # The task for held.tif waits before opening the slide; once a worker is seen executing it,
        # kill that worker for real, then release the hold (the rerun elsewhere goes on).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for pid, keys in client.run(_executing).values():
                key = next((k for k in keys if "-held-" in k), None)
                if key:
                    os.kill(pid, signal.SIGKILL)
                    killed.update(pid=pid, key=key)
                    release()  # the rerun on another worker goes on
                    return
            time.sleep(0.02)
        release()  # never seen: do not leave the run hanging

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    out = tmp_path / "out"
    with stack:
        report = run_batch(
            slides,
            out,
            OPTIONS,
            data["model"],
            scheduler=cluster["address"],
            progress=False,
            echo=_echo_to([]),
        )
    thread.join(timeout=5)
    assert killed, "no worker was seen running held.tif"
    with pytest.raises(ProcessLookupError):
        os.kill(killed["pid"], 0)
    assert (report.n_done, report.n_failed) == (4, 0), report.rows
    assert not report.row(held).worker.endswith(f":{killed['pid']}")  # rerun by another process
    np.testing.assert_array_equal(_heatmap(out, "held"), _heatmap(data["serial"], data["good"][0].stem))
    for src in data["good"]:
        np.testing.assert_array_equal(_heatmap(out, f"{src.stem}_copy"), _heatmap(data["serial"], src.stem))
    assert _temp_entries(out) == []
    client.wait_for_workers(2, timeout=60)  # the nanny restarted the killed worker


_CLIENT_SCRIPT = """
import sys
import wsi_pipeline.testing  # registers the probe architecture of the saved model
from wsi_pipeline.batch.runner import run_batch
from wsi_pipeline.options import InferenceOptions
opts = InferenceOptions(device="cpu", batch_size=64, num_readers=1)
run_batch(sys.argv[4:], sys.argv[1], opts, sys.argv[2], scheduler=sys.argv[3], progress=False)
"""


@pytest.mark.slow  # starts a client process
def test_ctrl_c_leaves_nothing_that_looks_complete_and_resume_finishes(data, cluster, tmp_path):
    slide_dir = tmp_path / "slides"
    slide_dir.mkdir()
    hold = _held_slide(cluster["client"], slide_dir, data["good"][1])
    held, _ = hold.__enter__()
    slides = [*data["good"], held]
    out = tmp_path / "out"
    args = [str(out), str(data["model"]), cluster["address"], *map(str, slides)]
    proc = subprocess.Popen(
        [sys.executable, "-c", _CLIENT_SCRIPT, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not all((out / s.stem / "summary.json").exists() for s in data["good"]):
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "good slides never finished"
            time.sleep(0.05)
        assert proc.poll() is None  # still waiting for held.tif
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        output = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
        hold.__exit__(None, None, None)  # the abandoned held.tif task fails, writing nothing
    assert proc.returncode != 0 and "KeyboardInterrupt" in output
    assert not (out / "held").exists() and not (out / "run_summary.csv").exists()
    for entry in out.iterdir():  # whatever looks like a slide folder is complete
        if not entry.name.startswith("."):
            assert sorted(p.name for p in entry.iterdir()) == sorted(OUTPUT_FILES)

    lines: list[str] = []
    report = run_batch(
        slides,
        out,
        OPTIONS,
        data["model"],
        scheduler=cluster["address"],
        progress=False,
        echo=_echo_to(lines),
    )
    assert [r.status for r in report.rows] == ["skipped", "skipped", "skipped", "done"]
    assert any("Skipped 3 slide(s)" in line for line in lines)
    np.testing.assert_array_equal(_heatmap(out, "held"), _heatmap(data["serial"], data["good"][1].stem))
    assert _temp_entries(out) == []


def test_unreachable_scheduler_is_an_option_error(data, tmp_path):
    with pytest.raises(OptionError, match="cannot connect"):
        run_batch(
            data["good"][:1],
            tmp_path / "out",
            OPTIONS,
            data["model"],
            scheduler="tcp://127.0.0.1:9",
            connect_timeout=2,
            progress=False,
            echo=_echo_to([]),
        )


def test_cli_sends_a_folder_to_the_dask_cluster(data, cluster, tmp_path):
    from click.testing import CliRunner

    from wsi_pipeline.cli.infer import cli

    out = tmp_path / "out"
    args = [str(data["good"][0].parent), "-o", str(out), "--model", str(data["model"]), "--device", "cpu"]
    result = CliRunner().invoke(cli, [*args, "--scheduler", cluster["address"], "--no-progress"])
    assert result.exit_code == 1  # broken.tif is in the folder
    assert f"Connected to Dask scheduler {cluster['address']}" in result.stdout
    assert "3 of 4 slide(s) done" in result.stdout and "1 failed" in result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "broken.tif" in errors[0]
    rows = read_run_summary_csv(out / "run_summary.csv")
    assert sorted((Path(r["slide"]).name, r["status"]) for r in rows) == [
        ("alpha.tif", "done"),
        ("bravo.tif", "done"),
        ("broken.tif", "failed"),
        ("charlie.tif", "done"),
    ]
    for slide in data["good"]:
        np.testing.assert_array_equal(_heatmap(out, slide.stem), _heatmap(data["serial"], slide.stem))
    # Second run: everything good is skipped.
    result = CliRunner().invoke(cli, [*args, "--scheduler", cluster["address"], "--no-progress"])
    assert "Skipped 3 slide(s)" in result.stdout and result.exit_code == 1


def test_cli_single_slide_stays_in_process(data, tmp_path):
    from click.testing import CliRunner

    from wsi_pipeline.cli.infer import cli, use_dask_batch

    out = tmp_path / "out"
    result = CliRunner().invoke(cli, [str(data["good"][0]), "-o", str(out), "--model", str(data["model"])])
    assert result.exit_code == 0, result.output
    assert "Dask" not in result.output and not (out / "run_summary.csv").exists()
    one, folder = [data["good"][0]], data["good"][0].parent
    assert not use_dask_batch(one, one, workers=None, scheduler=None)
    assert use_dask_batch(one, one, workers=1, scheduler=None)
    assert use_dask_batch(one, one, workers=None, scheduler="tcp://h:8786")
    assert use_dask_batch([folder], one, workers=None, scheduler=None)
    assert use_dask_batch(data["good"], data["good"], workers=None, scheduler=None)


def test_other_slide_with_the_same_name_or_a_damaged_result_is_redone(data, cluster, tmp_path):
    """Issue 11 #1 and #4: ``wsi-infer s1 -o R; wsi-infer s2 -o R`` (a different case.tif in each)
    redoes case from s2; then an emptied Zarr chunk or a 0-byte overlay.png is redone, not skipped."""
    from click.testing import CliRunner

    from wsi_pipeline.cli.infer import cli

    out = tmp_path / "R"
    for name, source in (("s1", data["good"][0]), ("s2", data["good"][1])):
        (tmp_path / name).mkdir()
        shutil.copy(source, tmp_path / name / "case.tif")
    common = [
        "-o",
        str(out),
        "--model",
        str(data["model"]),
        "--scheduler",
        cluster["address"],
        "--no-progress",
    ]
    common += ["--num-readers", "1", "--batch-size", "64"]

    def run(folder: str) -> tuple[str, list[dict]]:
        result = CliRunner().invoke(cli, [str(tmp_path / folder), *common])
        assert result.exit_code == 0, result.output
        return result.stdout, read_run_summary_csv(out / "run_summary.csv")

    run("s1")
    bravo = _summary(data["serial"], "bravo")
    stdout, rows = run("s2")
    assert rows[0]["status"] == "done" and "made from another or a changed slide file" in stdout
    assert float(rows[0]["slide_score"]) == pytest.approx(bravo["slide_score"])
    assert int(rows[0]["n_tiles_tissue"]) == bravo["n_tiles_tissue"]
    assert _summary(out, "case")["slide_file"]["path"] == str((tmp_path / "s2" / "case.tif").resolve())
    np.testing.assert_array_equal(_heatmap(out, "case"), _heatmap(data["serial"], "bravo"))
    assert run("s2")[1][0]["status"] == "skipped"

    (out / "case" / "heatmap.zarr" / "0" / "0.0").write_bytes(b"")  # a real emptied chunk
    stdout, rows = run("s2")
    assert rows[0]["status"] == "done" and "heatmap.zarr/0/0.0 is 0 bytes" in stdout
    np.testing.assert_array_equal(_heatmap(out, "case"), _heatmap(data["serial"], "bravo"))
    (out / "case" / "overlay.png").write_bytes(b"")
    assert run("s2")[1][0]["status"] == "done"
    assert (out / "case" / "overlay.png").stat().st_size > 0
    assert _temp_entries(out) == []


def test_batch_keeps_a_live_writers_temp_folder(data, cluster, tmp_path):
    """Issue 11 #3: a batch's clean-up used to delete every temp folder in OUT, a live writer's too
    (which then failed with FileNotFoundError). A live process's temp folder now survives the run."""
    out = tmp_path / "R"
    writer_code = (
        "import sys; from wsi_pipeline.files import atomic_output_dir\n"
        "with atomic_output_dir(sys.argv[1], 'zulu') as tmp:\n"
        "    (tmp / 'tiles.csv').write_text('row,col\\n')\n"
        "    print('writing', flush=True); sys.stdin.readline()\n"
        "    (tmp / 'tumor.geojson').write_text('{}')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    writer = subprocess.Popen(
        [sys.executable, "-c", writer_code, str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert writer.stdout.readline().strip() == "writing"
        (live,) = _temp_entries(out)
        kwargs = {"scheduler": cluster["address"], "progress": False, "echo": _echo_to([])}
        report = run_batch(data["good"][:1], out, OPTIONS, data["model"], **kwargs)
        assert report.stale_removed == 0 and [r.status for r in report.rows] == ["done"]
        assert _temp_entries(out) == [live]
    finally:
        writer.communicate("go\n", timeout=30)
    assert writer.returncode == 0
    assert sorted(p.name for p in (out / "zulu").iterdir()) == ["tiles.csv", "tumor.geojson"]
    assert _temp_entries(out) == []
