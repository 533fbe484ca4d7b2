"""Resume support: which slides already have a complete result of the same slide file and parameters.

A slide is skipped only when ``OUT/<stem>/`` passes :func:`~wsi_pipeline.outputs.check_outputs`
(every output the run's options ask for, and every file the completion manifest lists with its size
and checksum), its ``summary.json`` reads back as a complete
:class:`~wsi_pipeline.summary.SlideSummary`, and the resume key matches: the ``params_hash`` (model
weights + result-changing options) and the ``slide_file`` identity (resolved path, size, mtime,
content digest; :mod:`wsi_pipeline.slide.identity`) equal the new run's. Everything else is redone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from wsi_pipeline.errors import WsiPipelineError
from wsi_pipeline.files import slide_out_dir
from wsi_pipeline.options import InferenceOptions
from wsi_pipeline.outputs import check_outputs, read_summary
from wsi_pipeline.slide.identity import SlideFile, slide_file_identity
from wsi_pipeline.summary import SlideSummary

__all__ = ["ResumePlan", "is_up_to_date", "plan_resume", "read_complete_summary", "stale_reason"]


def read_complete_summary(out_dir: Path, options: InferenceOptions | None = None) -> SlideSummary | None:
    """The slide's summary when its output folder is complete and intact for a run with ``options``
    (default: the options the summary records), else ``None``."""
    out_dir = Path(out_dir)
    summary = read_summary(out_dir)
    if summary is None or check_outputs(out_dir, options or summary.options) is not None:
        return None
    return summary


def stale_reason(
    out_dir: Path,
    params_hash: str,
    slide_file: SlideFile | None,
    options: InferenceOptions | None = None,
) -> tuple[str | None, SlideSummary | None]:
    """``(why out_dir must be redone, None)`` or ``(None, summary)`` when it can be kept."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return "no result yet", None
    summary = read_summary(out_dir)
    if summary is None:
        return "summary.json missing or incomplete", None
    if not params_hash or summary.params_hash != params_hash:
        return "made with another model or options", None
    if slide_file is None or summary.slide_file != slide_file:
        return "made from another or a changed slide file", None
    problem = check_outputs(out_dir, options or summary.options)  # reads every file: last
    if problem is not None:
        return problem, None
    return None, summary


def is_up_to_date(
    out_dir: Path,
    params_hash: str,
    slide_file: SlideFile | None,
    options: InferenceOptions | None = None,
) -> SlideSummary | None:
    """The summary when ``out_dir`` is complete (for ``options``), intact, made with ``params_hash``
    and from the slide file ``slide_file``; else ``None``."""
    return stale_reason(out_dir, params_hash, slide_file, options)[1]


@dataclass
class ResumePlan:
    """Slides to run and slides whose outputs can be kept (with their summaries); for each slide
    redone over an existing folder, why (``redo``)."""

    todo: list[Path]
    skipped: dict[Path, SlideSummary]
    redo: dict[Path, str] = field(default_factory=dict)


def _identity(slide: Path) -> SlideFile | None:
    try:
        return slide_file_identity(slide)
    except WsiPipelineError:
        return None  # missing, unreadable or not a file: the slide's own run reports it


def plan_resume(
    slides: list[Path],
    out_root: Path,
    params_hash: str,
    resume: bool = True,
    options: InferenceOptions | None = None,
) -> ResumePlan:
    """Split ``slides`` into those to (re)do and those already done from the same slide file with
    the same parameters (and, given the run's ``options``, with every output they ask for)."""
    plan = ResumePlan(todo=[], skipped={})
    for slide in slides:
        out_dir = slide_out_dir(out_root, slide)
        if not resume:
            plan.todo.append(slide)
            continue
        reason, summary = stale_reason(out_dir, params_hash, _identity(slide), options)
        if summary is None:
            plan.todo.append(slide)
            if out_dir.exists():
                plan.redo[slide] = reason or ""
        else:
            plan.skipped[slide] = summary
    return plan
