"""Headless Chromium (the Debian package) driven by Playwright, for the review-view tests.

Playwright never downloads a browser here: it starts ``/usr/bin/chromium`` (or
``$WSI_PIPELINE_CHROMIUM``) with a fresh profile folder and the flags that keep Chromium off the
network. Tests using :func:`chromium_context` skip with a reason when either is missing.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

CHROMIUM = Path(os.environ.get("WSI_PIPELINE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1200, "height": 800}


@contextmanager
def chromium_context(profile: Path) -> Iterator[Any]:
    """A Playwright browser context of headless Chromium with its own new profile folder."""
    if not CHROMIUM.is_file():
        pytest.skip(
            f"Chromium not installed at {CHROMIUM} (apt-get install chromium, or set WSI_PIPELINE_CHROMIUM)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, viewport=VIEWPORT
        )
        try:
            yield context
        finally:
            context.close()


@dataclass
class Viewer:
    """One loaded review page, with what the page reported."""

    page: Any
    errors: list[str] = field(default_factory=list)
    tiles: list[tuple[str, int]] = field(default_factory=list)  # (url, HTTP status) of tile responses

    def settle(self) -> None:
        """Wait until all tiles of the view are loaded, nothing moves, and a frame is drawn."""
        self.page.evaluate("wsiViewer.settled()")

    def js(self, expression: str, arg: Any = None) -> Any:
        return self.page.evaluate(expression, arg)

    def screenshot(self) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(self.page.screenshot())).convert("RGB")).astype(np.int16)

    def stage(self, shot: np.ndarray) -> np.ndarray:
        """The part of a screenshot showing the slide (not the side panel)."""
        box = self.js("(() => { const r = document.getElementById('osd').getBoundingClientRect();"
                      " return [r.left, r.top, r.right, r.bottom]; })()")  # fmt: skip
        left, top, right, bottom = (round(v) for v in box)
        return shot[top:bottom, left:right]

    def screen_xy(self, x: float, y: float) -> tuple[int, int]:
        """Screenshot pixel (column, row) of level-0 slide point (x, y)."""
        point = self.js("([x, y]) => wsiViewer.slideToPage(x, y)", [x, y])
        return round(point["x"]), round(point["y"])

    def colour(self, shot: np.ndarray, x: float, y: float, radius: int = 2) -> np.ndarray:
        """Mean colour of the screenshot around slide point (x, y)."""
        col, row = self.screen_xy(x, y)
        return (
            shot[row - radius : row + radius + 1, col - radius : col + radius + 1].reshape(-1, 3).mean(axis=0)
        )

    def click(self, selector: str) -> None:
        self.page.click(selector)
        self.settle()


def open_viewer(context: Any, url: str) -> Viewer:
    page = context.new_page()
    viewer = Viewer(page)
    page.on("pageerror", lambda exc: viewer.errors.append(f"page error: {exc}"))
    page.on("console", lambda msg: viewer.errors.append(msg.text) if msg.type == "error" else None)
    page.on("response", lambda r: viewer.tiles.append((r.url, r.status)) if "/tiles/" in r.url else None)
    page.goto(url)
    page.wait_for_function("window.wsiViewer !== undefined", timeout=10_000)
    viewer.settle()
    return viewer


def close_to(colour: np.ndarray, expected: tuple[float, ...] | np.ndarray, tolerance: float) -> bool:
    return bool(
        np.abs(np.asarray(colour, dtype=float) - np.asarray(expected, dtype=float)).max() <= tolerance
    )
