"""What the command-line entry points share: error handling and the options they all take.

Every command (``wsi-infer``, ``wsi-train``, ``wsi-eval``, ``wsi-pipeline`` and its subcommands) is
made with :data:`CONTEXT` (``-h/--help``, defaults shown in the help) and :func:`standard_options`
(``--version``, ``-q/--quiet``, ``-v/--verbose``, ``--debug``). ``--model`` and ``--device`` are
declared here once; ``--device`` (auto, cpu, cuda or cuda:N) is checked by
:mod:`wsi_pipeline.devices`, ``--mpp`` by :func:`wsi_pipeline.slide.info.check_mpp`.
:func:`run_cli` turns user errors (and OS errors: disk full, permission denied) into one
``error:`` line and exit code 1; ``--debug`` or ``WSI_PIPELINE_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from wsi_pipeline import __version__
from wsi_pipeline.devices import DEVICE_CHOICES, parse_device
from wsi_pipeline.errors import OptionError, WsiPipelineError

F = TypeVar("F", bound=Callable[..., Any])

#: click context settings of every command: -h as well as --help, defaults shown in the help.
CONTEXT: dict[str, Any] = {
    "help_option_names": ["-h", "--help"],
    "show_default": True,
    "max_content_width": 100,
}
DEBUG_ENV = "WSI_PIPELINE_DEBUG"

_debug = {"on": False}


def debug_enabled() -> bool:
    """``--debug`` was given or ``$WSI_PIPELINE_DEBUG`` is set (not empty or 0)."""
    return _debug["on"] or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _flags() -> dict[str, Any]:
    """-q/-v of the running command line (kept on its root click context; a group's and its
    subcommand's flags add up)."""
    ctx = click.get_current_context(silent=True)
    return (
        ctx.find_root().meta.setdefault("wsi_pipeline.verbosity", {"quiet": False, "verbose": 0})
        if ctx
        else {}
    )


def is_quiet() -> bool:
    """``-q/--quiet`` was given: warnings and errors only, no progress bars."""
    return bool(_flags().get("quiet"))


def log_level() -> int:
    """The logging level the options ask for: ERROR with -q, WARNING by default, INFO with -v,
    DEBUG with -vv."""
    flags = _flags()
    if flags.get("quiet"):
        return logging.ERROR
    return {0: logging.WARNING, 1: logging.INFO}.get(int(flags.get("verbose", 0)), logging.DEBUG)


def progress_disable(enabled: bool = True) -> bool | None:
    """tqdm's ``disable``: ``None`` (a bar only when stderr is a terminal) unless turned off (or -q)."""
    return None if enabled and not is_quiet() else True


def configure_logging(level: int) -> None:
    """One stderr handler at ``level`` on the root logger (libraries that set their loggers lower,
    e.g. Dask's INFO, show through only with -v)."""
    handler = logging.StreamHandler()
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def _set(name: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if name == "debug":
            _debug["on"] = _debug["on"] or bool(value)
            return
        flags = _flags()
        flags[name] = (flags[name] + value) if name == "verbose" else (flags[name] or bool(value))
        configure_logging(log_level())

    return callback


def standard_options(prog_name: str) -> Callable[[F], F]:
    """``--version``, ``-q/--quiet``, ``-v/--verbose`` (repeatable) and ``--debug`` on a command."""

    def decorate(f: F) -> F:
        debug = f"On an error show the full traceback (or set {DEBUG_ENV}=1)."
        verbose = "More messages: -v informational, -vv debugging (logging level)."
        quiet = "Only warnings and errors; no progress bars."
        f = click.option("--debug", is_flag=True, expose_value=False, callback=_set("debug"), help=debug)(f)
        f = click.option(
            "-v", "--verbose", count=True, expose_value=False, callback=_set("verbose"), help=verbose
        )(f)
        f = click.option(
            "-q", "--quiet", is_flag=True, expose_value=False, callback=_set("quiet"), help=quiet
        )(f)
        return click.version_option(__version__, "--version", prog_name=prog_name)(f)

    return decorate


def _error_line(exc: OSError) -> str:
    cause = exc.strerror or str(exc) or type(exc).__name__
    return f"error: {exc.filename}: {cause}" if exc.filename else f"error: {cause}"


def run_cli(command: click.Command) -> None:
    """Run a click command; user errors and OS errors become one line on stderr and exit code 1
    (the traceback with ``--debug`` / ``$WSI_PIPELINE_DEBUG``)."""
    _debug["on"] = False
    try:
        command.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except (WsiPipelineError, OSError) as exc:
        if debug_enabled():
            traceback.print_exc()
        line = _error_line(exc) if isinstance(exc, OSError) else f"error: {exc}"
        click.echo(line, err=True)
        sys.exit(1)


def model_option(
    help: str = (
        "Model folder (model.safetensors + config.json) or the name of a shipped model "
        "(default, dense); default: the shipped default model."
    ),
    dest: str = "model_path",
) -> Callable[[F], F]:
    """``--model PATH``: a saved model folder (``None``: the shipped default)."""
    return click.option(
        "--model", dest, type=click.Path(path_type=Path), default=None, show_default=False, help=help
    )


class DeviceType(click.ParamType):
    """``--device``: auto, cpu, cuda or cuda:N (:func:`~wsi_pipeline.devices.parse_device`); a bad
    value is an :class:`OptionError`, i.e. one ``error: --device ...`` line from :func:`run_cli`."""

    name = "device"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> str:
        return parse_device(str(value))


def device_option(default: str | None = "auto", help: str = "") -> Callable[[F], F]:
    """``--device``: auto, cpu, cuda or cuda:N, the same syntax in every command."""
    text = help or f"{DEVICE_CHOICES}; auto: the first CUDA device when there is one, else the CPU."
    return click.option(
        "--device", type=DeviceType(), default=default, show_default=default is not None, help=text
    )


class MppType(click.ParamType):
    """A slide's level-0 microns per pixel: a positive number."""

    name = "float"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        from wsi_pipeline.slide.info import check_mpp

        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        try:
            return check_mpp(number, "--mpp")
        except OptionError as exc:
            self.fail(str(exc).removeprefix("--mpp "), param, ctx)


def rule_options() -> Callable[[F], F]:
    """``--tumor-threshold``, ``--lesion-threshold``, ``--lesion-support``: overrides of the model's
    decision rule (:class:`~wsi_pipeline.models.calibration.DecisionRule`), ``None`` when not given."""
    options = [
        click.option(
            "--tumor-threshold",
            type=click.FloatRange(0, 1),
            default=None,
            show_default=False,
            help="Lesion rule 'low': calibrated probability from which a cell joins a candidate lesion "
            "region (default: the model's decision_rule, else 0.5).",
        ),
        click.option(
            "--lesion-threshold",
            type=click.FloatRange(0, 1, min_open=True),
            default=None,
            show_default=False,
            help="Lesion rule 'high': confidence a region needs to be kept as a lesion; the slide score "
            "reaches it exactly when a lesion is kept (default: the model's decision_rule, else 0.9).",
        ),
        click.option(
            "--lesion-support",
            "lesion_support_mm2",
            metavar="MM2",
            type=click.FloatRange(0, 100),
            default=None,
            show_default=False,
            help="Lesion rule 'support_mm2': a region's confidence is the mean of its most confident "
            "cells covering this area, missing ones counting 0 (default: the model's decision_rule, "
            "else 0.026).",
        ),
    ]

    def decorate(func: F) -> F:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate
