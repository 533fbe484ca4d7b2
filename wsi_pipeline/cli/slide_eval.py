"""``wsi-pipeline slide-eval`` and ``wsi-pipeline calibrate``: slide-level evaluation on seeded
simulated slides, and fitting the calibration + decision rule stored in a model's config."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from wsi_pipeline.cli.common import device_option, is_quiet, model_option

F = Callable[..., Any]
#: Default slide sets: slide-eval (seed 1) and calibrate (seed 0), so the rule is never measured on
#: the slides it was fitted on.
EVAL_COUNTS = {"negative": 20, "itc": 4, "micro": 10, "macro": 6}
FIT_COUNTS = {"negative": 24, "itc": 4, "micro": 16, "macro": 8}


def _data_default(model_path: Path | None, data: Path | None) -> Path:
    """``--data``, else the dataset path the model config records (when it exists from here)."""
    if data is not None:
        return data
    from wsi_pipeline.errors import OptionError
    from wsi_pipeline.models.config import ModelConfig
    from wsi_pipeline.models.io import model_folder

    folder = model_folder(model_path)
    recorded = ModelConfig.load(folder).data.get("path")
    for candidate in [Path(recorded)] if recorded else []:
        if candidate.exists():
            return candidate
    raise OptionError(f"--data is needed: the model records no dataset found from here ({recorded!r})")


def _simulation_options(defaults: dict[str, int], seed: int) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        options = [
            click.option(
                "--data",
                type=click.Path(path_type=Path),
                default=None,
                show_default=False,
                help="The patch dataset the model was trained on (default: the path its config records).",
            ),
            model_option(),
            click.option("--seed", type=int, default=seed, show_default=True, help="Seed of the slide set."),
            *[
                click.option(
                    f"--{kind}",
                    type=click.IntRange(min=0),
                    default=n,
                    show_default=True,
                    help=f"Number of {kind} slides.",
                )
                for kind, n in defaults.items()
            ],
            click.option(
                "--grid",
                type=click.IntRange(min=24),
                default=72,
                show_default=True,
                help="Cells per slide side.",
            ),
            click.option(
                "--all-patches",
                is_flag=True,
                help="Build slides from every patch of --data (held-out data, or a model without a recorded "
                "validation split); warns, since training patches would make the figures optimistic.",
            ),
            click.option(
                "--workers",
                type=click.IntRange(min=1),
                default=None,
                show_default=False,
                help="Dask workers.",
            ),
            device_option(),
            click.option(
                "--batch-size",
                type=click.IntRange(min=1),
                default=256,
                show_default=True,
                help="Tiles per model call.",
            ),
        ]
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def _run(kw: dict[str, Any], counts: dict[str, int], **options: Any) -> Any:
    from wsi_pipeline.evaluation.slide_eval import SimulatedRun
    from wsi_pipeline.options import InferenceOptions

    return SimulatedRun(
        data=_data_default(kw["model_path"], kw["data"]),
        counts={kind: kw[kind] for kind in counts},
        seed=kw["seed"],
        grid=kw["grid"],
        all_patches=kw["all_patches"],
        workers=kw["workers"],
        options=InferenceOptions(viewer=False, device=kw["device"], batch_size=kw["batch_size"], **options),
    )


def _echo(text: str) -> None:
    if not is_quiet() or text.startswith(("warning", "error")):
        click.echo(text, err=text.startswith(("warning", "error")))


@click.command("slide-eval")
@_simulation_options(EVAL_COUNTS, seed=1)
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Output folder.",
)
@click.option(
    "--n-boot", type=click.IntRange(min=0), default=1000, show_default=True, help="Bootstrap resamples."
)
@click.option(
    "--tumor-threshold", type=click.FloatRange(0, 1), default=None, help="Override the rule's 'low'."
)
@click.option(
    "--lesion-threshold", type=click.FloatRange(0, 1, min_open=True), default=None, help="Override 'high'."
)
@click.option("--lesion-support", "lesion_support_mm2", type=click.FloatRange(0, 100), default=None,
              help="Override 'support_mm2'.")  # fmt: skip
def slide_eval_command(
    out_dir: Path,
    n_boot: int,
    tumor_threshold: float | None,
    lesion_threshold: float | None,
    lesion_support_mm2: float | None,
    **kw: Any,
) -> None:
    """Slide-level evaluation on seeded simulated slides built from the model's validation patches.

    Builds the slides (OUT/slides, TIFF + truth JSON), runs the pipeline on them as one batch
    (OUT/results), and writes OUT/slide_eval.json, slide_eval.md (the table), roc.png, froc.png and
    scores.png: slide AUC, confusion of true kind vs call, negatives called micro/macro, FROC,
    lesion detection, largest-lesion size error and tissue recall.
    """
    from wsi_pipeline.evaluation.slide_eval import slide_eval
    from wsi_pipeline.evaluation.slide_report import format_markdown

    run = _run(
        kw,
        EVAL_COUNTS,
        tumor_threshold=tumor_threshold,
        lesion_threshold=lesion_threshold,
        lesion_support_mm2=lesion_support_mm2,
    )
    result = slide_eval(run, out_dir, kw["model_path"], n_boot=n_boot, echo=_echo)
    if not is_quiet():
        click.echo(format_markdown(result))
    click.echo(f"wrote {out_dir / 'slide_eval.json'} and {out_dir / 'slide_eval.md'}")


@click.command("calibrate")
@_simulation_options(FIT_COUNTS, seed=0)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    show_default=False,
    help="New model folder: a copy of --model with the fitted calibration and rule in its config.json.",
)
@click.option("--in-place", is_flag=True, help="Write them into --model's own config.json instead.")
@click.option(
    "--work",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    show_default=False,
    help="Keep the simulated slides and their results here (default: a temporary folder).",
)
@click.option(
    "--max-negative-rate",
    type=click.FloatRange(0, 1),
    default=0.05,
    show_default=True,
    help="Operating point: most negative slides called micro/macro (fraction).",
)
@click.option(
    "--min-micro",
    type=click.FloatRange(0, 1),
    default=0.9,
    show_default=True,
    help="Operating point: fewest micrometastases found (fraction); every macro slide must be called macro.",
)
def calibrate_command(
    output: Path | None,
    in_place: bool,
    work: Path | None,
    max_negative_rate: float,
    min_micro: float,
    **kw: Any,
) -> None:
    """Fit a model's calibration and decision rule and store them in its config.json.

    1. Temperature scaling on the model's recorded validation split (wsi-infer then reports
    sigmoid(logit / T)). 2. Seeded simulated slides from the same split through the pipeline once;
    the rule (low, support, high) re-applied over a grid on their heatmaps; the most sensitive rule
    meeting the operating point is kept. Check it on other slides with `wsi-pipeline slide-eval`
    (another --seed).
    """
    from wsi_pipeline.evaluation.rule_fit import OperatingPoint
    from wsi_pipeline.evaluation.slide_eval import calibrate

    run = _run(kw, FIT_COUNTS)
    point = OperatingPoint(max_negative_rate=max_negative_rate, min_micro=min_micro)
    calibrate(run, kw["model_path"], output, in_place=in_place, point=point, work=work, echo=_echo)
