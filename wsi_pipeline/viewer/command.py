"""``wsi-pipeline view OUT/<slide>``: review one slide's results in the browser."""

from __future__ import annotations

import signal
from pathlib import Path

import click

from wsi_pipeline.viewer.write import DEFAULT_PYRAMID_MPP


@click.command("view")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    help="Port to serve on at 127.0.0.1 (0: any free port).",
)
@click.option(
    "--write",
    "write_files",
    is_flag=True,
    help="Do not serve: write FOLDER/viewer.html and its tile pyramid (at --mpp) to open from the file "
    "system; works for every slide wsi-infer reads, also those OpenSlide cannot open.",
)
@click.option(
    "--mpp",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_PYRAMID_MPP,
    show_default=True,
    help="With --write: resolution of the tile pyramid (um/px).",
)
def view_command(folder: Path, port: int, write_files: bool, mpp: float) -> None:
    """Show a wsi-infer results folder (OUT/<slide>): the slide with the tumour heatmap and the
    lesion outlines as layers, and the lesion list.

    Serves the page at http://127.0.0.1:PORT/ with full-resolution tiles read from the slide
    itself (Ctrl-C stops). The slide is found through FOLDER/summary.json.
    """
    if write_files:
        _write(folder, mpp)
        return
    from wsi_pipeline.viewer.server import ViewerServer

    server = ViewerServer(folder, port=port)
    click.echo(f"serving {server.slide_name} at {server.url}  (Ctrl-C stops)")
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops as cleanly as Ctrl-C
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped")
    finally:
        server.server_close()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _write(folder: Path, mpp: float) -> None:
    from wsi_pipeline.slide import open_slide
    from wsi_pipeline.viewer.results import load_result_folder, read_summary, slide_path
    from wsi_pipeline.viewer.write import write_viewer

    path = slide_path(read_summary(folder), folder)
    with open_slide(path) as reader:
        data = load_result_folder(folder, reader.dimensions)
        written = write_viewer(folder, data, reader, mpp)
    click.echo(f"wrote {written[0]}")
