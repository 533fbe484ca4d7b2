"""Inputs that must not hang or mislead: FIFOs, devices and symlink loops as slides, a stride larger
than the tile, a full disk. Real files throughout (``os.mkfifo``, ``/dev/zero``, real links); the
FIFO runs go through real ``wsi-infer`` subprocesses (a hang would be a timeout, not a stuck suite)."""

from __future__ import annotations

import csv
import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from wsi_pipeline.cli import infer as cli_infer
from wsi_pipeline.errors import SlideOpenError
from wsi_pipeline.slide import open_slide
from wsi_pipeline.slide.opener import check_slide_file
from wsi_pipeline.testing import save_probe_model, write_pyramidal_tiff

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory) -> Path:
    return save_probe_model(tmp_path_factory.mktemp("m") / "probe", patch_size=32, mpp=1.0)


def _tissue_slide(path: Path) -> Path:
    image = np.full((256, 256, 3), 255, dtype=np.uint8)
    image[32:224, 32:224] = (200, 40, 120)
    return write_pyramidal_tiff(path, image, mpp=1.0, levels=1)


def _wsi_infer(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(PROJECT), "OMP_NUM_THREADS": "1"}
    env["DASK_DISTRIBUTED__WORKER__PRELOAD"] = '["wsi_pipeline.testing"]'
    code = "import wsi_pipeline.testing; from wsi_pipeline.cli.infer import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_fifo_is_refused_at_once_without_opening_it(tmp_path: Path) -> None:
    fifo = tmp_path / "held.tif"
    os.mkfifo(fifo)
    with pytest.raises(SlideOpenError, match=r"held\.tif: not a regular file \(FIFO"):
        open_slide(fifo)  # before the fix: blocks forever inside open()


def test_fifo_slide_alone_is_one_line_and_exit_1(tmp_path: Path, probe_dir: Path) -> None:
    fifo = tmp_path / "held.tif"
    os.mkfifo(fifo)
    proc = _wsi_infer([str(fifo), "-o", str(tmp_path / "out"), "--model", str(probe_dir), "--device", "cpu"],
                      timeout=120)  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0] == f"error: {fifo}: not a regular file (FIFO); give the slide file itself"


@pytest.mark.slow  # starts a Dask cluster in a subprocess
def test_fifo_slide_in_a_batch_fails_alone_and_the_summary_is_written(
    tmp_path: Path, probe_dir: Path
) -> None:
    slides = tmp_path / "slides"
    slides.mkdir()
    good = _tissue_slide(slides / "good.tif")
    fifo = slides / "held.tif"
    os.mkfifo(fifo)
    out = tmp_path / "out"
    proc = _wsi_infer([str(slides), "-o", str(out), "--model", str(probe_dir), "--device", "cpu",
                       "--workers", "1", "--no-progress"])  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {fifo}: not a regular file (FIFO); give the slide file itself"]
    with open(out / "run_summary.csv", newline="") as fh:
        rows = {Path(r["slide"]).name: r for r in csv.DictReader(fh)}
    assert rows["good.tif"]["status"] == "done" and rows["held.tif"]["status"] == "failed"
    assert (out / "good" / "summary.json").is_file() and not (out / "held").exists()
    assert good.is_file()


def test_character_device_is_not_a_regular_file() -> None:
    with pytest.raises(SlideOpenError, match=r"^/dev/zero: not a regular file \(character device"):
        open_slide("/dev/zero")  # before the fix: "file is empty (0 bytes)"


def test_symlink_loop_is_reported_as_a_loop(tmp_path: Path) -> None:
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    a.symlink_to(b)
    b.symlink_to(a)
    with pytest.raises(SlideOpenError, match=r"a\.tif: symbolic link loop"):
        open_slide(a)  # before the fix: "slide file not found"
    dangling = tmp_path / "gone.tif"
    dangling.symlink_to(tmp_path / "missing.tif")
    with pytest.raises(
        SlideOpenError, match=r"gone\.tif: slide file not found \(broken link to .*missing\.tif\)"
    ):
        open_slide(dangling)


def test_link_to_a_regular_file_is_a_slide(tmp_path: Path) -> None:
    real = _tissue_slide(tmp_path / "real.tif")
    link = tmp_path / "link.tif"
    link.symlink_to(real)
    assert check_slide_file(link).st_size == real.stat().st_size
    with open_slide(link) as reader:
        assert reader.dimensions == (256, 256)


def _run(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["wsi-infer", *args])
    code = 0
    try:
        cli_infer.main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_stride_larger_than_the_tile_is_refused(tmp_path: Path, probe_dir: Path, monkeypatch, capsys) -> None:
    slide = _tissue_slide(tmp_path / "s.tif")
    out = tmp_path / "out"
    code, stdout, err = _run(monkeypatch, capsys, str(slide), "-o", str(out), "--model", str(probe_dir),
                             "--device", "cpu", "--stride", "48")  # fmt: skip
    assert code == 1 and err.strip() == (
        "error: --stride 48 is larger than the model's 32 px tile; tiles would leave gaps (use at most 32)"
    ), err
    assert not (out / "s").exists()
    code, _, err = _run(monkeypatch, capsys, str(slide), "-o", str(out), "--model", str(probe_dir),
                        "--device", "cpu", "--stride", "32", "--no-viewer")  # fmt: skip
    assert code == 0, err


