"""``wsi-pipeline``: umbrella command (demo, export, models, ensemble, view, slide-eval, calibrate,
domain-stats)."""

from __future__ import annotations

from pathlib import Path

import click

from wsi_pipeline.cli.common import CONTEXT, run_cli, standard_options
from wsi_pipeline.cli.demo import demo_command
from wsi_pipeline.cli.export import export_command
from wsi_pipeline.cli.slide_eval import calibrate_command, slide_eval_command
from wsi_pipeline.viewer.command import view_command


@click.group("wsi-pipeline", context_settings=CONTEXT)
@standard_options("wsi-pipeline")
def cli() -> None:
    """wsi_pipeline: tumour heatmaps and metastasis scores for lymph-node whole-slide images."""


@cli.command("models")
@standard_options("wsi-pipeline models")
def models_command() -> None:
    """List the registered architectures (for wsi-train --model)."""
    from wsi_pipeline.models import list_models

    for name in list_models():
        click.echo(name)


@cli.command("ensemble")
@standard_options("wsi-pipeline ensemble")
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o", "--output", "out_dir", type=click.Path(path_type=Path), required=True, help="New model folder."
)
@click.option("--name", default="ensemble", help="Name stored in the model config.")
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=None,
    show_default=False,
    help="Training dataset of the members: score the ensemble on their shared validation split and "
    "record the metrics in its config.",
)
def ensemble_command(models: tuple[Path, ...], out_dir: Path, name: str, data: Path | None) -> None:
    """Join trained models that read patches alike into one model averaging their logits.

    Evaluate the result with `wsi-eval --model OUT`; use it with `wsi-infer --model OUT`.
    """
    from wsi_pipeline.models import save_model
    from wsi_pipeline.models.ensemble import combine_models, members_train_hashes

    module, config = combine_models(list(models), name=name, require_same_split=data is not None)
    if data is not None:
        from wsi_pipeline.evaluation.validation import validation_metrics
        from wsi_pipeline.models.io import LoadedModel

        config.metrics = validation_metrics(LoadedModel(module.eval(), config, out_dir, ""), data)
        click.echo(
            f"validation ({config.metrics['n']} patches): accuracy {config.metrics['accuracy']:.4f}, "
            f"AUC {config.metrics['auc']:.4f}"
        )
    save_model(out_dir, module, config, train_hashes=members_train_hashes(models))
    click.echo(f"wrote {out_dir} ({len(models)} members)")


@cli.command("domain-stats")
@standard_options("wsi-pipeline domain-stats")
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    required=True,
    help="The model's training dataset (its recorded validation split is left out).",
)
@click.option("--patches", type=click.IntRange(min=2), default=4000, help="Training patches to sample.")
def domain_stats_command(model_dir: Path, data: Path, patches: int) -> None:
    """Record the training patches' stain/texture statistics in MODEL_DIR's config.json, for the
    out-of-domain warning of wsi-infer (trained models get them from wsi-train)."""
    from wsi_pipeline.evaluation.validation import domain_statistics_for_model
    from wsi_pipeline.models.config import ModelConfig

    config = ModelConfig.load(model_dir)
    config.domain = domain_statistics_for_model(config.data, data, n_patches=patches)
    path = config.save(model_dir)
    click.echo(
        f"wrote domain statistics of {config.domain.n_patches} training patches to {path} "
        f"(limit {config.domain.threshold:.2f} at the {config.domain.quantile:g} quantile)"
    )


for _command in (demo_command, export_command, view_command, slide_eval_command, calibrate_command):
    cli.add_command(standard_options(f"wsi-pipeline {_command.name}")(_command))


def main() -> None:
    run_cli(cli)
