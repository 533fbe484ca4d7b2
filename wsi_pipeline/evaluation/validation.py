"""Re-score a model on the validation split recorded in its config (``data.split``).

Used for models that were not produced by one training run (ensembles): the members' shared split
is recomputed from the dataset, so the new model's figures are on exactly the patches its members
were selected on and never trained on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from wsi_pipeline.domain import DEFAULT_PATCHES, DomainStats, domain_statistics
from wsi_pipeline.errors import DatasetError, ModelError
from wsi_pipeline.evaluation.report import binary_metrics
from wsi_pipeline.models.io import LoadedModel


def validation_indices(config_data: dict[str, Any], labels: np.ndarray) -> np.ndarray:
    """Indices of the recorded validation split; checks that the dataset is the one recorded."""
    from wsi_pipeline.data import stratified_split

    split = config_data.get("split") or {}
    if split.get("method") != "stratified_split" or "seed" not in split or "val_fraction" not in split:
        raise ModelError("model config records no stratified validation split (data.split)")
    if config_data.get("sampled") or int(config_data.get("n", -1)) != len(labels):
        raise DatasetError(
            f"dataset has {len(labels)} patches but the model's split was drawn from "
            f"{config_data.get('n')} (sampled: {config_data.get('sampled')}); not the same data"
        )
    _, val_idx = stratified_split(labels, float(split["val_fraction"]), seed=int(split["seed"]))
    if "n_val" in split and len(val_idx) != int(split["n_val"]):
        raise DatasetError(
            f"recomputed validation split has {len(val_idx)} patches, config says {split['n_val']}"
        )
    if "n_val_tumor" in split and int(np.asarray(labels)[val_idx].sum()) != int(split["n_val_tumor"]):
        raise DatasetError("recomputed validation split has other labels than the model's config records")
    return val_idx


def validation_metrics(model: LoadedModel, data_path: Path | str, seed: int = 0) -> dict[str, Any]:
    """Metrics (as the trainer records them) of ``model`` on its recorded validation split."""
    from wsi_pipeline.data import load_arrays, open_patch_dataset

    dataset = open_patch_dataset(data_path)
    val_idx = validation_indices(model.config.data, np.asarray(dataset.labels))
    images, labels = load_arrays(dataset, val_idx)
    metrics = binary_metrics(labels, model.predict_proba(images), seed=seed)
    metrics["split"] = "validation"
    return metrics


def domain_statistics_for_model(
    config_data: dict[str, Any], data_path: Path | str, n_patches: int = DEFAULT_PATCHES, seed: int = 0
) -> DomainStats:
    """:class:`~wsi_pipeline.domain.DomainStats` of up to ``n_patches`` training patches of a model: the
    dataset at ``data_path`` minus the validation split its config records (``data.split``)."""
    from wsi_pipeline.data import load_arrays, open_patch_dataset

    dataset = open_patch_dataset(data_path)
    labels = np.asarray(dataset.labels)
    train = np.setdiff1d(np.arange(len(labels)), validation_indices(config_data, labels))
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(train, min(n_patches, len(train)), replace=False))
    images, _ = load_arrays(dataset, chosen)
    return domain_statistics(images, source=f"{len(chosen)} training patches of {Path(data_path).name}")
