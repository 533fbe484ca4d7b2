"""``train()``: the run behind ``wsi-train``, as a sequence of the training stages.

data (:mod:`.data`: decode-once cache, split, statistics) -> network, optimiser and precision ->
epochs (:mod:`.loop`: augmented batches from :mod:`.batches`) with validation (:mod:`.validate`),
checkpoints and logs (:mod:`.run_folder`, :mod:`.state`) -> the best model saved with its typed
config. An interrupted run resumes from its last completed epoch.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wsi_pipeline.data.hashes import patch_hashes
from wsi_pipeline.devices import resolve_device
from wsi_pipeline.errors import DatasetError, OptionError, TrainingError
from wsi_pipeline.models.config import ModelConfig
from wsi_pipeline.models.io import save_model
from wsi_pipeline.models.registry import create_model
from wsi_pipeline.precision import Precision, choose_precision
from wsi_pipeline.training.batches import BatchStream, BatchTransform, gpu_resident
from wsi_pipeline.training.config import TrainConfig
from wsi_pipeline.training.data import TrainData, prepare_data
from wsi_pipeline.training.distill import training_targets
from wsi_pipeline.training.loop import Mixup, WeightAverage, bce, check_finite, train_epoch
from wsi_pipeline.training.run_folder import BEST_CKPT, LAST_CKPT, LAST_MODEL_DIR, MODEL_DIR, RunFolder
from wsi_pipeline.training.schedules import lr_at, scaled_lr
from wsi_pipeline.training.state import RunState, checkpoint, restore
from wsi_pipeline.training.validate import epoch_row, final_metrics

Echo = Callable[[str], None]
#: Plots are redrawn every this many epochs (and at the end); log.csv after every epoch.
PLOT_EVERY = 10


@dataclass(frozen=True)
class TrainResult:
    """Where the artefacts are and what the best model scored on the validation split."""

    run_dir: Path
    model_dir: Path
    history: list[dict[str, float]]
    metrics: dict[str, Any]
    epochs_run: int
    stopped_early: bool


def build_model(config: TrainConfig) -> tuple[nn.Module, dict[str, Any]]:
    """The untrained network and its arguments; a bad name or argument is an :class:`OptionError`
    before any data is read. Architectures with an ``input_size`` argument (``seed_cnn``) get the
    centre-crop size unless it is set explicitly."""
    kwargs = dict(config.model_kwargs)
    try:
        if config.center_crop and "input_size" not in kwargs:
            try:
                sized = {**kwargs, "input_size": config.center_crop}
                return create_model(config.model, **sized), sized
            except TypeError:
                pass
        return create_model(config.model, **kwargs), kwargs
    except (TypeError, ValueError) as exc:
        raise OptionError(
            f"model_kwargs {config.model_kwargs} do not fit model {config.model!r}: {exc}"
        ) from None


def make_optimizer(config: TrainConfig, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    params, decay = model.parameters(), config.weight_decay
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=decay)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=decay)


def train(
    data_path: Path | str,
    config: TrainConfig,
    run_dir: Path | str,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    echo: Echo | None = None,
    cache_root: Path | None = None,
) -> TrainResult:
    """Train ``config.model`` on the patch dataset at ``data_path``; artefacts go to ``run_dir``:
    ``model/`` (best weights + config: the model to ship), ``last/``, ``checkpoints/{last,best}.pt``,
    ``log.csv``, ``loss.png``, ``accuracy.png``, ``train_config.yaml``, ``summary.json``."""
    data_path = Path(data_path)
    say = echo or (lambda text: None)
    config.validate()
    if not data_path.exists():
        raise DatasetError(f"{data_path}: dataset path not found")
    torch.manual_seed(config.seed)  # weight initialisation and dropout
    model, arch_kwargs = build_model(config)
    folder = RunFolder(run_dir)
    saved = folder.prepare(resume, overwrite)
    folder.write_config(config.to_dict())
    device = resolve_device(config.device)
    torch.set_num_threads(config.num_threads or max(1, min(4, os.cpu_count() or 1)))
    data = prepare_data(data_path, config, cache_root=cache_root, progress=progress)
    mcfg = ModelConfig(
        architecture=config.model,
        arch_kwargs=arch_kwargs,
        name=folder.path.name,
        center_crop=config.center_crop,
        mean=data.mean,
        std=data.std,
        stain_normalization=data.stain,
        data=data.summary,
        training=config.to_dict(),
        domain=data.domain,
    )
    model.to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch stubs lack it
    batch_size, lr = config.batch_size, config.lr
    if device.type == "cuda" and config.cuda_batch_size:
        batch_size, lr = (
            config.cuda_batch_size,
            scaled_lr(config.lr, config.batch_size, config.cuda_batch_size),
        )
    resident = gpu_resident(data.images, device)
    targets = training_targets(config, data, device, say)  # hard labels, or distilled
    stream = BatchStream(data.images, targets, data.train_rows, batch_size, device, config.seed, resident)
    optimizer = make_optimizer(config, model, lr)
    average = WeightAverage(model, config.ema_decay) if config.ema_decay else None
    state = RunState()
    if saved is not None:
        state, precision = restore(saved, model, optimizer, average, len(data.val_rows))
    else:
        precision = _measure_precision(config, model, stream, mcfg)
    say(
        f"training {config.model}: {len(data.train_rows)} train / {len(data.val_rows)} validation patches "
        f"({int(data.val_labels.sum())} tumour), device {device}, precision {precision.name} "
        f"({precision.reason}), batch {batch_size}{', data on the GPU' if resident is not None else ''}, "
        f"{config.epochs} epochs" + (f", resuming after epoch {state.epoch}" if saved is not None else "")
    )
    runner: nn.Module = torch.compile(model) if config.compile else model  # type: ignore[assignment]
    judged = average.model if average is not None else model
    for epoch in range(state.epoch, config.epochs):
        if config.early_stopping and state.bad_epochs >= config.early_stopping:
            state.stopped_early = True
            break
        result = _run_epoch(runner, optimizer, stream, mcfg, config, lr, epoch, precision, average, progress)
        check_finite(model, f"after epoch {epoch + 1}")
        lr_end = lr_at(
            config.lr_schedule, lr, config.epochs, epoch, stream.steps - 1, stream.steps, config.lr_decay
        )
        row = epoch_row(judged, data, mcfg, device, precision, config.eval_batch_size, epoch, result, lr_end)
        improved = state.record(
            row, row["val_loss"] if config.select_metric == "val_loss" else -row["val_auc"]
        )
        say(
            " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
            + (" *" if improved else "")
        )
        folder.save(LAST_CKPT, checkpoint(state, model, optimizer, average, precision, len(data.val_rows)))
        if improved:
            folder.save(BEST_CKPT, {"model": judged.state_dict(), "epoch": epoch + 1})
        folder.write_log(state.history)
        if state.epoch % PLOT_EVERY == 0:
            folder.write_plots(state.history)
    else:
        state.stopped_early = bool(
            config.early_stopping
            and state.bad_epochs >= config.early_stopping
            and len(state.history) < config.epochs
        )
    return _finish(folder, judged, data, mcfg, device, precision, config, state)


def _run_epoch(
    runner: nn.Module,
    optimizer: torch.optim.Optimizer,
    stream: BatchStream,
    mcfg: ModelConfig,
    config: TrainConfig,
    lr: float,
    epoch: int,
    precision: Precision,
    average: WeightAverage | None,
    progress: bool,
) -> Any:
    transform = BatchTransform(mcfg, config.augment, config.crop_jitter, config.seed, epoch)
    steps = stream.steps

    def lr_at_step(step: int) -> float:
        return lr_at(config.lr_schedule, lr, config.epochs, epoch, step, steps, config.lr_decay)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=steps,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            unit="batch",
            mininterval=2.0,
            leave=False,
            disable=None,
        )
    try:
        return train_epoch(
            runner,
            optimizer,
            stream,
            transform,
            epoch,
            lr_at_step,
            precision,
            config.label_smoothing,
            average,
            on_step=(lambda n: bar.update(1)) if bar is not None else None,
            mix=Mixup(config.mixup, config.seed * 1000 + epoch + 29) if config.mixup else None,
        )
    finally:
        if bar is not None:
            bar.close()


def _measure_precision(
    config: TrainConfig, model: nn.Module, stream: BatchStream, mcfg: ModelConfig
) -> Precision:
    """fp32 or bf16 for this machine, timed on a real training step of a copy of the model."""
    probe = copy.deepcopy(model).train()
    patches, targets = next(stream.epoch(0))
    inputs = BatchTransform(mcfg, config.augment, config.crop_jitter, config.seed, 0)(patches)

    def step(precision: Precision) -> None:
        with precision.autocast(stream.device):
            loss = bce(probe(inputs).float().reshape(-1), targets)
        loss.backward()
        probe.zero_grad(set_to_none=True)

    return choose_precision(config.precision, stream.device, step)


def _finish(
    folder: RunFolder,
    judged: nn.Module,
    data: TrainData,
    mcfg: ModelConfig,
    device: torch.device,
    precision: Precision,
    config: TrainConfig,
    state: RunState,
) -> TrainResult:
    """Save ``last/``, reload the best epoch, score it and save ``model/`` and the summary."""
    save_model(
        folder.path / LAST_MODEL_DIR, judged, dataclasses.replace(mcfg, metrics={"epoch": len(state.history)})
    )
    if not folder.has(BEST_CKPT):
        raise TrainingError(f"{folder.path}: no epoch finished with a finite validation loss; lower --lr")
    best = folder.load(BEST_CKPT)
    judged.load_state_dict(best["model"])
    metrics = final_metrics(judged, data, mcfg, device, precision, config.eval_batch_size, config.seed)
    metrics["best_epoch"] = int(best["epoch"])
    seconds = float(sum(h["seconds"] for h in state.history))
    training = {
        **config.to_dict(),
        "epochs_run": len(state.history),
        "best_epoch": int(best["epoch"]),
        "stopped_early": state.stopped_early,
        "train_seconds": round(seconds, 1),
        "device": str(device),
        **precision.as_dict(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
    }
    final = dataclasses.replace(mcfg, metrics=metrics, training=training)
    hashes = patch_hashes(data.images, data.train_rows)  # lets wsi-eval warn about overlap
    model_dir = save_model(folder.path / MODEL_DIR, judged, final, train_hashes=hashes)
    folder.write_plots(state.history)
    folder.write_summary(
        {
            "metrics": metrics,
            "epochs_run": len(state.history),
            "stopped_early": state.stopped_early,
            "train_seconds": seconds,
            **precision.as_dict(),
            "history": state.history,
        }
    )
    return TrainResult(
        folder.path, model_dir, state.history, metrics, len(state.history), state.stopped_early
    )
