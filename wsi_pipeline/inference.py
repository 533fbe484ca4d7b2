"""Tile inference engine: large block reads in background threads -> batched model calls.

The engine knows nothing about slides. It scores a set of grid cells ``(row, col)`` of a
regular tile grid (tile side ``tile_px``, step ``stride_px``, both in model pixels) and gets
its pixels from ``read_block(row0, col0, n_rows, n_cols)``, which returns the uint8 RGB
array at the model's um/px covering those tiles: shape
``((n_rows - 1) * stride + tile, (n_cols - 1) * stride + tile, 3)``.

Reading happens in ``num_readers`` threads, one block of up to ``block_tiles x block_tiles``
tiles per read; tiles are cut from the block as array views and copied straight into the
(pinned, on CUDA) batch buffer. A bounded queue between readers and the model keeps peak
memory at a few blocks plus one or two batches, whatever the slide size.
"""

from __future__ import annotations

import contextlib
import copy
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from wsi_pipeline.devices import resolve_device  # noqa: F401  (re-exported)
from wsi_pipeline.errors import OptionError
from wsi_pipeline.models.io import LoadedModel

BlockReader = Callable[[int, int, int, int], np.ndarray]
ProgressFn = Callable[[int], None]

#: Target side (model px) of one block read; 16 tiles of 96 px at the default stride.
DEFAULT_BLOCK_PX = 1536


def inference_module(module: torch.nn.Module) -> torch.nn.Module:
    """An inference copy of ``module``: eval mode, each Conv+BatchNorm pair folded into one Conv
    (``torch.fx``; removes a memory-bound pass per layer, outputs change by float rounding only),
    channels-last. Submodules that cannot be traced symbolically (e.g. shape-dependent pooling) are
    kept whole; the module itself (never modified) is returned when nothing can be traced."""
    from torch.fx.experimental.optimization import fuse

    module.eval()
    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules()):
        return module
    try:
        copy_ = copy.deepcopy(module)
        tracer = _LeafTracer(_untraceable_modules(copy_))
        graph_module = torch.fx.GraphModule(copy_, tracer.trace(copy_))
        fused = fuse(graph_module, inplace=True, no_trace=True)
    except Exception:  # not symbolically traceable (data-dependent control flow at the top, ...)
        return module
    return fused.to(memory_format=torch.channels_last)


class _LeafTracer(torch.fx.Tracer):
    """fx tracer that keeps the given submodules as opaque calls."""

    def __init__(self, leaves: set[int]) -> None:
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, m: torch.nn.Module, module_qualified_name: str) -> bool:
        return id(m) in self.leaves or super().is_leaf_module(m, module_qualified_name)


def _untraceable_modules(module: torch.nn.Module) -> set[int]:
    """ids of the custom submodules that fx cannot trace on their own."""
    leaves: set[int] = set()
    for sub in module.modules():
        if sub is module or type(sub).__module__.startswith("torch.nn"):
            continue
        try:
            torch.fx.symbolic_trace(sub)
        except Exception:
            leaves.add(id(sub))
    return leaves


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed precision on CUDA only: bf16 where supported, else fp16; None (fp32) on CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@dataclass
class InferenceStats:
    """Where the time went (seconds). ``read_s`` sums all reader threads."""

    read_s: float = 0.0
    infer_s: float = 0.0
    wait_s: float = 0.0
    total_s: float = 0.0
    n_blocks: int = 0
    n_batches: int = 0
    device: str = "cpu"
    precision: str = "float32"

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "read_s": round(self.read_s, 4),
            "infer_s": round(self.infer_s, 4),
            "wait_s": round(self.wait_s, 4),
            "total_s": round(self.total_s, 4),
            "n_blocks": self.n_blocks,
            "n_batches": self.n_batches,
            "device": self.device,
            "precision": self.precision,
        }


@dataclass
class _Block:
    """A rectangle of grid cells read in one call, and which of ``cells`` it serves."""

    row0: int
    col0: int
    n_rows: int
    n_cols: int
    index: np.ndarray  # positions into the caller's cell array


@dataclass
class _BlockPixels:
    block: _Block
    pixels: np.ndarray


@dataclass
class _Failure:
    error: BaseException


_DONE = object()


