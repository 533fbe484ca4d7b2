"""The run folder of ``wsi-train``: settings, atomic checkpoints, resume, log, plots, summary.

``RUN/train_config.yaml`` is written first; ``RUN/checkpoints/last.pt`` after every completed epoch
(model, optimizer, weight average, history, selection state) and ``best.pt`` when validation
improves, each through a temporary file and a rename. An interrupted run therefore always holds
its last completed epoch, and ``--resume`` continues from there (from scratch when no epoch was
completed); ``--overwrite`` starts again in the same folder.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml

from wsi_pipeline.errors import OutputError, TrainingError

CHECKPOINT_DIR = "checkpoints"
LAST_CKPT = "last.pt"
BEST_CKPT = "best.pt"
LOG_CSV = "log.csv"
CONFIG_YAML = "train_config.yaml"
SUMMARY_JSON = "summary.json"
MODEL_DIR = "model"
LAST_MODEL_DIR = "last"
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


class RunFolder:
    """Files of one training run under ``path``."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.checkpoints = self.path / CHECKPOINT_DIR

    # -- start / resume --------------------------------------------------------
    def prepare(self, resume: bool, overwrite: bool) -> dict[str, Any] | None:
        """Make the folder ready; return the last checkpoint when resuming one (else ``None``)."""
        if resume and overwrite:
            raise TrainingError(f"{self.path}: --resume and --overwrite exclude each other")
        exists = self.path.exists() and any(self.path.iterdir())
        if exists and not resume:
            if not overwrite:
                state = "holds an interrupted run" if not self.is_finished() else "holds a finished run"
                raise OutputError(
                    f"{self.path}: run folder {state}; use --resume to continue it, --overwrite to start "
                    "again, or another -o"
                )
            if not (self.path / CONFIG_YAML).is_file():
                raise OutputError(
                    f"{self.path}: not a training run folder (no {CONFIG_YAML}); not deleting it"
                )
            shutil.rmtree(self.path)
        if resume and not (self.path / CONFIG_YAML).is_file():
            raise OutputError(f"{self.path}: nothing to resume (no {CONFIG_YAML}); start a new run")
        try:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot create run folder: {exc.strerror or exc}") from exc
        if resume and (self.checkpoints / LAST_CKPT).is_file():
            return self.load(LAST_CKPT)
        return None

    def is_finished(self) -> bool:
        return (self.path / SUMMARY_JSON).is_file() and (self.path / MODEL_DIR).is_dir()

    def read_config(self) -> dict[str, Any]:
        try:
            data = yaml.safe_load((self.path / CONFIG_YAML).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise TrainingError(f"{self.path / CONFIG_YAML}: cannot read: {exc}") from exc
        if not isinstance(data, dict):
            raise TrainingError(f"{self.path / CONFIG_YAML}: expected a mapping of settings")
        return data

    def write_config(self, settings: dict[str, Any]) -> None:
        self._write_text(self.path / CONFIG_YAML, yaml.safe_dump(settings, sort_keys=False))

    # -- checkpoints -----------------------------------------------------------
    def save(self, name: str, state: dict[str, Any]) -> None:
        path = self.checkpoints / name
        tmp = path.with_suffix(".tmp")
        try:
            torch.save(state, tmp)
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise OutputError(f"{path}: cannot write checkpoint: {exc.strerror or exc}") from exc

    def load(self, name: str) -> dict[str, Any]:
        path = self.checkpoints / name
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, ValueError) as exc:
            raise TrainingError(f"{path}: cannot read checkpoint: {str(exc).splitlines()[0]}") from exc

    def has(self, name: str) -> bool:
        return (self.checkpoints / name).is_file()

    # -- logs ------------------------------------------------------------------
    def write_log(self, history: list[dict[str, float]]) -> None:
        lines: list[str] = []

        class _Sink:
            def write(self, text: str) -> None:
                lines.append(text)

        writer = csv.DictWriter(_Sink(), fieldnames=LOG_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self._write_text(self.path / LOG_CSV, "".join(lines))

    def write_plots(self, history: list[dict[str, float]]) -> None:
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
            fig.savefig(self.path / name, dpi=100)
            plt.close(fig)

    def write_summary(self, summary: dict[str, Any]) -> None:
        self._write_text(self.path / SUMMARY_JSON, json.dumps(summary, indent=2) + "\n")

    @staticmethod
    def _write_text(path: Path, text: str) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            tmp.write_text(text)
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise OutputError(f"{path}: cannot write: {exc.strerror or exc}") from exc
