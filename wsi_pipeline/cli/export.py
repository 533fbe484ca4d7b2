"""``wsi-pipeline export``: write a model as TorchScript or ONNX plus a wsinfer config.json."""

from __future__ import annotations

from pathlib import Path

import click

from wsi_pipeline.cli.common import model_option
from wsi_pipeline.export import FORMATS


@click.command("export")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS, case_sensitive=False),
    default="torchscript",
    show_default=True,
    help="torchscript (loadable by wsinfer) or onnx.",
)
@model_option(dest="model_dir")
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder to write the exported model and its wsinfer config.json into.",
)
def export_command(fmt: str, model_dir: Path | None, out_dir: Path) -> None:
    """Export a patch model for other tools (e.g. `wsinfer run --model-path ... --config ...`).

    The exported network takes normalised (N, 3, 96, 96) float patches and returns two class
    scores [0, z]; their softmax gives the same tumour probability as wsi-infer.
    """
    from wsi_pipeline.export import export_model

    result = export_model(model_dir, out_dir, fmt)
    click.echo(f"wrote {result.model_path}")
    click.echo(f"wrote {result.config_path}")
