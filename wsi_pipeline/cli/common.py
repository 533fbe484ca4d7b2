"""What the command-line entry points share: error handling and the options they all take.

``--model`` and ``--device`` are declared here once and used by ``wsi-infer``, ``wsi-eval``,
``wsi-train`` and ``wsi-pipeline``; ``--device`` is checked by :mod:`wsi_pipeline.devices`,
``--mpp`` by :func:`wsi_pipeline.slide.info.check_mpp`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from wsi_pipeline.devices import DEVICE_CHOICES
from wsi_pipeline.errors import OptionError, WsiPipelineError

F = TypeVar("F", bound=Callable[..., object])


def run_cli(command: click.Command) -> None:
    """Run a click command; user errors become one line on stderr and exit code 1."""
    try:
        command.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except WsiPipelineError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)


def model_option(
    help: str = "Model folder (model.safetensors + config.json); default: the shipped model.",
    dest: str = "model_path",
) -> Callable[[F], F]:
    """``--model PATH``: a saved model folder (``None``: the shipped default)."""
    return click.option("--model", dest, type=click.Path(path_type=Path), default=None, help=help)


def architecture_option() -> Callable[[F], F]:
    """``--model NAME``: an architecture of the registry (``wsi-train``)."""
    return click.option(
        "--model", "model", default=None, help="Architecture name (see `wsi-pipeline models`)."
    )


def device_option(default: str | None = "auto") -> Callable[[F], F]:
    """``--device``: auto, cpu, cuda or cuda:N (checked where it is used, as a one-line error)."""
    return click.option(
        "--device", default=default, show_default=default is not None, help=f"{DEVICE_CHOICES}."
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
