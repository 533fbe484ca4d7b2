"""Batched model calls: fixed-size (pinned, on CUDA) host buffers filled from tile views, the model
run on full batches (CUDA: double-buffered with autocast; CPU: in chunks that bound memory)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import numpy as np
import torch

from wsi_pipeline.models.io import LoadedModel


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The engine's old fixed rule (bf16/fp16 on CUDA, fp32 on CPU); the engine now decides per machine
    and model (:mod:`.autoprecision`)."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


#: Tiles per model call on CPU (see ``BatchRunner._run``): bounds activation memory, not speed.
CPU_MODEL_CHUNK = 32


class BatchRunner:
    """Fills fixed-size host batch buffers and runs the model on full batches.

    On CUDA there are two pinned buffers: while the GPU works on one (copied with
    ``non_blocking=True``), the host fills the other; an event guards buffer reuse.
    """

    def __init__(
        self,
        model: LoadedModel,
        module: Callable[[torch.Tensor], torch.Tensor],
        device: torch.device,
        batch_size: int,
        tile_px: int,
        dtype: torch.dtype | None,
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
        self.infer_s = 0.0  # seconds in model calls and result transfers
        self.n_batches = 0
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
        self.infer_s += time.perf_counter() - t0
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
            torch.autocast(device_type=self.device.type, dtype=self.dtype)
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
            probs = self.model.probability(logits)
        if len(probs) != n:
            raise RuntimeError(f"model returned {len(probs)} outputs for a batch of {n} tiles")
        self.outputs.append((self.index[:n].copy(), probs))
        self.fill = 0
        self.current = (self.current + 1) % len(self.host)
        self.infer_s += time.perf_counter() - t0
        self.n_batches += 1
