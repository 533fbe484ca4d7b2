"""One run per output folder: the lock (real second processes) and the owner-aware temp clean-up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wsi_pipeline.errors import OutputError
from wsi_pipeline.files import atomic_output_dir, ensure_writable_dir, write_text_atomic
from wsi_pipeline.outdir import LOCK_NAME, clean_stale_temp, output_folder_lock
from wsi_pipeline.temp_owner import TempOwner, owner_gone, parse_owner

ROOT = Path(__file__).resolve().parents[1]

_HOLDER = """
import sys, time
from pathlib import Path
from wsi_pipeline.files import atomic_output_dir
from wsi_pipeline.outdir import output_folder_lock
out = Path(sys.argv[1])
with output_folder_lock(out):
    with atomic_output_dir(out, "held"):
        print("locked", flush=True)
        sys.stdin.readline()  # hold until told
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _start_holder(out: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def _temp_entries(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if ".tmp" in p.name)


def test_temp_names_record_their_owner(tmp_path):
    with atomic_output_dir(tmp_path, "slide") as tmp:
        owner = parse_owner(tmp.name)
        assert owner == TempOwner.me() and owner.pid == os.getpid()
        assert not owner_gone(tmp.name)
        assert clean_stale_temp(tmp_path) == [] and tmp.is_dir()  # a live run's folder stays
    write_text_atomic(tmp_path / "a.csv", "x\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "slide"]


def test_clean_removes_only_entries_whose_owner_is_gone(tmp_path):
    me = TempOwner.me()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    names = {
        "live": f".a.tmp-{me.tag()}.abc123",
        "dead": f".b.tmp-{dead_pid}-{me.start}-{me.host}.abc123",
        "reused": f".c.tmp-old-{me.pid}-{me.start + 1}-{me.host}.abc123",  # our pid, other start
        "remote": f".d.tmp-{dead_pid}-5-some-other-host.abc123",
        "legacy": ".e.tmp-123",
        "file_dead": f".run_summary.csv.tmp-{dead_pid}-0-{me.host}.x1y2",
    }
    for key, name in names.items():
        if key.startswith("file"):
            (tmp_path / name).write_text("half")
        else:
            (tmp_path / name).mkdir()
            (tmp_path / name / "tiles.csv").write_text("row,col\n1,")
    (tmp_path / "a").mkdir()
    (tmp_path / LOCK_NAME).write_text("")
    removed = {p.name for p in clean_stale_temp(tmp_path)}
    assert removed == {names[k] for k in ("dead", "reused", "legacy", "file_dead")}
    assert _temp_entries(tmp_path) == sorted([names["live"], names["remote"]])
    assert (tmp_path / "a").is_dir() and (tmp_path / LOCK_NAME).exists()


def test_second_run_on_one_folder_is_refused_while_the_first_holds_it(tmp_path):
    """Issue 11 #3, with a real second process holding the lock and a live temp folder."""
    out = tmp_path / "R"
    holder = _start_holder(out)
    try:
        busy = rf"output folder in use by another run \(pid {holder.pid} on "
        with pytest.raises(OutputError, match=busy), output_folder_lock(out):
            pass
        # the holder's temp folder is alive: a clean-up (even one that got the lock) keeps it
        (held,) = _temp_entries(out)
        assert clean_stale_temp(out) == [] and _temp_entries(out) == [held]
    finally:
        holder.communicate("go\n", timeout=30)
    assert holder.returncode == 0
    with output_folder_lock(out) as locked:  # released when the holder ended
        assert locked == out
        assert f"pid {os.getpid()}" in _holder_text(out)


def _holder_text(out: Path) -> str:
    import json

    info = json.loads((out / LOCK_NAME).read_text())
    return f"pid {info['pid']} on {info['host']}"


def test_wait_blocks_until_the_other_run_ends(tmp_path):
    out = tmp_path / "R"
    holder = _start_holder(out)
    lines: list[str] = []
    released = []

    def release() -> None:
        time.sleep(0.5)
        released.append(time.monotonic())
        holder.stdin.write("go\n")
        holder.stdin.flush()

    import threading

    thread = threading.Thread(target=release)
    thread.start()
    with output_folder_lock(out, wait=True, echo=lines.append):
        got = time.monotonic()
    thread.join()
    holder.wait(timeout=30)
    assert released and got >= released[0]
    assert len(lines) == 1 and lines[0].startswith(f"Waiting for the other run on {out}")


def test_killed_holder_leaves_neither_lock_nor_temp_behind(tmp_path):
    out = tmp_path / "R"
    holder = _start_holder(out)
    (held,) = _temp_entries(out)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    with output_folder_lock(out):  # the kernel dropped the dead process's lock
        assert [p.name for p in clean_stale_temp(out)] == [held]
    assert _temp_entries(out) == []


def test_output_folder_that_cannot_be_written_is_one_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot create output folder"):
        ensure_writable_dir(blocker / "out")
    with pytest.raises(OutputError, match="cannot create output folder"), output_folder_lock(blocker):
        pass
    assert ensure_writable_dir(tmp_path / "new" / "out").is_dir()
    assert list((tmp_path / "new" / "out").iterdir()) == []  # the probe file is gone


def test_a_long_slide_name_still_gets_a_temp_folder_with_its_owner(tmp_path):
    name = "x" * 250  # a valid folder name; with the owner tag it would pass the 255-byte limit
    with atomic_output_dir(tmp_path, name) as tmp:
        assert len(tmp.name.encode()) <= 255 and parse_owner(tmp.name) == TempOwner.me()
        (tmp / "a").write_text("x")
    assert (tmp_path / name / "a").is_file()
