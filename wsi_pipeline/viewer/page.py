"""``viewer.html``: one page with OpenSeadragon, the viewer script and the slide's data inlined.

Nothing is fetched with XHR/fetch (Chromium refuses that from ``file://`` pages): the tile source
and the layers are JSON inside the page, tiles are plain images, so the page works offline from
the file system and, unchanged, from ``wsi-pipeline view``'s local server.
"""

from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from wsi_pipeline import __version__
from wsi_pipeline.viewer.data import ViewerData
from wsi_pipeline.viewer.layers import DEFAULT_MIN_PROB, heatmap_layer, lesion_entries
from wsi_pipeline.viewer.pyramid import Pyramid, level_sizes

#: Coarse size of the stand-in glass image when a page has no slide tiles.
NO_SLIDE_PX = 4096
OSD_LICENSE = "openseadragon-LICENSE.txt"


@dataclass(frozen=True)
class TileSource:
    """Where the page finds the slide's Deep Zoom tiles: ``{url}{level}/{col}_{row}.{format}``.

    ``url`` None: no slide tiles (glass colour only). ``level0_px``: level-0 px per px of the top
    level. ``blank``: per level, bit sets of tiles drawn as plain ``glass`` instead of fetched.
    """

    url: str | None
    width: int
    height: int
    level0_px: float
    tile_size: int = 254
    overlap: int = 1
    format: str = "jpeg"
    blank: dict[int, bytes] = field(default_factory=dict)
    glass: tuple[int, int, int] = (255, 255, 255)

    @classmethod
    def from_pyramid(cls, pyramid: Pyramid, url: str) -> TileSource:
        return cls(url, pyramid.width, pyramid.height, pyramid.level0_px, pyramid.tile_size,
                   pyramid.overlap, pyramid.format, dict(pyramid.blank), pyramid.glass)  # fmt: skip

    @classmethod
    def glass_only(cls, size: tuple[int, int]) -> TileSource:
        scale = max(1.0, max(size) / NO_SLIDE_PX)
        return cls(None, max(1, round(size[0] / scale)), max(1, round(size[1] / scale)), scale,
                   glass=(240, 240, 240))  # fmt: skip

    def page_data(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "width": self.width,
            "height": self.height,
            "level0Px": self.level0_px,
            "tileSize": self.tile_size,
            "overlap": self.overlap,
            "format": self.format,
            "maxLevel": len(level_sizes(self.width, self.height)) - 1,
            "blank": {
                str(lv): base64.b64encode(bits).decode("ascii")
                for lv, bits in self.blank.items()
                if any(bits)
            },
        }


@cache
def asset(name: str) -> str:
    return (resources.files("wsi_pipeline.viewer") / "assets" / name).read_text(encoding="utf-8")


def page_data(
    data: ViewerData, tiles: TileSource, mode: str = "file", min_prob: float = DEFAULT_MIN_PROB
) -> dict[str, Any]:
    """Everything the page script reads (JSON)."""
    width, height = data.size
    return {
        "mode": mode,
        "slide": {"name": data.slide_name, "width": width, "height": height, "mpp": data.mpp},
        "call": {"text": data.call, "score": data.score},
        "notes": [list(note) for note in data.notes],
        "glass": "#{:02x}{:02x}{:02x}".format(*tiles.glass),
        "tiles": tiles.page_data(),
        "heatmap": heatmap_layer(data, min_prob),
        "lesions": lesion_entries(data),
    }


def _script_json(value: Any) -> str:
    """JSON safe inside a <script> element (no "</script>", no "<!--")."""
    text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(
    data: ViewerData, tiles: TileSource, mode: str = "file", min_prob: float = DEFAULT_MIN_PROB
) -> str:
    """The complete HTML page."""
    osd = asset("openseadragon.min.js")
    if "</script" in osd.lower():
        raise AssertionError("vendored OpenSeadragon contains </script>; cannot inline it")
    parts = {
        "__GENERATOR__": f"wsi_pipeline {__version__}",
        "__TITLE__": html.escape(data.slide_name),
        "__STYLE__": asset("viewer.css"),
        "__DATA__": _script_json(page_data(data, tiles, mode, min_prob)),
        "__OSD_LICENSE__": "OpenSeadragon, inlined below:\n" + asset(OSD_LICENSE).replace("--", "- -"),
        "__OSD__": osd,
        "__SCRIPT__": asset("viewer.js"),
    }
    # one pass over the template, so text put in (a slide name, say) is never substituted again
    return re.sub(r"__[A-Z_]+__", lambda m: parts[m.group(0)], asset("viewer.html"))
