"""Training batches from the decoded patch cache, augmented as whole tensors on the training device.

On CUDA the whole uint8 cache is copied to the GPU once (when it fits) and every step gathers,
crops, flips/rotates and colour-jitters a batch there: the host does no per-step work. On CPU the
same code runs on host tensors; batches are gathered from the memory-mapped cache in a background
thread while the previous step computes. Shuffling is a seeded permutation per epoch, so a resumed
run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from wsi_pipeline.models.config import ModelConfig
from wsi_pipeline.models.preprocess import normalise_float
from wsi_pipeline.training.augment import Augmenter, AugmentSettings, random_crop_nhwc

#: Keep at least this share of free GPU memory for the network when copying the cache to the GPU.
GPU_CACHE_MAX_SHARE = 0.6
_UPLOAD_CHUNK = 8192


def gpu_resident(images: np.ndarray, device: torch.device) -> torch.Tensor | None:
    """The uint8 cache copied to ``device`` in chunks, or ``None`` (CPU, or it does not fit)."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    if images.nbytes > GPU_CACHE_MAX_SHARE * free:
        return None
    out = torch.empty(images.shape, dtype=torch.uint8, device=device)
    for start in range(0, len(images), _UPLOAD_CHUNK):
        part = np.ascontiguousarray(images[start : start + _UPLOAD_CHUNK])
        out[start : start + len(part)].copy_(torch.from_numpy(part), non_blocking=False)
    return out


@dataclass
class BatchStream:
    """Shuffled batches ``(uint8 NHWC patches on device, float labels on device)`` of ``positions``
    (rows of ``images``) for one epoch at a time."""

    images: np.ndarray  # (N, H, W, 3) uint8, usually a read-only memmap
    labels: np.ndarray  # (N,) 0/1
    positions: np.ndarray  # training rows
    batch_size: int
    device: torch.device
    seed: int
    resident: torch.Tensor | None = None  # the images on the device (GPU-resident path)

    def __post_init__(self) -> None:
        self.labels_device = torch.as_tensor(np.asarray(self.labels, dtype=np.float32), device=self.device)

    @property
    def steps(self) -> int:
        """Batches per epoch (a last batch of one sample is dropped: batch norm needs two)."""
        full, rest = divmod(len(self.positions), self.batch_size)
        return full + (1 if rest >= 2 else 0)

    def order(self, epoch: int) -> np.ndarray:
        return self.positions[np.random.default_rng([self.seed, epoch]).permutation(len(self.positions))]

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This epoch's batches from batch ``skip`` on."""
        order = self.order(epoch)
        chunks = [order[i * self.batch_size : (i + 1) * self.batch_size] for i in range(skip, self.steps)]
        if self.resident is not None:
            for rows in chunks:
                index = torch.as_tensor(rows, device=self.device)
                yield self.resident[index], self.labels_device[index]
            return
        yield from self._prefetched(chunks)

    def _prefetched(self, chunks: list[np.ndarray]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        def gather(rows: np.ndarray) -> torch.Tensor:
            sorted_rows = np.sort(rows)  # sequential reads from the memmap, then back to the order
            inverse = np.argsort(np.argsort(rows))
            return torch.from_numpy(np.ascontiguousarray(self.images[sorted_rows][inverse]))

        result: dict[int, torch.Tensor | BaseException] = {}

        def work(k: int) -> None:
            try:
                result[k] = gather(chunks[k])
            except BaseException as exc:  # re-raised in the consumer
                result[k] = exc

        thread: threading.Thread | None = None
        for k, rows in enumerate(chunks):
            if thread is None:
                work(k)
            else:
                thread.join()
            if k + 1 < len(chunks):
                thread = threading.Thread(target=work, args=(k + 1,), daemon=True)
                thread.start()
            item = result.pop(k)
            if isinstance(item, BaseException):
                raise item
            index = torch.as_tensor(rows, device=self.device)
            yield item.to(self.device, non_blocking=True), self.labels_device[index]


class BatchTransform:
    """uint8 NHWC batch -> augmented network input, through the serving preprocessing
    (:func:`~wsi_pipeline.models.io.normalise_float`) so training and serving cannot drift apart."""

    def __init__(
        self, config: ModelConfig, augment: AugmentSettings, crop_jitter: int, seed: int, epoch: int
    ) -> None:
        self.config = config
        self.augmenter = Augmenter(augment, seed=seed * 1000 + epoch)
        self.crop_jitter = crop_jitter
        self.crop_generator = torch.Generator().manual_seed(seed * 1000 + epoch + 7)

    def __call__(self, patches: torch.Tensor) -> torch.Tensor:
        if self.config.center_crop:
            patches = random_crop_nhwc(
                patches, self.config.center_crop, self.crop_jitter, self.crop_generator
            )
        return normalise_float(self.augmenter.patches(patches), self.config)