def test_disk_full_while_writing_outputs_is_one_line(
    tmp_path: Path, probe_dir: Path, monkeypatch, capsys
) -> None:
    """ENOSPC from a real output writer (the tiles CSV) in the middle of writing a slide's outputs."""
    from wsi_pipeline.outputs import tiles_csv

    def full(path: Path, *args: object) -> None:
        Path(path).write_bytes(b"id,")  # part of the file made it
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(tiles_csv, "write_tiles_csv", full)
    slide = _tissue_slide(tmp_path / "s.tif")
    out = tmp_path / "out"
    code, stdout, err = _run(monkeypatch, capsys, str(slide), "-o", str(out), "--model", str(probe_dir),
                             "--device", "cpu", "--no-viewer")  # fmt: skip
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1, err
    assert lines[0].startswith(f"error: {slide}: ") and "No space left on device" in lines[0]
    assert "0 of 1 slide(s) done" in stdout
    from wsi_pipeline.outdir import LOCK_NAME

    assert [p.name for p in out.iterdir()] == [LOCK_NAME]  # no slide folder, no temp folder


def _can_mount_tmpfs() -> bool:
    import shutil

    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", "mount -t tmpfs tmpfs /mnt"],
        capture_output=True,
    )
    return probe.returncode == 0


def _on_tiny_tmpfs(folder: Path, size: str, command: str) -> subprocess.CompletedProcess:
    """``command`` run with a ``size`` tmpfs mounted on ``folder`` in a private mount namespace (the
    mount is gone when the command ends)."""
    script = f"mount -t tmpfs -o size={size} tmpfs {folder} && {command}"
    env = {**os.environ, "PYTHONPATH": str(PROJECT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
        capture_output=True, text=True, timeout=240, env=env, cwd=PROJECT,
    )  # fmt: skip


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs unshare + a tmpfs mount in a private namespace")
def test_disk_full_on_a_real_tiny_tmpfs_is_one_line(tmp_path: Path, probe_dir: Path) -> None:
    """A real full disk: ``OUT`` is a 24 KiB tmpfs mounted in a private mount namespace (gone when the
    command ends). Before: ``error: No space left on device`` naming neither slide nor folder."""
    slide = _tissue_slide(tmp_path / "s.tif")
    out = tmp_path / "out"
    out.mkdir()
    infer = (
        f"{sys.executable} -c 'import wsi_pipeline.testing; from wsi_pipeline.cli.infer import main; main()' "
        f"{slide} -o {out} --model {probe_dir} --device cpu --no-viewer"
    )
    proc = _on_tiny_tmpfs(out, "24k", f"{infer}; echo rc=$?; ls -A {out}")
    assert (
        proc.stderr.strip() == f"error: {slide}: cannot write outputs to {out / 's'}: No space left on device"
    )
    stdout = proc.stdout.strip().splitlines()
    # `ls -A` lists only the run's lock file: no slide folder, no temp folder
    assert stdout[-2:] == ["rc=1", ".wsi-pipeline.lock"] and "0 of 1 slide(s) done" in stdout[0]


_ZARR_ON_FULL_DISK = """
import shutil, sys, time
from pathlib import Path
import numpy as np
from wsi_pipeline.outputs import zarr_store
out = Path(sys.argv[1])
data = np.random.default_rng(0).random((512, 512), dtype=np.float32)  # 1 MiB, incompressible
try:
    group = zarr_store.create_group(out / "tmp" / "h.zarr", {})
    zarr_store.write_array(group, "0", data, (32, 32), ("y", "x"))  # 256 chunks
except OSError as exc:
    print("raised", exc.errno == 28)
    shutil.rmtree(out / "tmp")
time.sleep(1.0)  # time for any write still in flight to land
print("left", sorted(p.name for p in out.iterdir()))
"""


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs unshare + a tmpfs mount in a private namespace")
def test_a_failed_zarr_write_leaves_no_write_in_flight(tmp_path: Path) -> None:
    """Reproduces a CI failure: zarr 3 writes an assignment's chunks concurrently and raised on the
    first ENOSPC while the rest went on, recreating the removed temporary folder and logging
    "Future exception was never retrieved". Now the error comes when nothing else is writing."""
    out = tmp_path / "out"
    out.mkdir()
    proc = _on_tiny_tmpfs(out, "64k", f"{sys.executable} -c '{_ZARR_ON_FULL_DISK}' {out}")
    assert proc.stdout.split("\n")[:2] == ["raised True", "left []"], proc.stdout + proc.stderr
    assert proc.stderr.strip() == ""
