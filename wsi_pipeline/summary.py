"""Stage 6 of the slide path: the typed slide summary (:class:`SlideSummary`), serialised in one place.

:meth:`SlideSummary.to_json` writes ``summary.json``; :meth:`SlideSummary.from_json` reads it back
(batch resume, the CLIs) and checks it, so every reader uses attributes, never string keys.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsi_pipeline.aggregation import CATEGORIES
from wsi_pipeline.diagnosis import LesionRecord, diagnosis_block
from wsi_pipeline.errors import OptionError
from wsi_pipeline.files import JsonDict, json_safe
from wsi_pipeline.inference.scores import InferenceStats
from wsi_pipeline.options import InferenceOptions
from wsi_pipeline.slide.identity import SlideFile
from wsi_pipeline.slide.info import SlideInfo
from wsi_pipeline.tiling import GridDescription

_SHA256 = re.compile(r"[0-9a-f]{64}")
_DIGITS = 4  # timings are recorded to 0.1 ms
_STAT_TIMES = ("read_s", "infer_s", "wait_s", "total_s")


@dataclass(frozen=True)
class ModelInfo:
    """Which model scored the slide."""

    name: str
    architecture: str
    weights_sha256: str
    path: str
    patch_size: int
    mpp: float


@dataclass(frozen=True)
class Timings:
    """Seconds per stage (``read_s``/``infer_s``/``wait_s`` from the inference engine), rounded to 0.1 ms."""

    open_s: float = 0.0
    tissue_s: float = 0.0
    thumbnail_s: float = 0.0
    aggregate_s: float = 0.0
    write_s: float = 0.0
    read_s: float = 0.0
    infer_s: float = 0.0
    wait_s: float = 0.0
    total_s: float = 0.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not (isinstance(value, (int, float)) and value >= 0):
                raise ValueError(f"timing {f.name} must be a number of seconds >= 0, got {value!r}")
            object.__setattr__(self, f.name, round(float(value), _DIGITS))


@dataclass(frozen=True)
class SlideSummary:
    """Everything ``summary.json`` records about one analysed slide."""

    slide_info: SlideInfo
    slide_score: float
    slide_score_method: str
    tumor_threshold: float
    n_tumor_regions: int
    tumor_area_mm2: float
    largest_tumor_region_mm: float
    category: str
    n_tiles_total: int
    n_tiles_tissue: int
    grid: GridDescription
    model: ModelInfo
    options: InferenceOptions
    params: JsonDict
    params_hash: str
    inference: InferenceStats
    software: dict[str, str]
    created_utc: str
    mask_shape: tuple[int, int]
    outputs: tuple[str, ...] = ()
    timings: Timings = field(default_factory=Timings)
    #: The slide file analysed (path, size, mtime, content digest): with ``params_hash`` the resume key.
    slide_file: SlideFile | None = None
    #: The decision rule applied: name, parameters, their sources, calibration (``lesions.rule_record``).
    decision_rule: JsonDict = field(default_factory=dict)
    lesions: tuple[LesionRecord, ...] = ()
    #: Cautions for the reader, e.g. the out-of-domain warning (:mod:`wsi_pipeline.domain`); shown in
    #: the diagnosis block.
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "lesions", tuple(self.lesions))
        object.__setattr__(self, "warnings", tuple(str(w) for w in self.warnings))
        if len(self.lesions) != self.n_tumor_regions:
            raise ValueError(f"{len(self.lesions)} lesion records for {self.n_tumor_regions} tumour regions")
        if not (math.isnan(self.slide_score) or 0.0 <= self.slide_score <= 1.0):
            raise ValueError(f"slide_score must be in [0, 1], got {self.slide_score}")
        if self.category not in CATEGORIES:
            raise ValueError(f"category must be one of {CATEGORIES}, got {self.category!r}")
        rows, cols = self.grid.shape
        if self.n_tiles_total != rows * cols or not 0 <= self.n_tiles_tissue <= self.n_tiles_total:
            raise ValueError(
                f"{self.n_tiles_tissue} tissue tiles of {self.n_tiles_total} on a {rows}x{cols} grid"
            )
        if self.n_tumor_regions < 0 or min(self.tumor_area_mm2, self.largest_tumor_region_mm) < 0:
            raise ValueError("tumour region count and sizes must not be negative")
        if not _SHA256.fullmatch(self.params_hash):
            raise ValueError(f"params_hash must be a sha256 hex digest, got {self.params_hash!r}")
        stats = self.inference  # recorded to 0.1 ms, like the timings: the summary in memory is the file's
        rounded = {key: round(getattr(stats, key), _DIGITS) for key in _STAT_TIMES}
        object.__setattr__(self, "inference", dataclasses.replace(stats, **rounded))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "warnings", tuple(str(w) for w in self.warnings))
        object.__setattr__(self, "mask_shape", (int(self.mask_shape[0]), int(self.mask_shape[1])))

    # -- what readers ask for ------------------------------------------------------
    @property
    def slide(self) -> str:
        """The slide's resolved path."""
        return self.slide_info.resolved_path

    @property
    def slide_name(self) -> str:
        return self.slide_info.name

    @property
    def mpp(self) -> float:
        return self.slide_info.mpp

    @property
    def mpp_source(self) -> str:
        return self.slide_info.mpp_source

    @property
    def level(self) -> int:
        return self.grid.level

    # -- summary.json ------------------------------------------------------------------
    def diagnosis(self) -> JsonDict:
        """The block ``summary.json`` opens with (:func:`wsi_pipeline.diagnosis.diagnosis_block`)."""
        return diagnosis_block(self.category, self.lesions, self.slide_score, self.warnings)

    def to_dict(self) -> JsonDict:
        grid, stats = self.grid, self.inference
        return {
            "diagnosis": self.diagnosis(),
            "slide": self.slide,
            "slide_name": self.slide_name,
            "slide_score": self.slide_score,
            "slide_score_method": self.slide_score_method,
            "tumor_threshold": self.tumor_threshold,
            "n_tumor_regions": self.n_tumor_regions,
            "tumor_area_mm2": self.tumor_area_mm2,
            "largest_tumor_region_mm": self.largest_tumor_region_mm,
            "category": self.category,
            "lesions": [json_safe(dataclasses.asdict(lesion)) for lesion in self.lesions],
            "decision_rule": self.decision_rule,
            "warnings": list(self.warnings),
            "n_tiles_total": self.n_tiles_total,
            "n_tiles_tissue": self.n_tiles_tissue,
            "mpp": self.mpp,
            "mpp_source": self.mpp_source,
            "level": grid.level,
            "level_downsample": grid.level_downsample,
            "slide_info": _slide_info_json(self.slide_info),
            "slide_file": None if self.slide_file is None else json_safe(self.slide_file.to_dict()),
            "tiles": {
                "size_model_px": grid.tile_size_model_px,
                "size_level0_px": grid.tile_size_level0_px,
                "stride_model_px": grid.stride_model_px,
                "stride_level0_px": grid.stride_level0_px,
                "model_mpp": grid.model_mpp,
                "origin_level0": list(grid.origin_level0),
            },
            "heatmap": {
                "shape": list(grid.shape),
                "cell_size_um": grid.cell_size_um,
                "cell_size_level0_px": grid.cell_size_level0_px,
                "cell_origin_level0": list(grid.cell_origin_level0),
            },
            "model": json_safe(dataclasses.asdict(self.model)),
            "options": self.options.to_dict(),
            "params": self.params,
            "params_hash": self.params_hash,
            "inference": {
                **{key: getattr(stats, key) for key in _STAT_TIMES},
                "n_blocks": stats.n_blocks,
                "n_batches": stats.n_batches,
                "device": stats.device,
                "precision": stats.precision,
                "precision_reason": stats.precision_reason,
                "mode": stats.mode,
                "frozen": stats.frozen,
                "batch_size": self.options.batch_size,
                "num_readers": self.options.num_readers,
            },
            "software": dict(self.software),
            "created_utc": self.created_utc,
            "tissue": {"n_tiles_tissue": self.n_tiles_tissue, "mask_shape": list(self.mask_shape)},
            "outputs": list(self.outputs),
            "timings": json_safe(dataclasses.asdict(self.timings)),
        }

    def to_json(self) -> str:
        return json.dumps(json_safe(self.to_dict()), indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> SlideSummary:
        """Parse and check ``summary.json`` text; ``ValueError`` when it is not a complete summary."""
        try:
            return _from_dict(json.loads(text))
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, OptionError) as exc:
            raise ValueError(f"not a complete slide summary: {type(exc).__name__}: {exc}") from None


