"""Slide reading: one ``open_slide`` entry point over OpenSlide and tifffile back ends."""

from wsi_pipeline.slide.base import SlideReader
from wsi_pipeline.slide.info import SlideInfo, check_mpp, describe_slide, resolve_mpp
from wsi_pipeline.slide.opener import check_slide_file, open_slide
from wsi_pipeline.slide.openslide_reader import OpenSlideReader
from wsi_pipeline.slide.regions import read_region_at_mpp, thumbnail
from wsi_pipeline.slide.tifffile_reader import TiffFileReader

__all__ = [
    "OpenSlideReader",
    "SlideInfo",
    "SlideReader",
    "TiffFileReader",
    "check_mpp",
    "check_slide_file",
    "describe_slide",
    "open_slide",
    "read_region_at_mpp",
    "resolve_mpp",
    "thumbnail",
]
