"""Tile inference engine: block reads, tile cutting, batching, errors, bounded read-ahead."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from wsi_pipeline.devices import resolve_device
from wsi_pipeline.errors import OptionError, SlideReadError
from wsi_pipeline.inference import TileInference, TileScores, autocast_dtype, plan_blocks
from wsi_pipeline.testing import PROBE_KWARGS, load_probe_model, probe_probability

TILE, STRIDE = 16, 16


def _image(rows: int, cols: int, tile: int, stride: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = (rows - 1) * stride + tile, (cols - 1) * stride + tile
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _reader(image: np.ndarray, stride: int, tile: int, calls: list | None = None):
    def read_block(row0: int, col0: int, n_rows: int, n_cols: int) -> np.ndarray:
        if calls is not None:
            calls.append((row0, col0, n_rows, n_cols))
        y, x = row0 * stride, col0 * stride
        return image[y : y + (n_rows - 1) * stride + tile, x : x + (n_cols - 1) * stride + tile].copy()

    return read_block


def _expected(image: np.ndarray, cells: np.ndarray, tile: int, stride: int) -> np.ndarray:
    return np.array(
        [
            probe_probability(
                image[r * stride : r * stride + tile, c * stride : c * stride + tile], **PROBE_KWARGS
            )
            for r, c in cells
        ]
    )


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    return load_probe_model(tmp_path_factory.mktemp("probe") / "model", patch_size=TILE)


@pytest.mark.parametrize(
    ("stride", "batch_size", "num_readers", "block_tiles"),
    [(16, 7, 1, 3), (8, 64, 3, 4), (16, 1000, 2, None), (5, 13, 2, 2)],
)
def test_every_tile_gets_the_probe_value_of_its_pixels(probe, stride, batch_size, num_readers, block_tiles):
    rows, cols = 11, 13
    image = _image(rows, cols, TILE, stride)
    rng = np.random.default_rng(1)
    all_cells = np.argwhere(np.ones((rows, cols), dtype=bool))
    cells = all_cells[rng.random(len(all_cells)) < 0.6]
    engine = TileInference(probe, batch_size=batch_size, num_readers=num_readers, block_tiles=block_tiles)
    seen = []
    scores = engine.run(cells, _reader(image, stride, TILE), TILE, stride, progress=seen.append)
    assert isinstance(scores, TileScores) and np.array_equal(scores.cells, cells)
    probs, stats = scores.probs, scores.stats
    assert probs.dtype == np.float32 and probs.shape == (len(cells),)
    np.testing.assert_allclose(probs, _expected(image, cells, TILE, stride), atol=1e-5)
    assert sum(seen) == len(cells)
    assert stats.n_batches == -(-len(cells) // batch_size)
    assert stats.device == "cpu" and stats.precision == "float32"
    assert stats.total_s >= stats.infer_s >= 0


def test_blocks_are_read_once_and_cover_only_needed_cells(probe):
    image = _image(20, 20, TILE, STRIDE)
    cells = np.array([[0, 0], [0, 1], [1, 0], [10, 10], [19, 19], [18, 3]])
    calls: list = []
    engine = TileInference(probe, batch_size=4, num_readers=2, block_tiles=8)
    scores = engine.run(cells, _reader(image, STRIDE, TILE, calls), TILE, STRIDE)
    probs, stats = scores.probs, scores.stats
    np.testing.assert_allclose(probs, _expected(image, cells, TILE, STRIDE), atol=1e-5)
    # cells fall into 4 blocks of 8x8: (0,0) holds 3 of them, read as one 2x2 call
    assert sorted(calls) == [(0, 0, 2, 2), (10, 10, 1, 1), (18, 3, 1, 1), (19, 19, 1, 1)]
    assert stats.n_blocks == 4


def test_plan_blocks_partitions_cells():
    rng = np.random.default_rng(3)
    cells = np.unique(rng.integers(0, 50, size=(400, 2)), axis=0)
    blocks = plan_blocks(cells, 7)
    index = np.concatenate([b.index for b in blocks])
    assert sorted(index.tolist()) == list(range(len(cells)))
    for b in blocks:
        assert 1 <= b.n_rows <= 7 and 1 <= b.n_cols <= 7
        r, c = cells[b.index, 0], cells[b.index, 1]
        assert r.min() == b.row0 and c.min() == b.col0
        assert (r - b.row0 < b.n_rows).all() and (c - b.col0 < b.n_cols).all()
        assert len({x // 7 for x in r}) == 1 and len({x // 7 for x in c}) == 1


def test_no_cells_reads_nothing(probe):
    calls: list = []
    scores = TileInference(probe).run(np.zeros((0, 2)), _reader(_image(2, 2, 16, 16), 16, 16, calls), 16, 16)
    probs, stats = scores.probs, scores.stats
    assert probs.shape == (0,) and calls == [] and stats.n_batches == 0


def test_reader_error_propagates_with_its_type_and_threads_stop(probe):
    image = _image(30, 30, TILE, STRIDE)
    cells = np.argwhere(np.ones((30, 30), dtype=bool))
    base = _reader(image, STRIDE, TILE)

    def failing(row0, col0, n_rows, n_cols):
        if (row0, col0) == (8, 8):
            raise SlideReadError("slide.tif: cannot decode tile at (128, 128)")
        return base(row0, col0, n_rows, n_cols)

    before = threading.active_count()
    engine = TileInference(probe, batch_size=8, num_readers=3, block_tiles=4)
    with pytest.raises(SlideReadError, match="cannot decode tile"):
        engine.run(cells, failing, TILE, STRIDE)
    assert threading.active_count() == before


def test_read_ahead_is_bounded(probe):
    """Readers never run more than the queue's worth of blocks ahead of the model."""
    image = _image(40, 40, TILE, STRIDE)
    cells = np.argwhere(np.ones((40, 40), dtype=bool))
    num_readers = 2
    state = {"read": 0, "consumed": 0, "max_ahead": 0}
    lock = threading.Lock()
    base = _reader(image, STRIDE, TILE)

    def read_block(*args):
        out = base(*args)
        with lock:
            state["read"] += 1
            state["max_ahead"] = max(state["max_ahead"], state["read"] - state["consumed"])
        return out

    def progress(n):
        with lock:
            state["consumed"] += 1

    engine = TileInference(probe, batch_size=16, num_readers=num_readers, block_tiles=2)
    scores = engine.run(cells, read_block, TILE, STRIDE, progress=progress)
    probs, stats = scores.probs, scores.stats
    assert stats.n_blocks == 400 and state["read"] == 400
    # queue (2 * readers) + one block held by each reader + one being consumed
    assert state["max_ahead"] <= 2 * num_readers + num_readers + 1
    np.testing.assert_allclose(probs, _expected(image, cells, TILE, STRIDE), atol=1e-5)


