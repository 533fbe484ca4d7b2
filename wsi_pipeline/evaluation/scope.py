"""Which patches ``wsi-eval`` scores, and how they relate to the model's own training data.

- ``--split val`` scores only the model's recorded validation split of the dataset it was trained on;
- the patches are decoded once into the patch cache (:mod:`wsi_pipeline.data.cache`), so TTA and the
  re-stained passes read pixels, not files;
- a warning counts the evaluated patches the model was trained on (content hashes recorded beside
  its weights), since figures on training patches are optimistic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsi_pipeline.data.base import PatchDataset
from wsi_pipeline.data.cache import CachedDataset, open_cache
from wsi_pipeline.data.hashes import count_known, patch_hashes
from wsi_pipeline.data.split import stratified_sample
from wsi_pipeline.evaluation.validation import validation_indices
from wsi_pipeline.models.io import LoadedModel, read_train_hashes


@dataclass(frozen=True)
class EvalScope:
    """The evaluated patches: ``dataset`` rows ``indices``, readable as ``cached`` rows 0..n-1."""

    indices: np.ndarray
    cached: CachedDataset
    n_train_overlap: int | None  # None: the model records no training-patch hashes
    description: str


def evaluation_scope(
    model: LoadedModel,
    dataset: PatchDataset,
    model_split: bool,
    sample: int | None,
    seed: int,
    progress: bool,
) -> EvalScope:
    """The patches to score (all, the model's validation split, and/or a stratified sample)."""
    labels = np.asarray(dataset.labels)
    indices = np.arange(len(labels), dtype=np.int64)
    what = "all patches"
    if model_split:
        indices = validation_indices(model.config.data, labels)
        what = "the model's validation split"
    if sample:
        indices = indices[stratified_sample(labels[indices], sample, seed)]
        what = f"a stratified sample of {len(indices)} of {what}"
    cache = open_cache(dataset, indices, progress=progress)
    known = read_train_hashes(model.path)
    overlap = None if known is None else count_known(patch_hashes(cache.images), known)
    return EvalScope(indices, CachedDataset(cache, [dataset.ids[i] for i in indices]), overlap, what)


def overlap_warning(scope: EvalScope) -> str | None:
    """A warning line when evaluated patches were training patches of the model."""
    if not scope.n_train_overlap:
        return None
    n = len(scope.indices)
    return (
        f"warning: {scope.n_train_overlap} of the {n} evaluated patches "
        f"({100.0 * scope.n_train_overlap / n:.1f} %) were training patches of this model: the figures "
        "are optimistic; use --split val (its recorded validation split) or held-out data"
    )