def plan_blocks(cells: np.ndarray, block_tiles: int) -> list[_Block]:
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
        blocks.append(_Block(r0, c0, int(rows.max()) - r0 + 1, int(cols.max()) - c0 + 1, index))
    return blocks


@dataclass
class TileInference:
    """Scores grid cells with a model; see the module docstring for the data flow."""

    model: LoadedModel
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_size: int = 256
    num_readers: int = 2
    block_tiles: int | None = None  # None: about DEFAULT_BLOCK_PX per side

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise OptionError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.num_readers < 1:
            raise OptionError(f"num_readers must be >= 1, got {self.num_readers}")

    def run(
        self,
        cells: np.ndarray,
        read_block: BlockReader,
        tile_px: int,
        stride_px: int,
        progress: ProgressFn | None = None,
    ) -> tuple[np.ndarray, InferenceStats]:
        """Tumour probability (float32, aligned with ``cells``) and timing statistics."""
        cells = np.asarray(cells, dtype=np.int64).reshape(-1, 2)
        stats = InferenceStats(device=str(self.device))
        dtype = autocast_dtype(self.device)
        stats.precision = str(dtype).replace("torch.", "") if dtype else "float32"
        probs = np.full(len(cells), np.nan, dtype=np.float32)
        if len(cells) == 0:
            return probs, stats
        t_start = time.perf_counter()
        k = self.block_tiles or max(1, round(DEFAULT_BLOCK_PX / stride_px))
        blocks = plan_blocks(cells, k)
        stats.n_blocks = len(blocks)
        self.model.module.to(self.device)
        module = inference_module(self.model.module)
        batches = _BatchRunner(self.model, module, self.device, self.batch_size, tile_px, dtype, stats)
        for block_pixels in self._read_in_background(blocks, read_block, tile_px, stride_px, stats):
            block = block_pixels.block
            windows = tile_views(block_pixels.pixels, tile_px, stride_px)
            rows = cells[block.index, 0] - block.row0
            cols = cells[block.index, 1] - block.col0
            batches.add(windows, rows, cols, block.index)
            if progress is not None:
                progress(len(block.index))
        for index, values in batches.finish():
            probs[index] = values
        stats.total_s = time.perf_counter() - t_start
        return probs, stats

    def _read_in_background(
        self,
        blocks: list[_Block],
        read_block: BlockReader,
        tile_px: int,
        stride_px: int,
        stats: InferenceStats,
    ) -> Iterator[_BlockPixels]:
        """Yield blocks as reader threads finish them; re-raise the first reader error."""
        jobs: queue.SimpleQueue[_Block] = queue.SimpleQueue()
        for block in blocks:
            jobs.put(block)
        n_threads = min(self.num_readers, len(blocks))
        results: queue.Queue[object] = queue.Queue(maxsize=max(2, 2 * n_threads))
        stop = threading.Event()
        lock = threading.Lock()

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
                    try:
                        block = jobs.get_nowait()
                    except queue.Empty:
                        break
                    t0 = time.perf_counter()
                    pixels = read_block(block.row0, block.col0, block.n_rows, block.n_cols)
                    pixels = _check_block(pixels, block, tile_px, stride_px)
                    with lock:
                        stats.read_s += time.perf_counter() - t0
                    if not put(_BlockPixels(block, pixels)):
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
        finished = 0
        try:
            while finished < n_threads:
                t0 = time.perf_counter()
                item = results.get()
                stats.wait_s += time.perf_counter() - t0
                if item is _DONE:
                    finished += 1
                elif isinstance(item, _Failure):
                    raise item.error
                else:
                    assert isinstance(item, _BlockPixels)
                    yield item
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)


def tile_views(pixels: np.ndarray, tile_px: int, stride_px: int) -> np.ndarray:
    """All grid tiles of a block as views: ``(n_rows, n_cols, tile, tile, 3)`` without copying."""
    return sliding_window_view(pixels, (tile_px, tile_px, 3))[::stride_px, ::stride_px, 0]


def _check_block(pixels: np.ndarray, block: _Block, tile_px: int, stride_px: int) -> np.ndarray:
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


#: Tiles per model call on CPU (see ``_BatchRunner._run``): bounds activation memory, not speed.
CPU_MODEL_CHUNK = 32


