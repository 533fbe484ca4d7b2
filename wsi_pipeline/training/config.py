"""Training settings: defaults reproduce the origin study; YAML files override them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wsi_pipeline.devices import parse_device
from wsi_pipeline.errors import OptionError
from wsi_pipeline.models.stain import STAIN_METHODS
from wsi_pipeline.strict import build_dataclass
from wsi_pipeline.training.augment import AugmentSettings
from wsi_pipeline.training.schedules import SCHEDULES

OPTIMIZERS = ("adam", "adamw", "sgd")
SELECT_METRICS = ("val_loss", "val_auc")


@dataclass
class TrainConfig:
    """Everything ``wsi-train`` needs besides the data path and run folder.

    The defaults are the study's: Adam (lr 1e-3, x0.9 per epoch), binary cross-entropy,
    batch 32, 10 epochs, 10 % stratified validation split, early stopping on validation loss.
    """

    model: str = "seed_cnn"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    lr_schedule: str = "exponential"
    lr_decay: float = 0.9
    label_smoothing: float = 0.0
    #: mixup's Beta(alpha, alpha) parameter (0: off): each batch is blended with a shuffled copy of
    #: itself, inputs and targets alike.
    mixup: float = 0.0
    val_fraction: float = 0.1
    seed: int = 0
    #: Seed of the train/validation split (None: ``seed``). Fixing it while changing ``seed`` trains
    #: differently initialised models on the same split, e.g. ensemble members.
    split_seed: int | None = None
    #: Stop after this many epochs without a better validation loss (0: never stop early).
    early_stopping: int = 3
    #: Which validation figure picks the best checkpoint.
    select_metric: str = "val_loss"
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    #: The network sees the centre ``center_crop`` px of each patch (None: the whole patch);
    #: in training the crop is shifted by up to ``crop_jitter`` px per sample.
    center_crop: int | None = None
    crop_jitter: int = 0
    #: None, "macenko" or "reinhard" (fitted on the training set, applied again at inference).
    stain_normalization: str | None = None
    remove_outliers: bool = False
    #: Per-channel input normalisation: "dataset" (training-set mean/std) or "none".
    input_norm: str = "dataset"
    #: Use only a stratified sample of this many patches (quick runs); None: all.
    max_patches: int | None = None
    device: str = "auto"
    num_threads: int | None = None
    eval_batch_size: int = 256
    #: "auto" (bf16 where the device has it natively and it measures faster), "fp32" or "bf16".
    precision: str = "auto"
    #: Exponential moving average of the weights (0: off); the average is validated and shipped.
    ema_decay: float = 0.0
    #: Batch size on CUDA (None: ``batch_size``); the learning rate is scaled by sqrt(ratio).
    cuda_batch_size: int | None = 1024
    #: torch.compile the network (needs a C++ compiler on CPU; minutes of start-up).
    compile: bool = False
    #: Knowledge distillation: a model folder whose calibrated probabilities are blended into the
    #: training targets with ``distill_weight`` (see :mod:`wsi_pipeline.training.distill`); None: off.
    distill_from: str | None = None
    distill_weight: float = 0.5

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            self.augment = _build(AugmentSettings, self.augment, "augment")
        elif isinstance(self.augment, bool):
            self.augment = AugmentSettings(dihedral=self.augment)
        self.validate()

    def validate(self) -> None:
        """Raise :class:`OptionError` naming the first bad value."""
        checks: list[tuple[bool, str]] = [
            (isinstance(self.model, str) and bool(self.model), f"model must be a name, got {self.model!r}"),
            (isinstance(self.model_kwargs, dict), "model_kwargs must be a mapping"),
            (
                _is_int(self.epochs) and self.epochs >= 1,
                f"epochs must be an integer >= 1, got {self.epochs!r}",
            ),
            (
                _is_int(self.batch_size) and self.batch_size >= 2,
                f"batch_size must be >= 2, got {self.batch_size!r}",
            ),
            (_is_num(self.lr) and self.lr > 0, f"lr must be > 0, got {self.lr!r}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}"),
            (_is_num(self.weight_decay) and self.weight_decay >= 0, "weight_decay must be >= 0"),
            (
                self.lr_schedule in SCHEDULES,
                f"lr_schedule must be one of {SCHEDULES}, got {self.lr_schedule!r}",
            ),
            (
                _is_num(self.lr_decay) and 0 < self.lr_decay <= 1,
                f"lr_decay must be in (0, 1], got {self.lr_decay!r}",
            ),
            (
                _is_num(self.label_smoothing) and 0 <= self.label_smoothing < 0.5,
                "label_smoothing must be in [0, 0.5)",
            ),
            (_is_num(self.mixup) and self.mixup >= 0, f"mixup must be >= 0, got {self.mixup!r}"),
            (
                _is_num(self.val_fraction) and 0 < self.val_fraction < 1,
                f"val_fraction must be in (0, 1), got {self.val_fraction!r}",
            ),
            (_is_int(self.seed), f"seed must be an integer, got {self.seed!r}"),
            (
                self.split_seed is None or _is_int(self.split_seed),
                f"split_seed must be an integer or null, got {self.split_seed!r}",
            ),
            (
                _is_int(self.early_stopping) and self.early_stopping >= 0,
                "early_stopping must be an integer >= 0",
            ),
            (self.select_metric in SELECT_METRICS, f"select_metric must be one of {SELECT_METRICS}"),
            (
                self.center_crop is None or (_is_int(self.center_crop) and 8 <= self.center_crop <= 96),
                f"center_crop must be an integer in 8..96, got {self.center_crop!r}",
            ),
            (_is_int(self.crop_jitter) and self.crop_jitter >= 0, "crop_jitter must be an integer >= 0"),
            (
                self.stain_normalization in (None, *STAIN_METHODS),
                f"stain_normalization must be null or one of {STAIN_METHODS}, got {self.stain_normalization!r}",  # noqa: E501
            ),
            (isinstance(self.remove_outliers, bool), "remove_outliers must be true or false"),
            (
                self.input_norm in ("dataset", "none"),
                f"input_norm must be 'dataset' or 'none', got {self.input_norm!r}",
            ),
            (
                self.max_patches is None or (_is_int(self.max_patches) and self.max_patches >= 4),
                "max_patches must be null or an integer >= 4",
            ),
            (_is_device(self.device), f"device must be auto, cpu or cuda[:N], got {self.device!r}"),
            (
                self.num_threads is None or (_is_int(self.num_threads) and self.num_threads >= 1),
                "num_threads must be null or an integer >= 1",
            ),
            (_is_int(self.eval_batch_size) and self.eval_batch_size >= 1, "eval_batch_size must be >= 1"),
            (
                self.precision in ("auto", "fp32", "bf16"),
                f"precision must be auto, fp32 or bf16, got {self.precision!r}",
            ),
            (_is_num(self.ema_decay) and 0 <= self.ema_decay < 1, "ema_decay must be in [0, 1)"),
            (
                self.cuda_batch_size is None or (_is_int(self.cuda_batch_size) and self.cuda_batch_size >= 2),
                "cuda_batch_size must be null or an integer >= 2",
            ),
            (isinstance(self.compile, bool), "compile must be true or false"),
            (
                self.distill_from is None or (isinstance(self.distill_from, str) and bool(self.distill_from)),
                "distill_from must be null or a model folder",
            ),
            (
                _is_num(self.distill_weight) and 0 <= self.distill_weight <= 1,
                "distill_weight must be in [0, 1]",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise OptionError(f"training config: {message}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "training config") -> TrainConfig:
        if not isinstance(data, dict):
            raise OptionError(f"{source}: expected a mapping of settings")
        return _build(cls, data, source)

    @classmethod
    def from_yaml(cls, path: Path | str, overrides: dict[str, Any] | None = None) -> TrainConfig:
        """Read a YAML file of settings; ``overrides`` (e.g. CLI options) win over the file."""
        path = Path(path)
        if not path.is_file():
            raise OptionError(f"{path}: training config file not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise OptionError(f"{path}: cannot parse YAML: {str(exc).splitlines()[0]}") from exc
        if not isinstance(data, dict):
            raise OptionError(f"{path}: expected a mapping of settings at top level")
        data.update(overrides or {})
        return _build(cls, data, str(path))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_device(v: Any) -> bool:
    try:
        parse_device(v)
    except OptionError:
        return False
    return True


def _build(cls: type, data: dict[str, Any], source: str) -> Any:
    return build_dataclass(cls, data, source, OptionError, strip_prefix="training config: ")
