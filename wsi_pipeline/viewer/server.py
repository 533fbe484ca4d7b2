"""``wsi-pipeline view``: the review page over a local HTTP server, with full-resolution Deep Zoom
tiles made on demand from the slide by ``openslide.deepzoom.DeepZoomGenerator``."""

from __future__ import annotations

import contextlib
import io
import re
import sys
import threading
import urllib.parse
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import openslide
from openslide.deepzoom import DeepZoomGenerator

from wsi_pipeline.errors import OptionError, SlideOpenError
from wsi_pipeline.viewer.page import TileSource, render_page
from wsi_pipeline.viewer.pyramid import DEFAULT_OVERLAP, DEFAULT_QUALITY, DEFAULT_TILE_SIZE
from wsi_pipeline.viewer.results import load_result_folder, read_summary, slide_path
from wsi_pipeline.viewer.write import VIEWER_NAME

TILE_URL = re.compile(r"/tiles/(\d+)/(\d+)_(\d+)\.jpeg")
CACHE_TILES = 1024


def open_for_serving(path: Path, folder: Path) -> openslide.OpenSlide:
    """The slide through OpenSlide, or a one-line reason why it cannot be served at full resolution."""
    try:
        return openslide.OpenSlide(str(path))
    except (openslide.OpenSlideError, OSError) as exc:
        hint = (
            f"open {folder / VIEWER_NAME} instead"
            if (folder / VIEWER_NAME).is_file()
            else f"write a viewer.html with its own tiles with `wsi-pipeline view --write {folder}`"
        )
        kind = "an OME-TIFF" if path.name.lower().endswith((".ome.tif", ".ome.tiff")) else "this slide"
        raise SlideOpenError(
            f"{path}: OpenSlide cannot open {kind} ({str(exc).strip() or type(exc).__name__}), so it cannot "
            f"be served at full resolution (only the tifffile reader opens it); {hint}"
        ) from exc


class ViewerServer(ThreadingHTTPServer):
    """Serves ``/`` (the page) and ``/tiles/<level>/<col>_<row>.jpeg`` from one slide."""

    daemon_threads = True

    def __init__(self, folder: str | Path, host: str = "127.0.0.1", port: int = 8000) -> None:
        folder = Path(folder)
        path = slide_path(read_summary(folder), folder)
        self.slide = open_for_serving(path, folder)
        try:
            self.deepzoom = DeepZoomGenerator(
                self.slide, tile_size=DEFAULT_TILE_SIZE, overlap=DEFAULT_OVERLAP, limit_bounds=False
            )
            width, height = self.slide.dimensions
            data = load_result_folder(folder, (width, height))
            background = self.slide.properties.get(openslide.PROPERTY_NAME_BACKGROUND_COLOR) or "ffffff"
            red, green, blue = (int(background[i : i + 2], 16) for i in (0, 2, 4))
            glass = (red, green, blue)
            tiles = TileSource("tiles/", width, height, 1.0, DEFAULT_TILE_SIZE, DEFAULT_OVERLAP, "jpeg",
                               glass=glass)  # fmt: skip
            self.page = render_page(data, tiles, mode="server").encode("utf-8")
            self.slide_name = data.slide_name
            self._cache: OrderedDict[tuple[int, int, int], bytes] = OrderedDict()
            self._lock = threading.Lock()
            try:
                super().__init__((host, port), _Handler)
            except OSError as exc:
                raise OptionError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        except BaseException:
            self.slide.close()
            raise

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        if isinstance(host, (bytes, bytearray)):  # an AF_INET address is (str, int); typeshed allows bytes
            host = host.decode("ascii")
        return f"http://{host}:{port}/"

    def tile(self, level: int, col: int, row: int) -> bytes | None:
        """JPEG bytes of one tile, None when it does not exist."""
        key = (level, col, row)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        if level >= self.deepzoom.level_count or not (
            col < self.deepzoom.level_tiles[level][0] and row < self.deepzoom.level_tiles[level][1]
        ):
            return None
        buffer = io.BytesIO()
        self.deepzoom.get_tile(level, (col, row)).convert("RGB").save(buffer, "JPEG", quality=DEFAULT_QUALITY)
        with self._lock:
            self._cache[key] = buffer.getvalue()
            while len(self._cache) > CACHE_TILES:
                self._cache.popitem(last=False)
        return buffer.getvalue()

    def server_close(self) -> None:
        super().server_close()
        self.slide.close()


class _Handler(BaseHTTPRequestHandler):
    server: ViewerServer

    def do_GET(self) -> None:  # http.server calls it so
        path = urllib.parse.urlsplit(self.path).path
        if path in ("/", "/" + VIEWER_NAME):
            return self._send(200, "text/html; charset=utf-8", self.server.page)
        match = TILE_URL.fullmatch(path)
        if match is None:
            return self._send(404, "text/plain", b"not found\n")
        try:
            body = self.server.tile(*(int(v) for v in match.groups()))
        except (openslide.OpenSlideError, OSError, ValueError) as exc:
            print(f"error: {self.server.slide_name}: tile {path}: {exc}", file=sys.stderr)
            return self._send(500, "text/plain", b"cannot read this tile\n")
        if body is None:
            return self._send(404, "text/plain", b"no such tile\n")
        return self._send(200, "image/jpeg", body, cache=True)

    def _send(self, status: int, kind: str, body: bytes, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=3600" if cache else "no-cache")
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the browser moved on
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per tile would drown the terminal
