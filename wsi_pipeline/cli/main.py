"""``wsi-pipeline``: umbrella command (demo, export, models)."""

from __future__ import annotations

import click

from wsi_pipeline import __version__
from wsi_pipeline.cli.common import run_cli


@click.group()
@click.version_option(__version__, prog_name="wsi-pipeline")
def cli() -> None:
    """wsi_pipeline: tumour heatmaps and metastasis scores for lymph-node whole-slide images."""


@cli.command("models")
def models_command() -> None:
    """List the registered architectures."""
    from wsi_pipeline.models import list_models

    for name in list_models():
        click.echo(name)


def _register_optional_commands() -> None:
    """Subcommands living in their own modules (added as the features land)."""
    import importlib

    for module_name, attr in (
        ("wsi_pipeline.cli.demo", "demo_command"),
        ("wsi_pipeline.cli.export", "export_command"),
    ):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        cli.add_command(getattr(module, attr))


_register_optional_commands()


def main() -> None:
    run_cli(cli)
