"""Knowledge distillation: training targets that blend the hard labels with a teacher model's
calibrated probabilities (e.g. the shipped ensemble taught to one cheaper network).

The teacher scores each training patch once, at the start of the run (fp32, its own preprocessing),
so distillation costs one inference pass over the training set, not a teacher forward per step. The
target of training patch ``i`` is ``(1 - weight) * label_i + weight * p_teacher(i)``; validation keeps
the hard labels. A teacher that was trained on any of this run's validation patches is refused: its
knowledge of them would leak into the figures the run is judged by.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from wsi_pipeline.data.hashes import count_known, patch_hashes
from wsi_pipeline.errors import OptionError
from wsi_pipeline.models.io import load_model, model_folder, read_train_hashes
from wsi_pipeline.training.config import TrainConfig
from wsi_pipeline.training.data import TrainData

#: Training patches read from the cache at a time (bounded memory for the 220k/327k-patch sets).
CHUNK = 4096


def training_targets(
    config: TrainConfig, data: TrainData, device: torch.device, say: Callable[[str], None]
) -> np.ndarray:
    """The labels the run trains on: the hard ones, or distilled when ``config.distill_from`` is set."""
    if not config.distill_from:
        return data.labels
    say(f"distilling from {config.distill_from} (weight {config.distill_weight}): scoring training patches")
    return distill_targets(
        config.distill_from, data.images, data.labels, data.train_rows, data.val_rows,
        config.distill_weight, device, say,
    )  # fmt: skip


def check_teacher_split(teacher_dir: Path | str, images: np.ndarray, val_rows: np.ndarray) -> bool:
    """Raise :class:`OptionError` when the teacher was trained on any of ``val_rows``; ``False`` when
    it records no training patches (nothing to check against), ``True`` when checked clean."""
    known = read_train_hashes(model_folder(teacher_dir))
    if known is None:
        return False
    seen = count_known(patch_hashes(images, val_rows), known) if len(val_rows) else 0
    if seen:
        raise OptionError(
            f"distill_from {teacher_dir}: the teacher was trained on {seen} of this run's "
            f"{len(val_rows)} validation patches; use its split (split_seed) or another teacher"
        )
    return True


def distill_targets(
    teacher_dir: Path | str,
    images: np.ndarray,
    labels: np.ndarray,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    weight: float,
    device: torch.device,
    say: Callable[[str], None] | None = None,
) -> np.ndarray:
    """float32 targets for every row of ``images``: blended on ``train_rows``, hard elsewhere."""
    with torch.random.fork_rng(devices=[]):  # building the teacher must not move the run's random stream
        teacher = load_model(teacher_dir, device)
    if not check_teacher_split(teacher_dir, images, val_rows) and say is not None:
        say(
            f"warning: {teacher_dir} records no training patches (train_patches.u64), so its "
            "overlap with this run's validation split cannot be checked"
        )
    targets = np.asarray(labels, dtype=np.float32).copy()
    probs = np.empty(len(train_rows), dtype=np.float32)
    for start in range(0, len(train_rows), CHUNK):  # sorted reads from the memory-mapped cache
        part = train_rows[start : start + CHUNK]
        order = np.argsort(np.argsort(part))
        probs[start : start + len(part)] = teacher.predict_proba(images[np.sort(part)])[order]
    targets[train_rows] = (1.0 - weight) * targets[train_rows] + weight * probs
    return targets
