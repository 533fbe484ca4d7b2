"""One training epoch, validation predictions and weight averaging (EMA)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from wsi_pipeline.errors import TrainingDivergedError
from wsi_pipeline.models.config import ModelConfig
from wsi_pipeline.models.finite import describe_names, non_finite_tensors
from wsi_pipeline.models.preprocess import preprocess_patches
from wsi_pipeline.precision import Precision
from wsi_pipeline.training.batches import BatchStream, BatchTransform

LrFn = Callable[[int], float]  # step within the epoch -> learning rate
StepFn = Callable[[int], object]  # called after each step with the number of samples; result ignored


@dataclass(frozen=True)
class EpochResult:
    loss: float
    accuracy: float
    samples: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.samples / max(self.seconds, 1e-9)


class WeightAverage:
    """Exponential moving average of a model's weights (buffers such as batch-norm statistics are
    copied): ``avg = decay * avg + (1 - decay) * weights`` after every step, with the usual warm-up
    ``decay_t = min(decay, (1 + t) / (10 + t))``."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for avg, new in zip(self.model.parameters(), model.parameters(), strict=True):
            avg.lerp_(new.detach(), 1.0 - d)
        for avg_buffer, new_buffer in zip(self.model.buffers(), model.buffers(), strict=True):
            avg_buffer.copy_(new_buffer)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])


def bce(logits: torch.Tensor, targets: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    if smoothing:
        targets = targets * (1 - smoothing) + 0.5 * smoothing
    return nn.functional.binary_cross_entropy_with_logits(logits, targets)


class Mixup:
    """mixup (Zhang et al. 2018): a batch becomes ``lam * x + (1 - lam) * x[perm]``, its targets
    alike, with ``lam ~ Beta(alpha, alpha)`` drawn per batch from a seeded stream (so a resumed
    epoch mixes the same way)."""

    def __init__(self, alpha: float, seed: int) -> None:
        self.alpha = float(alpha)
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lam = float(self.rng.beta(self.alpha, self.alpha))
        perm = torch.randperm(len(targets), generator=self.generator).to(targets.device)
        mixed = inputs * lam + inputs[perm] * (1.0 - lam)
        return mixed, targets * lam + targets[perm] * (1.0 - lam)


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    stream: BatchStream,
    transform: BatchTransform,
    epoch: int,
    lr_at_step: LrFn,
    precision: Precision,
    smoothing: float = 0.0,
    average: WeightAverage | None = None,
    on_step: StepFn | None = None,
    mix: Mixup | None = None,
) -> EpochResult:
    """One pass over ``stream``; raises :class:`TrainingDivergedError` on a non-finite loss (before
    the step that would spread it into the weights)."""
    model.train()
    device = stream.device
    t0 = time.perf_counter()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    for step, (patches, targets) in enumerate(stream.epoch(epoch)):
        for group in optimizer.param_groups:
            group["lr"] = lr_at_step(step)
        inputs = transform(patches)
        if mix is not None:
            inputs, targets = mix(inputs, targets)
        with precision.autocast(device):
            logits = model(inputs).float().reshape(-1)
        loss = bce(logits, targets, smoothing)
        if not torch.isfinite(loss):
            raise TrainingDivergedError(
                f"training diverged: loss is {float(loss.detach())} at epoch {epoch + 1}, step {step + 1}; "
                "nothing from this epoch was saved (lower --lr, or --resume from the last good epoch)"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if average is not None:
            average.update(model)
        n = len(targets)
        loss_sum += loss.detach().double() * n
        correct += ((logits.detach() > 0) == (targets > 0.5)).sum()  # soft targets: their side of 0.5
        seen += n
        if on_step is not None:
            on_step(n)
    seconds = time.perf_counter() - t0
    return EpochResult(float(loss_sum) / max(1, seen), int(correct) / max(1, seen), seen, seconds)


def check_finite(model: nn.Module, where: str) -> None:
    """Raise :class:`TrainingDivergedError` when a weight or buffer is NaN or infinite."""
    bad = non_finite_tensors([*model.named_parameters(), *model.named_buffers()])
    if bad:
        raise TrainingDivergedError(
            f"training diverged: {describe_names(bad)} is not finite {where}; nothing saved"
        )


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    images: np.ndarray,
    config: ModelConfig,
    device: torch.device,
    precision: Precision,
    batch_size: int = 512,
) -> np.ndarray:
    """float32 logits of uint8 NHWC ``images`` with the serving preprocessing."""
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(device)
            with precision.autocast(device):
                out.append(model(preprocess_patches(batch, config)).float().reshape(-1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)
