"""``wsi-eval``: score a patch classifier on a labelled patch dataset."""

from __future__ import annotations

import csv
import json
from pathlib import Path

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
    type=click.Choice(["train", "valid", "test"]),
    default=None,
    show_default=False,
    help="PCam HDF5 split to use (default: all files found).",
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
@click.option("--tta", is_flag=True, help="Average the 8 flips/rotations of each patch (8x slower).")
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
    dataset = open_patch_dataset(data_path, split=split)
    torch_device = resolve_device(device)
    model = load_model(model_path, device=torch_device)
    result = evaluate_model(
        model,
        dataset,
        sample=sample,
        seed=seed,
        tta=tta,
        batch_size=batch_size,
        n_boot=n_boot,
        progress=not (no_progress or is_quiet()),
    )
    result.info["device"] = str(torch_device)
    if split:
        result.info["data"]["split"] = split
    summary = result.to_dict()
    to_stdout = json_path is not None and str(json_path) == "-"

    def say(text: str) -> None:  # with --json -, stdout carries the JSON only
        click.echo(text, err=to_stdout)

    say(
        f"model {model.name} ({model.path}) on {data_path}: {summary['n']} patches"
        + (" with TTA" if tta else "")
    )
    say(format_report(result.metrics))
    if to_stdout:
        click.echo(json.dumps(summary, indent=2))
    elif json_path is not None:
        write_text_atomic(json_path, json.dumps(summary, indent=2) + "\n")
        say(f"wrote {json_path}")
    if predictions_path is not None:
        ids = dataset.ids
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
