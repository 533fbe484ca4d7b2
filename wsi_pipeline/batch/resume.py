"""Resume support: which slides already have complete, matching outputs; stale temp cleanup.

A slide is skipped when all its outputs exist, ``OUT/<stem>/summary.json`` reads back as a complete
:class:`~wsi_pipeline.summary.SlideSummary`, and its ``params_hash`` (model weights + result-changing
options) equals the new run's. Everything else is redone. Temporary folders left by killed runs are
removed before (and after) a run.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from wsi_pipeline.files import TEMP_MARKER, slide_out_dir
from wsi_pipeline.options import InferenceOptions
from wsi_pipeline.outputs import has_outputs, read_summary
from wsi_pipeline.summary import SlideSummary

__all__ = ["ResumePlan", "clean_stale_temp", "is_up_to_date", "plan_resume", "read_complete_summary"]


def read_complete_summary(out_dir: Path, options: InferenceOptions | None = None) -> SlideSummary | None:
    """The slide's summary when its output folder holds every output a run with ``options`` writes
    (default: the options the summary records), else ``None``."""
    out_dir = Path(out_dir)
    summary = read_summary(out_dir)
    if summary is None or not has_outputs(out_dir, options or summary.options):
        return None
    return summary


def is_up_to_date(
    out_dir: Path, params_hash: str, options: InferenceOptions | None = None
) -> SlideSummary | None:
    """The summary when ``out_dir`` is complete (for ``options``) and made with ``params_hash``."""
    summary = read_complete_summary(out_dir, options)
    if summary is None or not params_hash or summary.params_hash != params_hash:
        return None
    return summary


@dataclass
class ResumePlan:
    """Slides to run and slides whose outputs can be kept (with their summaries)."""

    todo: list[Path]
    skipped: dict[Path, SlideSummary]


def plan_resume(
    slides: list[Path],
    out_root: Path,
    params_hash: str,
    resume: bool = True,
    options: InferenceOptions | None = None,
) -> ResumePlan:
    """Split ``slides`` into those to (re)do and those already done with the same parameters (and,
    given the run's ``options``, with every output they ask for, e.g. the viewer)."""
    todo: list[Path] = []
    skipped: dict[Path, SlideSummary] = {}
    for slide in slides:
        summary = is_up_to_date(slide_out_dir(out_root, slide), params_hash, options) if resume else None
        if summary is None:
            todo.append(slide)
        else:
            skipped[slide] = summary
    return ResumePlan(todo=todo, skipped=skipped)


def is_temp_name(name: str) -> bool:
    """True for the hidden temporary folders/files that outputs are built in before the rename."""
    return name.startswith(".") and TEMP_MARKER in name


def clean_stale_temp(out_root: Path) -> list[Path]:
    """Remove temporary output folders/files under ``out_root`` left by killed runs.

    Call only while no other run writes into ``out_root`` (one run per output folder).
    """
    out_root = Path(out_root)
    removed: list[Path] = []
    if not out_root.is_dir():
        return removed
    for entry in sorted(out_root.iterdir()):
        if not is_temp_name(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed
