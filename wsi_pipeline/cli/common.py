"""Helpers shared by the command-line entry points."""

from __future__ import annotations

import sys

import click

from wsi_pipeline.errors import WsiPipelineError


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
