"""``wsi-eval``: score a patch classifier on a labelled patch dataset."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import click

from wsi_pipeline.cli.common import (
    CONTEXT,
    device_option,
    is_quiet,
    model_option,
    run_cli,
    standard_options,
)
from wsi_pipeline.errors import OptionError
from wsi_pipeline.files import write_text_atomic

if TYPE_CHECKING:  # the heavy imports stay inside main (fast --help)
    import numpy as np

    from wsi_pipeline.evaluation.report import EvaluationResult


def _change(name: str, value: float | None, plain: float | None) -> str:
    if value is None or plain is None:
        return f"{name} n/a"
    return f"{name} {value:.4f} ({value - plain:+.4f})"


def _predictions_csv(ids: list[str], labels, probs) -> str:
    from io import StringIO

    buf = StringIO()
    writer = csv.writer(buf)
    writer.writerow(["id", "label", "prob_tumor"])
    for ident, label, prob in zip(ids, labels.tolist(), probs.tolist(), strict=True):
        writer.writerow([ident, label, f"{prob:.6f}"])
    return buf.getvalue()


@click.command("wsi-eval", context_settings=CONTEXT)
@click.option(
    "--data",
    "data_path",
    type=click.Path(path_type=Path),
    required=True,
    help="Dataset: Kaggle folder (train/ + train_labels.csv), PCam HDF5 folder or _x.h5, or 0/ 1/ folders.",
)
@click.option(
    "--split",
    type=click.Choice(["val", "train", "valid", "test"]),
    default=None,
    show_default=False,
    help="val: only the model's recorded validation split of the data it was trained on; "
    "train/valid/test: the PCam HDF5 split to read (default: all patches found).",
)
@model_option()
@click.option(
    "--sample",
    type=int,
    default=None,
    show_default=False,
    help="Evaluate a seeded stratified sample of N patches (default: all).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --sample and the bootstrap.")
@click.option(
    "--tta",
    is_flag=True,
    help="Average the 8 flips/rotations of each patch: 8 model passes, 8x the cost "
    "(no gain for a D4-invariant model such as dense_cnn group=d4).",
)
@click.option(
    "--restain",
    "restain",
    multiple=True,
    default=None,
    metavar="H,E",
    help="Also score the data re-stained in HED space (haematoxylin x H, eosin x E, white kept); "
    "give 'default' for 0.7,1.3 and 1.3,0.8. Repeatable.",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(path_type=Path, allow_dash=True),
    default=None,
    show_default=False,
    help="Write metrics as JSON to this file; '-' writes them to stdout (the report then goes to stderr).",
)
@click.option(
    "--plots",
    "plots_dir",
    type=click.Path(path_type=Path),
    default=None,
    show_default=False,
    help="Folder for the ROC curve and confusion-matrix PNGs.",
)
@click.option(
    "--predictions",
    "predictions_path",
    type=click.Path(path_type=Path),
    default=None,
    show_default=False,
    help="Write per-patch probabilities as CSV (id,label,prob_tumor).",
)
@click.option("--batch-size", type=int, default=256, help="Patches per model call.")
@device_option()
@click.option(
    "--bootstrap", "n_boot", type=int, default=1000, help="Bootstrap resamples for the 95 % intervals."
)
@click.option(
    "--no-progress", is_flag=True, help="Hide the progress bar (shown only when stderr is a terminal)."
)
def evaluate_command(
    data_path: Path,
    split: str | None,
    model_path: Path | None,
    sample: int | None,
    seed: int,
    tta: bool,
    restain: tuple[str, ...],
    json_path: Path | None,
    plots_dir: Path | None,
    predictions_path: Path | None,
    batch_size: int,
    device: str,
    n_boot: int,
    no_progress: bool,
) -> None:
    """Evaluate a patch classifier: classification report, accuracy and AUC with 95 % bootstrap
    intervals, and the confusion matrix at threshold 0.5."""
    from wsi_pipeline.data import open_patch_dataset
    from wsi_pipeline.devices import resolve_device
    from wsi_pipeline.evaluation import evaluate_model, format_report
    from wsi_pipeline.models import load_model

    if sample is not None and sample <= 0:
        raise OptionError(f"--sample must be a positive number of patches, got {sample}")
    if batch_size <= 0:
        raise OptionError(f"--batch-size must be positive, got {batch_size}")
    if n_boot < 0:
        raise OptionError(f"--bootstrap must be >= 0, got {n_boot}")
    from wsi_pipeline.evaluation.restain import DEFAULT_RESTAININGS, parse_restaining, restain_patches
    from wsi_pipeline.evaluation.scope import evaluation_scope, overlap_warning

    stainings = [
        s
        for text in restain
        for s in (DEFAULT_RESTAININGS if text == "default" else [parse_restaining(text)])
    ]
    dataset = open_patch_dataset(data_path, split=None if split == "val" else split)
    torch_device = resolve_device(device)
    model = load_model(model_path, device=torch_device)
    progress = not (no_progress or is_quiet())
    scope = evaluation_scope(model, dataset, split == "val", sample, seed, progress=progress)
    warning = overlap_warning(scope)
    if warning:
        click.echo(warning, err=True)

    def run(transform: Callable[[np.ndarray], np.ndarray] | None = None) -> EvaluationResult:
        return evaluate_model(
            model,
            scope.cached,
            tta=tta,
            batch_size=batch_size,
            n_boot=n_boot,
            seed=seed,
            progress=progress,
            transform=transform,
        )

    result = run()
    result.info.update(sample=int(sample) if sample else None, data=dataset.describe())
    result.info["device"] = str(torch_device)
    result.info["patches"] = scope.description
    result.info["n_train_overlap"] = scope.n_train_overlap
    result.info["cost"] = {"model_passes_per_patch": 8 if tta else 1}
    if split:
        result.info["data"]["split"] = split
    restained = []
    for h, e in stainings:
        other = run(partial(restain_patches, haematoxylin=h, eosin=e))
        restained.append({"haematoxylin": h, "eosin": e, **other.metrics})
    result.info["restained"] = restained
    summary = result.to_dict()
    to_stdout = json_path is not None and str(json_path) == "-"

    def say(text: str) -> None:  # with --json -, stdout carries the JSON only
        click.echo(text, err=to_stdout)

    say(
        f"model {model.name} ({model.path}) on {data_path}: {summary['n']} patches"
        + (" with TTA" if tta else "")
    )
    say(format_report(result.metrics))
    for entry in restained:
        say(
            f"re-stained H x{entry['haematoxylin']:g}, E x{entry['eosin']:g}: "
            + _change("AUC", entry["auc"], result.metrics["auc"])
            + ", "
            + _change("accuracy", entry["accuracy"], result.metrics["accuracy"])
        )
    if to_stdout:
        click.echo(json.dumps(summary, indent=2))
    elif json_path is not None:
        write_text_atomic(json_path, json.dumps(summary, indent=2) + "\n")
        say(f"wrote {json_path}")
    if predictions_path is not None:
        ids = scope.cached.ids
        chosen = [ids[i] for i in result.indices]
        write_text_atomic(predictions_path, _predictions_csv(chosen, result.labels, result.probs))
        say(f"wrote {predictions_path}")
    if plots_dir is not None:
        from wsi_pipeline.evaluation.plots import plot_confusion_matrix, plot_roc

        names = tuple(model.config.class_names)
        cm_path = plot_confusion_matrix(
            summary["confusion_matrix"], plots_dir / "confusion_matrix.png", names
        )
        say(f"wrote {cm_path}")
        if summary["auc"] is not None:
            roc_path = plot_roc(result.labels, result.probs, plots_dir / "roc.png", summary["auc"])
            say(f"wrote {roc_path}")
        else:
            click.echo("ROC curve skipped: only one class in the evaluated patches", err=True)


evaluate_command = standard_options("wsi-eval")(evaluate_command)


def main() -> None:
    run_cli(evaluate_command)
