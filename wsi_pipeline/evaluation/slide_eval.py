"""``wsi-pipeline slide-eval`` and ``wsi-pipeline calibrate`` without the command line.

- :func:`slide_eval`: seeded simulated slides from the model's validation patches -> the pipeline
  as one batch -> ``slide_eval.json`` / ``.md`` and ROC, FROC and score plots;
- :func:`calibrate`: temperature fitted on the validation split, then the decision rule fitted on
  simulated slides (heatmaps computed once with the calibrated model), both written into a model
  folder's ``config.json``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wsi_pipeline.errors import OptionError, OutputError
from wsi_pipeline.evaluation.rule_fit import OperatingPoint, fit_rule
from wsi_pipeline.evaluation.simulated import (
    PatchPool,
    build_set,
    describe_counts,
    load_result,
    patch_pool,
    run_set,
    training_overlap,
)
from wsi_pipeline.evaluation.slide_metrics import evaluate_slides
from wsi_pipeline.evaluation.slide_report import format_markdown, plot_froc, plot_scores
from wsi_pipeline.files import write_text_atomic
from wsi_pipeline.models.calibration import Calibration, calibration_report, fit_temperature
from wsi_pipeline.models.config import CONFIG_FILENAME
from wsi_pipeline.models.io import LoadedModel, load_model, model_folder
from wsi_pipeline.options import InferenceOptions
from wsi_pipeline.simulate import SimulationSpec, expand_kinds

Echo = Callable[[str], object]


@dataclass(frozen=True)
class SimulatedRun:
    """How a set of simulated slides is built and run."""

    data: Path
    counts: Mapping[str, int]
    seed: int = 1
    grid: int = 72
    all_patches: bool = False
    workers: int | None = None
    options: InferenceOptions = field(default_factory=lambda: InferenceOptions(viewer=False))

    def spec(self) -> SimulationSpec:
        if self.grid < 24:
            raise OptionError(f"--grid must be >= 24 cells, got {self.grid}")
        return dataclasses.replace(SimulationSpec(), grid=(self.grid, self.grid))


def _open(run: SimulatedRun, model: LoadedModel) -> tuple[Any, PatchPool]:
    from wsi_pipeline.data import open_patch_dataset

    expand_kinds(dict(run.counts))  # checks the counts
    dataset = open_patch_dataset(run.data, check="none")
    return dataset, patch_pool(model, np.asarray(dataset.labels), run.all_patches)


def _simulate(
    run: SimulatedRun, model: LoadedModel, model_dir: Path, work: Path, echo: Echo
) -> dict[str, Any]:
    """Build the slides into ``work/slides``, run them into ``work/results``; the results and facts."""
    dataset, pool = _open(run, model)
    for warning in pool.warnings:
        echo(warning)
    echo(f"building {describe_counts(run.counts)} slides (seed {run.seed}) from {pool.description}")
    slides = build_set(dataset, pool, work / "slides", run.counts, run.seed, run.spec())
    used = np.unique(np.concatenate([_used(slide) for slide in slides]))
    overlap = training_overlap(model, dataset, used)
    if overlap:
        echo(f"warning: {overlap} of the {len(used)} patches placed are training patches of this model")
    run_set(slides, work / "results", run.options, model_dir, run.workers, echo)
    results = [load_result(slide, work / "results") for slide in slides]
    facts = {
        "seed": run.seed,
        "counts": dict(run.counts),
        "grid": [run.grid, run.grid],
        "data": str(run.data),
        "patches": pool.description,
        "n_patches_placed": int(len(used)),
        "n_training_patches_placed": overlap,
        "warnings": list(pool.warnings),
    }
    return {"results": results, "facts": facts}


def _used(slide: Path) -> np.ndarray:
    from wsi_pipeline.simulate import SlideTruth, truth_path

    return SlideTruth.load(truth_path(slide)).plan.used_indices


def write_report(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """``slide_eval.json``, ``slide_eval.md``, ``roc.png``, ``froc.png`` and ``scores.png``."""
    from wsi_pipeline.evaluation.plots import plot_roc

    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "slide_eval.json", out_dir / "slide_eval.md"
    write_text_atomic(json_path, json.dumps(result, indent=2) + "\n")
    write_text_atomic(md_path, format_markdown(result, per_slide=True))
    paths = [
        json_path,
        md_path,
        plot_froc(result, out_dir / "froc.png"),
        plot_scores(result, out_dir / "scores.png"),
    ]
    pos = [
        s for s in result["slides"] if s["kind"] in ("negative", "micro", "macro") and s["score"] is not None
    ]
    labels = np.array([s["kind"] != "negative" for s in pos], dtype=np.int64)
    if 0 < labels.sum() < len(labels):
        scores = np.array([s["score"] for s in pos], dtype=np.float64)
        title = "Slides: micro+macro vs negative"
        paths.append(plot_roc(labels, scores, out_dir / "roc.png", result["auc"]["value"], title))
    return paths


def slide_eval(
    run: SimulatedRun, out_dir: Path, model_path: Path | None = None, n_boot: int = 1000, echo: Echo = print
) -> dict[str, Any]:
    """Simulated slides through the pipeline and the slide-level table; writes into ``out_dir``."""
    folder = model_folder(model_path).resolve()
    model = load_model(folder, device="cpu")
    done = _simulate(run, model, folder, out_dir, echo)
    cases = [r.case() for r in done["results"]]
    result = evaluate_slides(cases, n_boot=n_boot, seed=run.seed)
    rule = done["results"][0].summary.decision_rule
    result["setup"] = {**done["facts"], "model": str(folder), "decision_rule": rule}
    write_report(result, out_dir)
    return result


def fit_calibration(model: LoadedModel, run: SimulatedRun) -> tuple[Calibration, dict[str, float]]:
    """Temperature on the model's validation split (or all patches with ``run.all_patches``)."""
    from wsi_pipeline.data import load_arrays

    dataset, pool = _open(run, model)
    images, labels = load_arrays(dataset, pool.indices)
    logits = model.predict_logits(images)
    temperature = fit_temperature(logits, labels)
    report = calibration_report(logits, labels, temperature)
    fitted_on = {
        "patches": pool.description,
        "data": str(run.data),
        **{k: round(v, 5) for k, v in report.items()},
    }
    return Calibration(temperature=round(temperature, 5), fitted_on=fitted_on), report


