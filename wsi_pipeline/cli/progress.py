"""Per-slide tile progress bar of ``wsi-infer`` (stderr, only on a terminal)."""

from __future__ import annotations

from tqdm import tqdm

from wsi_pipeline.cli.common import progress_disable


class TileProgressBar:
    """tqdm bar on stderr created when the number of tissue tiles is known."""

    def __init__(self, name: str, enabled: bool) -> None:
        self.name = name
        self.enabled = enabled
        self.bar: tqdm | None = None

    def update(self, increment: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:  # only on a terminal (tqdm's disable=None)
            self.bar = tqdm(
                total=total,
                desc=self.name,
                unit="tile",
                leave=False,
                dynamic_ncols=True,
                disable=progress_disable(),
            )
        self.bar.update(increment)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
