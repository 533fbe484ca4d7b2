"""The training loop behind ``wsi-train``: in-memory data, seeded split, checkpoints, logs, plots."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from wsi_pipeline.devices import resolve_device
from wsi_pipeline.errors import DatasetError, OptionError, OutputError
from wsi_pipeline.evaluation.metrics import roc_auc
from wsi_pipeline.evaluation.report import binary_metrics
from wsi_pipeline.models.config import ModelConfig
from wsi_pipeline.models.io import preprocess_patches, save_model
from wsi_pipeline.models.registry import create_model
from wsi_pipeline.training.augment import Augmenter, random_crop_nhwc
from wsi_pipeline.training.config import TrainConfig

CHECKPOINT_DIR = "checkpoints"
LAST_CKPT = "last.pt"
BEST_CKPT = "best.pt"
LOG_CSV = "log.csv"
CONFIG_YAML = "train_config.yaml"
LOG_FIELDS = [
    "epoch",
    "lr",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "val_auc",
    "seconds",
    "images_per_s",
]


@dataclass
class TrainResult:
    """Where the artefacts are and what the best model scored on the validation split."""

    run_dir: Path
    model_dir: Path
    history: list[dict[str, float]]
    metrics: dict[str, Any]
    epochs_run: int
    stopped_early: bool


def lr_at(config: TrainConfig, epoch: int, step: int, steps_per_epoch: int) -> float:
    """Learning rate for ``step`` of ``epoch`` (0-based) under the configured schedule."""
    progress = (epoch + step / max(1, steps_per_epoch)) / config.epochs
    if config.lr_schedule == "exponential":
        return config.lr * config.lr_decay**epoch
    if config.lr_schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * progress))
    if config.lr_schedule == "onecycle":
        warm = 0.15
        if progress < warm:
            return config.lr * (0.04 + 0.96 * progress / warm)
        return config.lr * (0.002 + 0.998 * 0.5 * (1 + math.cos(math.pi * (progress - warm) / (1 - warm))))
    return config.lr


def _arch_kwargs(config: TrainConfig) -> dict[str, Any]:
    """The model's arguments; architectures with an ``input_size`` argument (``seed_cnn``) get the
    centre-crop size unless it is set explicitly."""
    kwargs = dict(config.model_kwargs)
    if config.center_crop and "input_size" not in kwargs:
        try:
            create_model(config.model, input_size=config.center_crop, **kwargs)
        except TypeError:
            return kwargs
        kwargs["input_size"] = config.center_crop
    return kwargs


def _make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay
    )


def _load_data(data_path: Path, config: TrainConfig, progress: bool) -> tuple[np.ndarray, np.ndarray, dict]:
    """Open the dataset, optionally sample / drop outliers, and read it into memory."""
    from wsi_pipeline.data import load_arrays, open_patch_dataset, stratified_sample

    dataset = open_patch_dataset(data_path)
    summary: dict[str, Any] = {"path": str(data_path), **dataset.describe()}
    indices = np.arange(len(dataset), dtype=np.int64)
    if config.max_patches is not None and config.max_patches < len(dataset):
        indices = stratified_sample(dataset.labels, config.max_patches, seed=config.seed)
        summary["sampled"] = int(len(indices))
    if config.remove_outliers:
        from wsi_pipeline.data.outliers import find_outliers

        report = find_outliers(dataset, indices=indices, progress=progress)
        summary["outliers"] = report.summary()
        indices = report.keep
    images, labels = load_arrays(dataset, indices, progress=progress)
    if len(np.unique(labels)) < 2:
        raise DatasetError(
            f"{data_path}: training needs both classes, found only label(s) {np.unique(labels)}"
        )
    return images, labels, summary


def _channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    sums = torch.zeros(3, dtype=torch.float64)
    sq = torch.zeros(3, dtype=torch.float64)
    count = 0
    for start in range(0, len(images), 1024):
        x = images[start : start + 1024].to(torch.float64).div_(255.0).reshape(-1, 3)
        sums += x.sum(0)
        sq += (x * x).sum(0)
        count += len(x)
    mean = sums / count
    std = (sq / count - mean * mean).clamp_min(1e-8).sqrt()
    return [round(float(v), 5) for v in mean], [round(float(v), 5) for v in std]


@torch.inference_mode()
def predict_logits(
    model: nn.Module, images: torch.Tensor, mcfg: ModelConfig, device: torch.device, batch_size: int
) -> torch.Tensor:
    """Logits for uint8 NHWC images (already stain-normalised) with the inference preprocessing."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        batch = preprocess_patches(images[start : start + batch_size].to(device), mcfg)
        out.append(model(batch).float().reshape(-1).cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


def _bce(logits: torch.Tensor, targets: torch.Tensor, smoothing: float) -> torch.Tensor:
    if smoothing:
        targets = targets * (1 - smoothing) + 0.5 * smoothing
    return nn.functional.binary_cross_entropy_with_logits(logits, targets)


def _write_plots(run_dir: Path, history: list[dict[str, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    for name, keys, ylabel in (
        ("loss.png", ("train_loss", "val_loss"), "binary cross-entropy"),
        ("accuracy.png", ("train_acc", "val_acc", "val_auc"), "accuracy / AUC"),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        for key in keys:
            ax.plot(epochs, [h[key] for h in history], marker="o", label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(run_dir / name, dpi=100)
        plt.close(fig)


def _prepare_run_dir(run_dir: Path, resume: bool) -> Path | None:
    ckpt = run_dir / CHECKPOINT_DIR / LAST_CKPT
    if resume:
        if not ckpt.is_file():
            raise OutputError(f"{run_dir}: nothing to resume (no {CHECKPOINT_DIR}/{LAST_CKPT})")
        return ckpt
    if run_dir.exists() and any(run_dir.iterdir()):
        raise OutputError(f"{run_dir}: run folder exists and is not empty (use --resume or another -o)")
    try:
        (run_dir / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{run_dir}: cannot create run folder: {exc}") from exc
    return None


def train(
    data_path: Path | str,
    config: TrainConfig,
    run_dir: Path | str,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train ``config.model`` on the patch dataset at ``data_path``; artefacts go to ``run_dir``:

    ``model/`` (best weights + config, the model to ship), ``last/``, ``checkpoints/{last,best}.pt``
    (resumable), ``log.csv``, ``loss.png``, ``accuracy.png``, ``train_config.yaml``, ``summary.json``.
    """
    from tqdm import tqdm

    data_path, run_dir = Path(data_path), Path(run_dir)
    config.validate()
    if not data_path.exists():
        raise DatasetError(f"{data_path}: dataset path not found")
    torch.manual_seed(config.seed)  # seeds the weight initialisation and dropout
    try:  # unknown names and bad arguments fail before any data is loaded
        arch_kwargs = _arch_kwargs(config)
        model = create_model(config.model, **arch_kwargs)
    except (TypeError, ValueError) as exc:
        raise OptionError(
            f"model_kwargs {config.model_kwargs} do not fit model {config.model!r}: {exc}"
        ) from None
    ckpt_path = _prepare_run_dir(run_dir, resume)
    device = resolve_device(config.device)
    torch.set_num_threads(config.num_threads or max(1, min(4, os.cpu_count() or 1)))
    (run_dir / CONFIG_YAML).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))

    images_np, labels_np, data_summary = _load_data(data_path, config, progress)
    from wsi_pipeline.data import stratified_split

    split_seed = config.seed if config.split_seed is None else config.split_seed
    train_idx, val_idx = stratified_split(labels_np, config.val_fraction, seed=split_seed)
    stain_params = None
    if config.stain_normalization:
        from wsi_pipeline.models.stain import fit_normalizer

        normalizer = fit_normalizer(config.stain_normalization, images_np[train_idx], seed=config.seed)
        images_np = normalizer.normalize_uint8(images_np)
        stain_params = normalizer.to_dict()
    images = torch.from_numpy(images_np)
    labels = torch.from_numpy(labels_np.astype(np.float32))
    train_idx_t = torch.from_numpy(train_idx)
    val_images, val_labels = images[val_idx], labels_np[val_idx]
    mean, std = (
        _channel_stats(images[train_idx_t]) if config.input_norm == "dataset" else ([0.0] * 3, [1.0] * 3)
    )
    data_summary.update(
        {
            "split": {
                "method": "stratified_split",
                "val_fraction": config.val_fraction,
                "seed": split_seed,
                "n_train": int(len(train_idx)),
                "n_val": int(len(val_idx)),
                "n_val_tumor": int(val_labels.sum()),
            },
        }
    )
    mcfg = ModelConfig(
        architecture=config.model,
        arch_kwargs=arch_kwargs,
        name=run_dir.name,
        center_crop=config.center_crop,
        mean=mean,
        std=std,
        stain_normalization=stain_params,
        data=data_summary,
        training=config.to_dict(),
    )
    eval_cfg = dataclasses.replace(mcfg, stain_normalization=None)  # images are already normalised

    model.to(device)
    optimizer = _make_optimizer(config, model)
    history: list[dict[str, float]] = []
    start_epoch, bad_epochs = 0, 0
    best_score = math.inf
    if ckpt_path is not None:
        state = torch.load(ckpt_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, bad_epochs, best_score = state["epoch"], state["bad_epochs"], state["best_score"]
        history = state["history"]
        if state.get("split_n_val") != len(val_idx):
            raise OutputError(f"{run_dir}: checkpoint was made with a different data split; cannot resume")

    steps = math.ceil(len(train_idx) / config.batch_size)
    stopped_early = False
    crop = config.center_crop
    for epoch in range(start_epoch, config.epochs):
        if config.early_stopping and bad_epochs >= config.early_stopping:
            stopped_early = True
            break
        t0 = time.perf_counter()
        model.train()
        order = train_idx_t[
            torch.from_numpy(np.random.default_rng([config.seed, epoch]).permutation(len(train_idx)))
        ]
        augmenter = Augmenter(config.augment, seed=config.seed * 1000 + epoch)
        crop_gen = torch.Generator().manual_seed(config.seed * 1000 + epoch + 7)
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(
            range(steps),
            desc=f"epoch {epoch + 1}/{config.epochs}",
            unit="batch",
            disable=not progress,
            mininterval=2.0,
            leave=False,
        )
        for step in bar:
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            if len(idx) < 2:
                continue
            for group in optimizer.param_groups:
                group["lr"] = lr_at(config, epoch, step, steps)
            xb = images[idx]
            if crop:
                xb = random_crop_nhwc(xb, crop, config.crop_jitter, crop_gen)
            xb = xb.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
            xb = xb.contiguous()  # plain NCHW: channels-last batches crash conv backward on some CPU builds
            xb = augmenter(xb)
            xb = (xb - torch.tensor(mean, device=device).view(1, 3, 1, 1)) / torch.tensor(
                std, device=device
            ).view(1, 3, 1, 1)
            yb = labels[idx].to(device)
            logits = model(xb).reshape(-1)
            loss = _bce(logits, yb, config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int(((logits.detach() > 0).float() == yb).sum())
            seen += len(idx)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}", refresh=False)
        bar.close()
        train_seconds = time.perf_counter() - t0
        val_logits = predict_logits(model, val_images, eval_cfg, device, config.eval_batch_size)
        val_loss = float(_bce(val_logits, torch.from_numpy(val_labels.astype(np.float32)), 0.0))
        val_prob = torch.sigmoid(val_logits).numpy()
        row = {
            "epoch": epoch + 1,
            "lr": lr_at(config, epoch, steps - 1, steps),
            "train_loss": loss_sum / max(1, seen),
            "train_acc": correct / max(1, seen),
            "val_loss": val_loss,
            "val_acc": float(((val_prob >= 0.5) == val_labels).mean()),
            "val_auc": roc_auc(val_labels, val_prob),
            "seconds": time.perf_counter() - t0,
            "images_per_s": seen / max(train_seconds, 1e-9),
        }
        history.append(row)
        score = val_loss if config.select_metric == "val_loss" else -row["val_auc"]
        improved = score < best_score
        if improved:
            best_score, bad_epochs = score, 0
        else:
            bad_epochs += 1
        if progress:
            tqdm.write(
                " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
                + (" *" if improved else "")
            )
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch + 1,
            "bad_epochs": bad_epochs,
            "best_score": best_score,
            "history": history,
            "split_n_val": int(len(val_idx)),
        }
        _atomic_torch_save(state, run_dir / CHECKPOINT_DIR / LAST_CKPT)
        if improved:
            _atomic_torch_save(
                {"model": model.state_dict(), "epoch": epoch + 1}, run_dir / CHECKPOINT_DIR / BEST_CKPT
            )
        _write_log(run_dir / LOG_CSV, history)
        _write_plots(run_dir, history)
    else:
        stopped_early = bool(
            config.early_stopping and bad_epochs >= config.early_stopping and len(history) < config.epochs
        )

    save_model(run_dir / "last", model, dataclasses.replace(mcfg, metrics={"epoch": len(history)}))
    if not (run_dir / CHECKPOINT_DIR / BEST_CKPT).is_file():
        raise OutputError(f"{run_dir}: training diverged (validation loss was never finite); lower --lr")
    best = torch.load(run_dir / CHECKPOINT_DIR / BEST_CKPT, map_location=device, weights_only=True)
    model.load_state_dict(best["model"])
    val_prob = torch.sigmoid(
        predict_logits(model, val_images, eval_cfg, device, config.eval_batch_size)
    ).numpy()
    metrics = binary_metrics(val_labels, val_prob, seed=config.seed)
    metrics.update({"split": "validation", "best_epoch": int(best["epoch"])})
    total_seconds = float(sum(h["seconds"] for h in history))
    final_cfg = dataclasses.replace(
        mcfg,
        metrics=metrics,
        training={
            **config.to_dict(),
            "epochs_run": len(history),
            "best_epoch": int(best["epoch"]),
            "stopped_early": stopped_early,
            "train_seconds": round(total_seconds, 1),
            "device": str(device),
            "torch_threads": torch.get_num_threads(),
            "torch_version": torch.__version__,
        },
    )
    model_dir = save_model(run_dir / "model", model, final_cfg)
    (run_dir / "summary.json").write_text(
        json.dumps(
            {
                "metrics": metrics,
                "epochs_run": len(history),
                "stopped_early": stopped_early,
                "train_seconds": total_seconds,
                "history": history,
            },
            indent=2,
        )
        + "\n"
    )
    return TrainResult(run_dir, model_dir, history, metrics, len(history), stopped_early)


def _atomic_torch_save(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _write_log(path: Path, history: list[dict[str, float]]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LOG_FIELDS)
        writer.writeheader()
        for row in history:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
