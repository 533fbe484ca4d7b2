"""Hold a slide's task inside Dask worker processes until released, for tests of kills and
interrupts mid-slide.

Slides are regular files (a FIFO is refused at once, :func:`wsi_pipeline.slide.opener.check_slide_file`),
so a test can no longer park a task in ``open()`` on a FIFO. Instead ``client.run(hold_slide, name,
release)`` makes :func:`wsi_pipeline.pipeline.run_slide`'s ``open_slide`` wait, in every worker,
while the file ``release`` does not exist, for slides named ``name``; creating the file lets them
go on (empty file) or fail with a :class:`~wsi_pipeline.errors.SlideOpenError` (file text ``fail``:
an abandoned task then writes nothing). A worker restarted after a kill starts without the hold.
Nothing in the package imports this.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from wsi_pipeline.errors import SlideOpenError

_HELD: dict[str, Path] = {}


def hold_slide(name: str, release: str) -> None:
    """In this process: ``open_slide`` of slides named ``name`` waits until ``release`` exists."""
    import wsi_pipeline.pipeline as pipeline

    original = getattr(pipeline, "_unheld_open_slide", None)
    if original is None:
        original = pipeline.open_slide
        pipeline._unheld_open_slide = original  # type: ignore[attr-defined]

        def open_slide(path: Any) -> Any:
            gate = _HELD.get(Path(path).name)
            while gate is not None and not gate.exists():
                time.sleep(0.02)
            if gate is not None and gate.read_text().strip() == "fail":
                raise SlideOpenError(f"{path}: held by a test and released to fail")
            return original(path)

        pipeline.open_slide = open_slide
    _HELD[name] = Path(release)


def unhold_all() -> None:
    """Undo :func:`hold_slide` in this process."""
    import wsi_pipeline.pipeline as pipeline

    _HELD.clear()
    original = getattr(pipeline, "_unheld_open_slide", None)
    if original is not None:
        pipeline.open_slide = original
        del pipeline._unheld_open_slide  # type: ignore[attr-defined]
