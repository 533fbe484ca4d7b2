"""Ensembles of trained patch models: one module that averages its members' logits.

``combine_models`` joins saved models that read patches the same way (patch size, um/px,
normalisation, centre crop, stain normalisation, classes) into one model folder; the result loads,
exports and runs like any other model (BatchNorm folding included), at the sum of the members' cost.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from wsi_pipeline.errors import ModelConfigError, ModelError
from wsi_pipeline.models.config import ModelConfig
from wsi_pipeline.models.fold import fold_batchnorm
from wsi_pipeline.models.registry import check_model_kwargs, create_model, register_model

#: Config fields that must agree for members to share one preprocessing of the tiles.
SHARED_INPUT_FIELDS = (
    "patch_size",
    "mpp",
    "class_names",
    "mean",
    "std",
    "center_crop",
    "stain_normalization",
)


def _member_dense(member: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``member.dense(x)``; AttributeError when the member has no dense map."""
    dense = getattr(member, "dense", None)
    if not callable(dense):
        raise AttributeError(f"ensemble member {type(member).__name__} has no dense(x)")
    return dense(x)


class MeanLogitEnsemble(nn.Module):
    """Mean of the members' ``(N, 1)`` logits."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        geometry = {(getattr(m, "dense_tile", None), getattr(m, "dense_stride", None)) for m in members}
        if len(geometry) == 1 and None not in next(iter(geometry)):
            self.dense_tile, self.dense_stride = next(iter(geometry))  # dense-capable like its members

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = self.members[0](x)
        for member in self.members[1:]:
            total = total + member(x)
        return total / len(self.members)

    def dense(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of the members' dense logit maps (all members are dense-capable)."""
        total = _member_dense(self.members[0], x)
        for member in self.members[1:]:
            total = total + _member_dense(member, x)
        return total / len(self.members)

    def inference_copy(self) -> nn.Module:
        """The members' own inference copies (BatchNorm folded) averaged by a new ensemble."""
        copies = []
        for member in self.members:
            make_copy = getattr(member, "inference_copy", None)
            copies.append(make_copy() if callable(make_copy) else fold_batchnorm(member))
        return MeanLogitEnsemble(copies).eval()


def check_members(kwargs: Mapping[str, Any]) -> None:
    """Each member of an ensemble config is ``{"architecture": name, "arch_kwargs": {...}}`` that
    fits its own builder (:func:`check_model_kwargs`); errors name the member."""
    members = kwargs.get("members")
    if not isinstance(members, (list, tuple)) or not members:
        raise ModelConfigError(
            f"arch_kwargs for 'ensemble': 'members' must be a non-empty list, got {members!r}"
        )
    for k, member in enumerate(members, start=1):
        where = f"ensemble member {k}"
        if not isinstance(member, Mapping) or not isinstance(member.get("architecture"), str):
            raise ModelConfigError(
                f"{where}: needs an 'architecture' name (and 'arch_kwargs'), got {member!r}"
            )
        where += f" ({member['architecture']})"
        arch_kwargs = member.get("arch_kwargs") or {}
        unknown = sorted(set(member) - {"architecture", "arch_kwargs"})
        if unknown or not isinstance(arch_kwargs, Mapping):
            raise ModelConfigError(f"{where}: expected only 'architecture' and an 'arch_kwargs' mapping")
        try:
            check_model_kwargs(member["architecture"], arch_kwargs)
        except ModelError as exc:
            raise type(exc)(f"{where}: {exc}") from None


@register_model("ensemble", check=check_members)
def ensemble(members: Sequence[dict[str, Any]]) -> nn.Module:
    """``members``: ``[{"architecture": name, "arch_kwargs": {...}}, ...]`` (registry names)."""
    return MeanLogitEnsemble(
        [create_model(str(m["architecture"]), **dict(m.get("arch_kwargs") or {})) for m in members]
    )


def combine_models(
    model_dirs: Sequence[Path | str], name: str = "ensemble", require_same_split: bool = False
) -> tuple[nn.Module, ModelConfig]:
    """Load ``model_dirs`` and return the ensemble module and its config (save with ``save_model``).

    Raises :class:`ModelError` when fewer than two models are given, they read patches differently,
    or (``require_same_split``) their configs record different data or validation splits.
    """
    from wsi_pipeline.models.io import load_model

    if len(model_dirs) < 2:
        raise ModelError(f"an ensemble needs at least two models, got {len(model_dirs)}")
    loaded = [load_model(path) for path in model_dirs]
    first = loaded[0].config
    for other in loaded[1:]:
        for field_name in SHARED_INPUT_FIELDS:
            if getattr(other.config, field_name) != getattr(first, field_name):
                raise ModelError(
                    f"{other.path}: {field_name} {getattr(other.config, field_name)!r} differs from "
                    f"{getattr(first, field_name)!r} in {loaded[0].path}; ensemble members must read "
                    "patches the same way"
                )
    if require_same_split:
        for other in loaded[1:]:
            if other.config.data != first.data:
                raise ModelError(
                    f"{other.path}: trained on other data or another validation split than "
                    f"{loaded[0].path} (config 'data' differs); their shared validation figures would "
                    "include training patches"
                )
    members = [{"architecture": m.config.architecture, "arch_kwargs": m.config.arch_kwargs} for m in loaded]
    module = MeanLogitEnsemble([m.module for m in loaded])
    config = ModelConfig(
        architecture="ensemble",
        arch_kwargs={"members": members},
        name=name,
        **{field_name: getattr(first, field_name) for field_name in SHARED_INPUT_FIELDS},
        data=dict(first.data),
        domain=first.domain,  # the members' patches (trained alike); None when the first has none
        training={
            "ensemble_of": [
                {"path": str(m.path), "weights_sha256": m.weights_sha256, "training": m.config.training}
                for m in loaded
            ]
        },
    )
    return module, config


def members_train_hashes(model_dirs: Sequence[Path | str]) -> np.ndarray | None:
    """The union of the members' training-patch hashes (``None`` unless every member records them)."""
    from wsi_pipeline.models.io import model_folder, read_train_hashes

    parts = [read_train_hashes(model_folder(path)) for path in model_dirs]
    if any(part is None for part in parts):
        return None
    return np.unique(np.concatenate([p for p in parts if p is not None]))