# --- reading ---------------------------------------------------------------------------------
def _slide_info_json(info: SlideInfo) -> JsonDict:
    return {
        "path": info.resolved_path,
        "name": info.name,
        "format": info.format,
        "dimensions": list(info.dimensions),
        "level_count": info.level_count,
        "level_downsamples": list(info.level_downsamples),
        "mpp": info.mpp,
        "mpp_source": info.mpp_source,
        "bounds": None if info.bounds is None else list(info.bounds),
    }


def _from_dict(data: dict[str, Any]) -> SlideSummary:
    """The summary ``data`` describes; only exactly what :meth:`SlideSummary.to_dict` writes is accepted."""
    info, tiles, heatmap = data["slide_info"], data["tiles"], data["heatmap"]
    stats, tissue, timings = data["inference"], data["tissue"], data["timings"]
    summary = SlideSummary(
        slide_info=SlideInfo(
            path=Path(info["path"]),
            format=info["format"],
            dimensions=tuple(info["dimensions"]),
            level_downsamples=tuple(info["level_downsamples"]),
            mpp=info["mpp"],
            mpp_source=info["mpp_source"],
            name=info["name"],
            bounds=None if info.get("bounds") is None else tuple(info["bounds"]),
        ),
        slide_score=data["slide_score"],
        slide_score_method=data["slide_score_method"],
        tumor_threshold=data["tumor_threshold"],
        n_tumor_regions=data["n_tumor_regions"],
        tumor_area_mm2=data["tumor_area_mm2"],
        largest_tumor_region_mm=data["largest_tumor_region_mm"],
        category=data["category"],
        warnings=tuple(data["warnings"]),
        n_tiles_total=data["n_tiles_total"],
        n_tiles_tissue=data["n_tiles_tissue"],
        grid=GridDescription(
            shape=tuple(heatmap["shape"]),
            tile_size_model_px=tiles["size_model_px"],
            tile_size_level0_px=tiles["size_level0_px"],
            stride_model_px=tiles["stride_model_px"],
            stride_level0_px=tiles["stride_level0_px"],
            model_mpp=tiles["model_mpp"],
            origin_level0=tuple(tiles["origin_level0"]),
            cell_size_um=heatmap["cell_size_um"],
            cell_size_level0_px=heatmap["cell_size_level0_px"],
            cell_origin_level0=tuple(heatmap["cell_origin_level0"]),
            level=data["level"],
            level_downsample=data["level_downsample"],
        ),
        model=ModelInfo(**data["model"]),
        options=InferenceOptions(**data["options"]),
        params=data["params"],
        params_hash=data["params_hash"],
        inference=InferenceStats(
            **{k: v for k, v in stats.items() if k not in ("batch_size", "num_readers")}
        ),
        software=data["software"],
        created_utc=data["created_utc"],
        mask_shape=tuple(tissue["mask_shape"]),
        outputs=tuple(data["outputs"]),
        timings=Timings(**timings),
        slide_file=None if data["slide_file"] is None else SlideFile.from_dict(data["slide_file"]),
        decision_rule=data["decision_rule"],
        lesions=tuple(LesionRecord(**{**x, "peak_cell": tuple(x["peak_cell"])}) for x in data["lesions"]),
    )
    if json_safe(summary.to_dict()) != data:
        raise ValueError("fields or values differ from what this version writes")
    return summary
