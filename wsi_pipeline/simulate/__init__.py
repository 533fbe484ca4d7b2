"""Simulated lymph-node slides with a known truth, built from a labelled patch dataset.

``plan_slides`` draws seeded layouts (pure), ``write_slide`` renders one as a pyramidal TIFF with
its truth JSON beside it, ``build_slide_set`` does both for a set of slides.
"""

from wsi_pipeline.simulate.build import build_slide_set, slide_name
from wsi_pipeline.simulate.plan import DEFAULT_COUNTS, expand_kinds, lesion_kind, plan_slide, plan_slides
from wsi_pipeline.simulate.render import SlideRenderer, d4_view, glass_tiles
from wsi_pipeline.simulate.truth import (
    KINDS,
    GlassStyle,
    Lesion,
    SimulationSpec,
    SlidePlan,
    SlideTruth,
    truth_path,
)
from wsi_pipeline.simulate.write import write_slide

__all__ = [
    "DEFAULT_COUNTS",
    "KINDS",
    "GlassStyle",
    "Lesion",
    "SimulationSpec",
    "SlidePlan",
    "SlideRenderer",
    "SlideTruth",
    "build_slide_set",
    "d4_view",
    "expand_kinds",
    "glass_tiles",
    "lesion_kind",
    "plan_slide",
    "plan_slides",
    "slide_name",
    "truth_path",
    "write_slide",
]
