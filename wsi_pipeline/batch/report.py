"""The run summary: one row per slide, written atomically as ``run_summary.csv`` + ``.json``."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from wsi_pipeline.files import JsonDict, json_safe, write_text_atomic

CSV_NAME = "run_summary.csv"
JSON_NAME = "run_summary.json"
COLUMNS = ("slide", "status", "slide_score", "category", "n_tiles_tissue", "seconds", "error", "worker")
STATUSES = ("done", "skipped", "failed")


@dataclass
class SlideRow:
    """Outcome of one slide in a batch run."""

    slide: str
    status: str  # done | skipped | failed
    slide_score: float | None = None
    n_tiles_tissue: int | None = None
    seconds: float | None = None
    error: str = ""
    worker: str = ""
    warnings: tuple[str, ...] = ()  # the slide summary's (run_summary.json only)
    category: str = ""  # the slide's call (summary.json "category"), for done and skipped slides

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")


@dataclass
class BatchReport:
    """What :func:`~wsi_pipeline.batch.run_batch` did, slide by slide."""

    out_root: Path
    rows: list[SlideRow] = field(default_factory=list)
    wall_seconds: float = 0.0
    n_workers: int = 0
    params_hash: str = ""
    stale_removed: int = 0

    def count(self, status: str) -> int:
        return sum(row.status == status for row in self.rows)

    @property
    def n_done(self) -> int:
        return self.count("done")

    @property
    def n_skipped(self) -> int:
        return self.count("skipped")

    @property
    def n_failed(self) -> int:
        return self.count("failed")

    @property
    def exit_code(self) -> int:
        """0 when every slide is done or skipped, 1 when any failed."""
        return 1 if self.n_failed else 0

    @property
    def csv_path(self) -> Path:
        return Path(self.out_root) / CSV_NAME

    @property
    def json_path(self) -> Path:
        return Path(self.out_root) / JSON_NAME

    def row(self, slide: str | Path) -> SlideRow:
        for row in self.rows:
            if row.slide == str(slide):
                return row
        raise KeyError(str(slide))

    def to_dict(self) -> JsonDict:
        return {
            "n_slides": len(self.rows),
            "n_done": self.n_done,
            "n_skipped": self.n_skipped,
            "n_failed": self.n_failed,
            "n_workers": self.n_workers,
            "wall_seconds": round(self.wall_seconds, 3),
            "params_hash": self.params_hash,
            "stale_temp_removed": self.stale_removed,
            "slides": [json_safe(asdict(row)) for row in self.rows],
        }

    def one_line(self) -> str:
        return (
            f"{len(self.rows)} slide(s): {self.n_done} done, {self.n_skipped} skipped, "
            f"{self.n_failed} failed in {self.wall_seconds:.1f} s"
        )


def _csv_cell(value: str | float | None) -> str | float:
    return "" if value is None else value


def write_run_summary(report: BatchReport) -> tuple[Path, Path]:
    """Write ``run_summary.csv`` and ``run_summary.json`` into the report's output folder."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in report.rows:
        data = asdict(row)
        writer.writerow([_csv_cell(data[c]) for c in COLUMNS])
    write_text_atomic(report.csv_path, buffer.getvalue())
    write_text_atomic(report.json_path, json.dumps(report.to_dict(), indent=2) + "\n")
    return report.csv_path, report.json_path


def read_run_summary_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a ``run_summary.csv`` as dicts of strings."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))
