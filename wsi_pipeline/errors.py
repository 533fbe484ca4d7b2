"""User-facing exception hierarchy.

Every error a user can cause (bad slide, bad dataset, bad model file, bad option)
is a subclass of :class:`WsiPipelineError`. The CLIs catch this base class, print a
one-line message and exit non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class WsiPipelineError(Exception):
    """Base class for errors caused by user input, reported without a traceback."""


# --- slides -----------------------------------------------------------------
class SlideError(WsiPipelineError):
    """A slide cannot be used."""


class SlideOpenError(SlideError):
    """The file is missing, empty, truncated or not a slide format we can read."""


class SlideReadError(SlideError):
    """The slide opened but pixel data could not be read (e.g. corrupt tiles)."""


class UnknownMppError(SlideError):
    """The slide's microns-per-pixel is not in its metadata and was not given (--mpp)."""


class SlideTooLargeError(SlideError):
    """The slide is too large to process without a pyramid (e.g. a huge flat TIFF): reading it
    whole for tissue detection would take unbounded time."""


class NoTissueError(SlideError):
    """The tissue detector found no tissue on the slide."""


# --- models -----------------------------------------------------------------
class ModelError(WsiPipelineError):
    """A model cannot be found, built or loaded."""


class ModelConfigError(ModelError):
    """A model config file is missing, malformed or inconsistent."""


class UnknownArchitectureError(ModelError):
    """The architecture name is not in the model registry."""


class NonFiniteOutputError(ModelError):
    """A model gave NaN or infinite outputs (or holds NaN/infinite weights): its results are not
    "no tumour" but no results at all."""


# --- datasets ---------------------------------------------------------------
class DatasetError(WsiPipelineError):
    """A patch dataset is missing, malformed or inconsistent."""


# --- training ---------------------------------------------------------------
class TrainingError(WsiPipelineError):
    """A training run cannot start, resume or finish."""


class TrainingDivergedError(TrainingError):
    """The loss or the weights became NaN or infinite."""


# --- outputs / runs ---------------------------------------------------------
class OutputError(WsiPipelineError):
    """An output location cannot be written."""


class OptionError(WsiPipelineError):
    """A command-line option or config value is invalid."""


# --- one-line messages -------------------------------------------------------
def one_line(exc: BaseException) -> str:
    """First line of an exception message (the type name when it has none)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def one_line_error(slide: str | Path, exc: BaseException) -> str:
    """:func:`one_line`, prefixed with the slide when the message does not already name it."""
    text = one_line(exc)
    if str(slide) not in text and Path(slide).name not in text:
        text = f"{slide}: {text}"
    return text
