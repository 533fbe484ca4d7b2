"""Tile inference engine: large block reads in background threads -> batched model calls.

The engine knows nothing about slides. It scores a set of grid cells ``(row, col)`` of a
regular tile grid (tile side ``tile_px``, step ``stride_px``, both in model pixels) and gets
its pixels from ``read_block(row0, col0, n_rows, n_cols)``, which returns the uint8 RGB
array at the model's um/px covering those tiles: shape
``((n_rows - 1) * stride + tile, (n_cols - 1) * stride + tile, 3)``.

Reading happens in ``num_readers`` threads, one block of up to ``block_tiles x block_tiles``
tiles per read (:func:`plan_blocks`); tiles are cut from the block as array
views and copied straight into the (pinned, on CUDA) batch buffer (:mod:`.batches`). A bounded
queue between readers and the model keeps peak memory at a few blocks plus one or two batches,
whatever the slide size.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from wsi_pipeline.errors import OptionError
from wsi_pipeline.inference.autoprecision import engine_precision, probe_input
from wsi_pipeline.inference.batches import BatchRunner
from wsi_pipeline.inference.dense import DensePlan, DenseRunner, choose_dense
from wsi_pipeline.inference.frozen import Forward, frozen_forward
from wsi_pipeline.inference.fusion import inference_module
from wsi_pipeline.inference.heap import TRIM_EVERY_BLOCKS, release_free_memory
from wsi_pipeline.inference.scores import InferenceStats, TileScores
from wsi_pipeline.inference.tta import D4Average
from wsi_pipeline.models.io import LoadedModel
from wsi_pipeline.precision import Precision
from wsi_pipeline.tiling import Block

BlockReader = Callable[[int, int, int, int], np.ndarray]
ProgressFn = Callable[[int], None]

#: Target side (model px) of one block read; 16 tiles of 96 px at the default stride.
DEFAULT_BLOCK_PX = 1536
#: When the engine runs a frozen graph (CPU). Measured in four runs of benchmarks/dense_speed.py:
#: 32-tile batches 0.57-0.77x of eager end to end (though equal when timed alone), dense passes
#: 0.89-1.32x, so by default the engine runs the eager module.
FREEZE_MODES = ("never", "dense", "always")


@dataclass
class _BlockPixels:
    block: Block
    pixels: np.ndarray


@dataclass
class _Failure:
    error: BaseException


_DONE = object()


@dataclass
class _ReadTimes:
    """Seconds spent by reader threads (``read_s``, summed) and waiting for them (``wait_s``)."""

    read_s: float = 0.0
    wait_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


def plan_blocks(cells: np.ndarray, block_tiles: int) -> list[Block]:
    """Group cells into blocks of at most ``block_tiles`` x ``block_tiles`` grid cells, each
    shrunk to the bounding box of its cells (row-major order)."""
    cells = np.asarray(cells, dtype=np.int64).reshape(-1, 2)
    if len(cells) == 0:
        return []
    keys = (cells[:, 0] // block_tiles) * (int(cells[:, 1].max()) // block_tiles + 1) + (
        cells[:, 1] // block_tiles
    )
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    ends = np.r_[starts[1:], len(order)]
    blocks = []
    for start, end in zip(starts, ends, strict=True):
        index = order[start:end]
        rows, cols = cells[index, 0], cells[index, 1]
        r0, c0 = int(rows.min()), int(cols.min())
        blocks.append(Block(r0, c0, int(rows.max()) - r0 + 1, int(cols.max()) - c0 + 1, index))
    return blocks


@dataclass
class TileInference:
    """Scores grid cells with a model; see the module docstring for the data flow."""

    model: LoadedModel
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_size: int = 256
    num_readers: int = 2
    block_tiles: int | None = None  # None: about DEFAULT_BLOCK_PX per side
    precision: str = "fp32"  # "auto" | "fp32" | "bf16" (see .autoprecision)
    dense: str = "auto"  # "auto" | "on" | "off" (see .dense)
    freeze: str = "never"  # CPU frozen graph (.frozen): "never" (no faster), "dense", "always"
    tta: bool = False  # mean of the 8 dihedral views per tile (.tta; tile by tile, 8x the cost)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise OptionError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.num_readers < 1:
            raise OptionError(f"num_readers must be >= 1, got {self.num_readers}")
        if self.freeze not in FREEZE_MODES:
            raise OptionError(f"freeze must be one of {FREEZE_MODES}, got {self.freeze!r}")

    def run(
        self,
        cells: np.ndarray,
        read_block: BlockReader,
        tile_px: int,
        stride_px: int,
        progress: ProgressFn | None = None,
    ) -> TileScores:
        """The tumour probability of each of ``cells`` (float32, aligned with them) and timings."""
        cells = np.asarray(cells, dtype=np.int64).reshape(-1, 2)
        probs = np.full(len(cells), np.nan, dtype=np.float32)
        plan = None if self.tta else choose_dense(self.model, tile_px, stride_px, self.dense)
        if len(cells) == 0:
            return TileScores(cells, probs, InferenceStats(device=str(self.device)))
        t_start = time.perf_counter()
        k = self.block_tiles or max(1, round(DEFAULT_BLOCK_PX / stride_px))
        blocks = plan_blocks(cells, k)
        self.model.module.to(self.device)
        module = inference_module(self.model.module)
        if self.tta:
            module = D4Average(module, self.model.config.temperature)
        times = _ReadTimes()
        precision: Precision | None = None
        batches: BatchRunner | None = None
        dense: DenseRunner | None = None
        frozen = False
        reads = self._read_in_background(blocks, read_block, tile_px, stride_px, times)
        for n_done, block_pixels in enumerate(reads, start=1):
            block = block_pixels.block
            rows = cells[block.index, 0] - block.row0
            cols = cells[block.index, 1] - block.col0
            if precision is None:  # decided on the first block's pixels (cached per process)
                example = probe_input(self.model, plan, block_pixels.pixels, tile_px, stride_px, self.device)
                precision = self._precision(module, plan, example)
                autocast = precision.autocast(self.device)
                forward: Forward = module.dense if plan is not None else module  # type: ignore[assignment]
                if self.freeze == "always" or (self.freeze == "dense" and plan is not None):
                    forward, frozen = frozen_forward(
                        module, example, plan is not None, autocast, precision.dtype is not None
                    )
                if plan is None:
                    batches = BatchRunner(
                        self.model, forward, self.device, self.batch_size, tile_px, precision.dtype
                    )
                else:
                    dense = DenseRunner(self.model, forward, plan, autocast)
            if dense is not None:
                probs[block.index] = dense.score(block_pixels.pixels, rows, cols)
            else:
                assert batches is not None
                windows = tile_views(block_pixels.pixels, tile_px, stride_px)
                batches.add(windows, rows, cols, block.index)
            if progress is not None:
                progress(len(block.index))
            if n_done % TRIM_EVERY_BLOCKS == 0:
                release_free_memory()  # keeps PSS flat over long slides (see .heap)
        if batches is not None:
            for index, values in batches.finish():
                probs[index] = values
        precision = precision or Precision(None, "no tiles")
        stats = InferenceStats(
            read_s=times.read_s,
            infer_s=batches.infer_s if batches else dense.infer_s if dense else 0.0,
            wait_s=times.wait_s,
            total_s=time.perf_counter() - t_start,
            n_blocks=len(blocks),
            n_batches=batches.n_batches if batches else dense.n_passes if dense else 0,
            device=str(self.device),
            precision=precision.name,
            precision_reason=precision.reason,
            mode=("tiles x8 views" if self.tta else "tiles") if plan is None else f"dense x{plan.n_shifts}",
            frozen=frozen,
        )
        return TileScores(cells, probs, stats)

    def _precision(self, module: torch.nn.Module, plan: DensePlan | None, example: torch.Tensor) -> Precision:
        """:func:`engine_precision` probed on ``example``."""
        model = self.model
        forward = module.dense if plan is not None else module
        key = (model.weights_sha256, str(model.path), plan is not None, self.precision)
        run = (self.precision, self.device, key, forward)
        return engine_precision(*run, lambda: example, model.probability)  # type: ignore[arg-type]

    def _read_in_background(
        self,
        blocks: list[Block],
        read_block: BlockReader,
        tile_px: int,
        stride_px: int,
        times: _ReadTimes,
    ) -> Iterator[_BlockPixels]:
        """Yield blocks in plan order (so batch composition, hence every value, is the same whatever
        the number of readers and their timing), read ahead by the reader threads; re-raise the first
        reader error. At most ``2 * threads`` blocks are read ahead of the consumer."""
        jobs: queue.SimpleQueue[tuple[int, Block]] = queue.SimpleQueue()
        for job in enumerate(blocks):
            jobs.put(job)
        n_threads = min(self.num_readers, len(blocks))
        ahead = max(2, 2 * n_threads)
        slots = threading.Semaphore(ahead)  # blocks taken by readers and not yet consumed
        results: queue.Queue[object] = queue.Queue(maxsize=ahead + n_threads)
        stop = threading.Event()

        def put(item: object) -> bool:
            while not stop.is_set():
                try:
                    results.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def reader() -> None:
            try:
                while not stop.is_set():
                    if not slots.acquire(timeout=0.1):
                        continue
                    try:
                        number, block = jobs.get_nowait()
                    except queue.Empty:
                        break
                    t0 = time.perf_counter()
                    pixels = read_block(block.row0, block.col0, block.n_rows, block.n_cols)
                    pixels = _check_block(pixels, block, tile_px, stride_px)
                    with times.lock:
                        times.read_s += time.perf_counter() - t0
                    if not put((number, _BlockPixels(block, pixels))):
                        return
            except BaseException as exc:  # handed to the consumer, which re-raises it
                put(_Failure(exc))
            finally:
                put(_DONE)

        threads = [
            threading.Thread(target=reader, name=f"wsi-reader-{i}", daemon=True) for i in range(n_threads)
        ]
        for thread in threads:
            thread.start()
        finished, next_number = 0, 0
        pending: dict[int, _BlockPixels] = {}
        try:
            while next_number < len(blocks):
                if next_number in pending:
                    yield pending.pop(next_number)
                    next_number += 1
                    slots.release()
                    continue
                if finished == n_threads:
                    raise RuntimeError(f"block {next_number} of {len(blocks)} was never read")
                t0 = time.perf_counter()
                item = results.get()
                times.wait_s += time.perf_counter() - t0
                if item is _DONE:
                    finished += 1
                elif isinstance(item, _Failure):
                    raise item.error
                else:
                    assert isinstance(item, tuple)
                    pending[int(item[0])] = item[1]
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)


def tile_views(pixels: np.ndarray, tile_px: int, stride_px: int) -> np.ndarray:
    """All grid tiles of a block as views: ``(n_rows, n_cols, tile, tile, 3)`` without copying."""
    return sliding_window_view(pixels, (tile_px, tile_px, 3))[::stride_px, ::stride_px, 0]


def _check_block(pixels: np.ndarray, block: Block, tile_px: int, stride_px: int) -> np.ndarray:
    """Blocks must be uint8 RGB and at least as large as their tiles need."""
    need_h = (block.n_rows - 1) * stride_px + tile_px
    need_w = (block.n_cols - 1) * stride_px + tile_px
    pixels = np.asarray(pixels)
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.shape[0] < need_h or pixels.shape[1] < need_w:
        raise RuntimeError(
            f"block reader returned shape {pixels.shape}, expected at least ({need_h}, {need_w}, 3)"
        )
    if pixels.dtype != np.uint8:
        raise RuntimeError(f"block reader returned dtype {pixels.dtype}, expected uint8")
    return pixels[:need_h, :need_w]