def test_bad_block_shape_is_reported(probe):
    engine = TileInference(probe, num_readers=1)
    with pytest.raises(RuntimeError, match="block reader returned shape"):
        engine.run(np.array([[0, 0]]), lambda *a: np.zeros((4, 4, 3), np.uint8), TILE, STRIDE)


def test_options_are_validated(probe):
    with pytest.raises(OptionError, match="--batch-size"):
        TileInference(probe, batch_size=0)
    with pytest.raises(OptionError, match="num_readers"):
        TileInference(probe, num_readers=0)


def test_device_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(OptionError, match="unknown device|unsupported device"):
        resolve_device("quantum")
    if not torch.cuda.is_available():
        with pytest.raises(OptionError, match="CUDA is not available"):
            resolve_device("cuda")
    assert autocast_dtype(torch.device("cpu")) is None


def test_cpu_model_calls_are_chunked_to_bound_memory(probe, monkeypatch):
    """A 200-tile host batch reaches the model as calls of at most CPU_MODEL_CHUNK tiles, same values."""
    from wsi_pipeline.inference import CPU_MODEL_CHUNK

    sizes: list[int] = []
    original = probe.preprocess

    def recording_preprocess(batch):
        sizes.append(len(batch))
        return original(batch)

    monkeypatch.setattr(probe, "preprocess", recording_preprocess)
    stride, rows, cols = 16, 10, 20
    image = _image(rows, cols, TILE, stride, seed=3)
    cells = np.argwhere(np.ones((rows, cols), dtype=bool))
    scores = TileInference(probe, batch_size=200, num_readers=1).run(
        cells, _reader(image, stride, TILE), TILE, stride
    )
    probs, stats = scores.probs, scores.stats
    np.testing.assert_allclose(probs, _expected(image, cells, TILE, stride), atol=1e-5)
    assert stats.n_batches == 1
    # the first call builds the engine's probe input (precision / frozen-graph check), one chunk
    assert sizes == [CPU_MODEL_CHUNK] * (1 + 200 // CPU_MODEL_CHUNK) + [200 % CPU_MODEL_CHUNK]