class _BatchRunner:
    """Fills fixed-size host batch buffers and runs the model on full batches.

    On CUDA there are two pinned buffers: while the GPU works on one (copied with
    ``non_blocking=True``), the host fills the other; an event guards buffer reuse.
    """

    def __init__(
        self,
        model: LoadedModel,
        module: torch.nn.Module,
        device: torch.device,
        batch_size: int,
        tile_px: int,
        dtype: torch.dtype | None,
        stats: InferenceStats,
    ) -> None:
        self.model = model
        self.module = module
        self.device = device
        # The model's centre crop is taken while copying tiles into the batch (uint8, fewer bytes);
        # preprocessing then finds the tiles already at the crop size (its own crop is a no-op).
        crop = int(model.config.center_crop or 0)
        self.side = crop if 0 < crop < tile_px else tile_px
        self.offset = (tile_px - self.side) // 2
        self.batch_size = batch_size
        self.dtype = dtype
        self.stats = stats
        self.cuda = device.type == "cuda"
        n_buffers = 2 if self.cuda else 1
        self.host = [
            torch.empty((batch_size, self.side, self.side, 3), dtype=torch.uint8, pin_memory=self.cuda)
            for _ in range(n_buffers)
        ]
        self.events: list[torch.cuda.Event | None] = [None] * n_buffers
        self.current = 0
        self.fill = 0
        self.index = np.empty(batch_size, dtype=np.int64)
        self.outputs: list[tuple[np.ndarray, torch.Tensor]] = []

    def add(self, windows: np.ndarray, rows: np.ndarray, cols: np.ndarray, index: np.ndarray) -> None:
        """Copy tiles ``windows[rows[i], cols[i]]`` into the batch, running full batches."""
        done = 0
        while done < len(index):
            if self.fill == 0:
                self._wait_buffer_free()
            take = min(self.batch_size - self.fill, len(index) - done)
            buffer = self.host[self.current].numpy()
            part = slice(done, done + take)
            o, e = self.offset, self.offset + self.side
            buffer[self.fill : self.fill + take] = windows[rows[part], cols[part], o:e, o:e]
            self.index[self.fill : self.fill + take] = index[part]
            self.fill += take
            done += take
            if self.fill == self.batch_size:
                self._run()

    def finish(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Run the last partial batch and return ``(cell positions, probabilities)`` pairs."""
        if self.fill:
            self._run()
        t0 = time.perf_counter()
        results = [(index, probs.cpu().numpy()) for index, probs in self.outputs]
        if self.cuda:
            torch.cuda.synchronize(self.device)
        self.stats.infer_s += time.perf_counter() - t0
        return results

    def _wait_buffer_free(self) -> None:
        event = self.events[self.current]
        if event is not None:
            event.synchronize()

    def _run(self) -> None:
        t0 = time.perf_counter()
        n = self.fill
        host = self.host[self.current][:n]
        autocast = (
            torch.autocast(device_type="cuda", dtype=self.dtype)
            if self.dtype is not None
            else contextlib.nullcontext()
        )
        with torch.inference_mode():
            batch = host.to(self.device, non_blocking=self.cuda)
            if self.cuda:
                event = torch.cuda.Event()
                event.record()
                self.events[self.current] = event
            # On CPU a convolution runs as fast on 32 tiles as on thousands, but a batch's
            # activations grow with its size (seed_cnn: ~1.1 GB at 256 tiles, ~0.4 GB at 32), so the
            # host batch is fed to the model in chunks; on CUDA the whole batch goes at once.
            step = n if self.cuda else min(n, CPU_MODEL_CHUNK)
            with autocast:
                logits = torch.cat(
                    [
                        self.module(self.model.preprocess(batch[i : i + step])).float().reshape(-1)
                        for i in range(0, n, step)
                    ]
                )
            probs = torch.sigmoid(logits)
        if len(probs) != n:
            raise RuntimeError(f"model returned {len(probs)} outputs for a batch of {n} tiles")
        self.outputs.append((self.index[:n].copy(), probs))
        self.fill = 0
        self.current = (self.current + 1) % len(self.host)
        self.stats.infer_s += time.perf_counter() - t0
        self.stats.n_batches += 1
