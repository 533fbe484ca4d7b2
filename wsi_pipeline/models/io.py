"""Save and load models as ``model.safetensors`` + ``config.json`` (no pickle)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from wsi_pipeline.errors import ModelConfigError, ModelError, NonFiniteOutputError, one_line
from wsi_pipeline.files import atomic_output_dir, process_umask
from wsi_pipeline.models.calibration import calibrated
from wsi_pipeline.models.config import CONFIG_FILENAME, WEIGHTS_FILENAME, ModelConfig
from wsi_pipeline.models.finite import describe_names, non_finite_tensors
from wsi_pipeline.models.preprocess import preprocess_patches
from wsi_pipeline.models.registry import create_model

SHIPPED_MODELS_DIR = Path(__file__).parent / "weights"
DEFAULT_MODEL_DIR = SHIPPED_MODELS_DIR / "default"
#: Sorted uint64 content hashes (:func:`wsi_pipeline.data.hashes.patch_hashes`) of the training patches.
TRAIN_HASHES_FILENAME = "train_patches.u64"


def default_model_dir() -> Path:
    """Folder of the default model shipped inside the package."""
    return DEFAULT_MODEL_DIR


def shipped_models() -> list[str]:
    """Names of the models shipped inside the package (``--model NAME``), e.g. ``default``."""
    if not SHIPPED_MODELS_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_MODELS_DIR.iterdir() if (p / CONFIG_FILENAME).is_file())


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class LoadedModel:
    """A ready-to-run patch model: module in eval mode plus its config."""

    module: nn.Module
    config: ModelConfig
    path: Path
    weights_sha256: str

    @property
    def name(self) -> str:
        return self.config.name or self.path.name

    def preprocess(self, patches: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, H, W, 3)`` (any device) -> normalised float ``(N, 3, h, w)``."""
        return preprocess_patches(patches, self.config)

    def probability(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated tumour probability of the network's logits: the one place where logits become
        probabilities (``sigmoid(logit / temperature)``, see :mod:`wsi_pipeline.models.calibration`)."""
        return calibrated(logits, self.config.temperature)

    @torch.inference_mode()
    def predict_logits(self, patches: np.ndarray | torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """The network's raw logit for uint8 ``(N, H, W, 3)`` patches, on the module's device."""
        device = next(self.module.parameters()).device
        data = torch.as_tensor(patches)
        out = []
        for start in range(0, len(data), batch_size):
            batch = self.preprocess(data[start : start + batch_size].to(device))
            out.append(self.module(batch).float().reshape(-1).cpu())
        if not out:
            return np.zeros(0, dtype=np.float32)
        return torch.cat(out).numpy()

    def predict_proba(self, patches: np.ndarray | torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """Calibrated tumour probability for uint8 ``(N, H, W, 3)`` patches, on the module's device."""
        logits = torch.from_numpy(self.predict_logits(patches, batch_size))
        return self.probability(logits).numpy()


def save_model(
    directory: Path, module: nn.Module, config: ModelConfig, train_hashes: np.ndarray | None = None
) -> Path:
    """Write weights + config (+ the content hashes of the training patches, when known) into
    ``directory`` atomically (the slide outputs' temp-folder-then-rename mechanism,
    :func:`wsi_pipeline.files.atomic_output_dir`)."""
    directory = Path(directory)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    bad = non_finite_tensors(state.items())
    if bad:
        raise NonFiniteOutputError(
            f"{directory}: not saving a model with broken weights: {describe_names(bad)} not finite "
            "(NaN or infinite); training diverged"
        )
    with atomic_output_dir(directory.parent, directory.name) as tmp:
        save_file(state, str(tmp / WEIGHTS_FILENAME))
        # safetensors writes 0600; a model shared on a cluster should be as readable as any new file.
        (tmp / WEIGHTS_FILENAME).chmod(0o666 & ~process_umask())
        config.save(tmp)
        if train_hashes is not None:
            np.sort(np.asarray(train_hashes, dtype="<u8")).tofile(tmp / TRAIN_HASHES_FILENAME)
    return directory


def read_train_hashes(folder: Path) -> np.ndarray | None:
    """Content hashes of the patches a model was trained on (``None`` when not recorded)."""
    path = Path(folder) / TRAIN_HASHES_FILENAME
    if not path.is_file():
        return None
    try:
        return np.fromfile(path, dtype="<u8")
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot read training-patch hashes: {exc}") from exc


def model_folder(path: Path | str | None = None) -> Path:
    """The model folder ``path`` names (a folder or its ``config.json``; ``None``: the shipped
    default; a bare name that is no local path: the shipped model of that name), checked to exist
    without loading anything."""
    folder = Path(path) if path is not None else default_model_dir()
    if path is not None and not folder.exists() and str(path) in shipped_models():
        folder = SHIPPED_MODELS_DIR / str(path)
    if folder.is_file() and folder.name == CONFIG_FILENAME:
        folder = folder.parent
    if not folder.is_dir():
        if path is None:
            raise ModelError(
                f"{folder}: model folder not found: no default model installed; give one with --model"
            )
        names = ", ".join(shipped_models()) or "none"
        raise ModelError(
            f"{folder}: model folder not found (expected {WEIGHTS_FILENAME} + {CONFIG_FILENAME}; "
            f"shipped models: {names})"
        )
    return folder


def load_model(path: Path | str | None = None, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model folder (or its ``config.json``); ``None`` loads the shipped default.

    The config is checked when read (:meth:`ModelConfig.load`); a network that does not build from
    it, weights that do not fit it or are not finite, and a network that does not run on its input
    size are one-line :class:`ModelError` (:class:`ModelConfigError` for the config's part).
    """
    folder = model_folder(path)
    config_path = folder / CONFIG_FILENAME
    config = ModelConfig.load(config_path)
    weights = folder / WEIGHTS_FILENAME
    if not weights.is_file():
        raise ModelError(f"{weights}: weights file not found")
    module = _build(config, config_path)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"{weights}: cannot read weights: {exc}") from exc
    bad = non_finite_tensors(state.items())
    if bad:
        raise NonFiniteOutputError(
            f"{weights}: weights {describe_names(bad)} not finite (NaN or infinite); "
            "the model is broken (diverged training?)"
        )
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(
            f"{weights}: weights do not match architecture {config.architecture!r} "
            f"with these arch_kwargs: {_state_dict_problems(exc)}"
        ) from exc
    _dry_run(module, config, config_path)
    module.eval().to(device)
    # Module.to(memory_format=...) exists at runtime but is missing from torch's overload stubs
    module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return LoadedModel(module=module, config=config, path=folder, weights_sha256=file_sha256(weights))


def _build(config: ModelConfig, config_path: Path) -> nn.Module:
    """The untrained network of ``config``; a builder's own refusal is a :class:`ModelConfigError`."""
    try:
        return create_model(config.architecture, **config.arch_kwargs)
    except ModelError as exc:
        raise type(exc)(f"{config_path}: {exc}") from None
    except (TypeError, ValueError, KeyError, IndexError, RuntimeError) as exc:
        raise ModelConfigError(
            f"{config_path}: architecture {config.architecture!r} does not build from its arch_kwargs: "
            f"{one_line(exc)}"
        ) from exc


def _dry_run(module: nn.Module, config: ModelConfig, config_path: Path) -> None:
    """Run the network once on a zero patch of its input size: a config whose sizes do not fit the
    network (e.g. a centre crop smaller than the layers expect) fails here, not at inference."""
    size = config.input_size
    module.eval()
    try:
        with torch.inference_mode():
            out = module(torch.zeros(1, 3, size, size))
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        raise ModelConfigError(
            f"{config_path}: architecture {config.architecture!r} does not run on {size}x{size} px input "
            f"(patch_size {config.patch_size}, center_crop {config.center_crop}): {one_line(exc)}"
        ) from exc
    if not isinstance(out, torch.Tensor) or out.numel() != 1:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelConfigError(
            f"{config_path}: architecture {config.architecture!r} gives {shape} per patch, expected one logit"
        )


def _state_dict_problems(exc: RuntimeError, shown: int = 2) -> str:
    """torch's multi-line ``load_state_dict`` error as one line: the first problems, then a count."""
    lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
    if not lines:
        return one_line(exc)
    text = "; ".join(lines[:shown])
    return text + (f" (+{len(lines) - shown} more)" if len(lines) > shown else "")
