"""Review view: ``viewer.html`` (offline, from the file system) and ``wsi-pipeline view``.

* :class:`ViewerData` / :class:`Lesion`: what the page shows, in level-0 slide pixels.
* :func:`write_viewer`: ``viewer.html`` + a Deep Zoom JPEG pyramid of the slide beside it.
* :func:`~wsi_pipeline.viewer.results.load_result_folder`: a ``wsi-infer`` folder as ``ViewerData``.
* :class:`~wsi_pipeline.viewer.server.ViewerServer`: the same page over a local HTTP server, with
  full-resolution tiles from the slide (``wsi-pipeline view``).

The page runs OpenSeadragon 6.1.1 (BSD-3-Clause; ``assets/openseadragon.min.js`` and its licence,
from the npm package ``openseadragon``), inlined into every page.
"""

from wsi_pipeline.viewer.data import Lesion, ViewerData
from wsi_pipeline.viewer.write import DEFAULT_PYRAMID_MPP, write_viewer

__all__ = ["DEFAULT_PYRAMID_MPP", "Lesion", "ViewerData", "write_viewer"]