def _copy_model(source: Path, target: Path) -> None:
    if target.exists():
        raise OutputError(f"{target}: already exists; choose a new folder or --in-place")
    tmp = target.with_name(target.name + ".tmp-calibrate")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    tmp.replace(target)


def calibrate(
    run: SimulatedRun,
    model_path: Path | None,
    output: Path | None,
    in_place: bool = False,
    point: OperatingPoint = OperatingPoint(),
    work: Path | None = None,
    echo: Echo = print,
) -> dict[str, Any]:
    """Fit temperature + rule and write them into ``output`` (a copy of the model folder) or, with
    ``in_place``, into the model's own ``config.json``. Returns the fit report."""
    if (output is None) == (not in_place):
        raise OptionError("give either -o/--output NEW_FOLDER or --in-place")
    source = model_folder(model_path).resolve()
    model = load_model(source, device="cpu")
    calibration, report = fit_calibration(model, run)
    echo(
        f"temperature {calibration.temperature:.3f}: validation NLL {report['nll_uncalibrated']:.4f}"
        f" -> {report['nll_calibrated']:.4f}, ECE {report['ece_uncalibrated']:.4f}"
        f" -> {report['ece_calibrated']:.4f}"
    )
    with tempfile.TemporaryDirectory(prefix="wsi-calibrate-") as scratch:
        work_dir = Path(work) if work is not None else Path(scratch)
        staged = work_dir / "model"
        shutil.rmtree(staged, ignore_errors=True)
        shutil.copytree(source, staged)
        config = dataclasses.replace(model.config, calibration=calibration, decision_rule=None)
        config.save(staged)
        done = _simulate(run, load_model(staged, device="cpu"), staged, work_dir, echo)
        rule, fit = fit_rule(done["results"], point)
    m = fit["metrics"]
    echo(
        f"rule low {rule.low:g}, high {rule.high:g}, support {rule.support_mm2:g} mm2 "
        f"({fit['chosen']['support_cells']} cells): {fit['status']}; negatives called micro/macro "
        f"{m['negative_called']}/{m['n_negative']}, micro lesions found {m['micro_found']}/{m['n_micro']}, "
        f"macro slides called macro {m['macro_slides_called_macro']}/{m['n_macro_slides']}"
    )
    rule = dataclasses.replace(rule, fitted_on={**done["facts"], **fit})
    config = dataclasses.replace(model.config, calibration=calibration, decision_rule=rule)
    target = source if in_place else Path(output)  # type: ignore[arg-type]
    if not in_place:
        _copy_model(source, target)
    config.save(target)  # only config.json changes; the weights are untouched
    echo(f"wrote {target / CONFIG_FILENAME}")
    return {"calibration": dataclasses.asdict(calibration), "rule": rule.parameters(), "fit": fit}
