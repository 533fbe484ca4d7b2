"""Tile inference: threaded block reads -> batched model calls (CPU, or CUDA with autocast) ->
:class:`TileScores`."""

from wsi_pipeline.inference.batches import CPU_MODEL_CHUNK, autocast_dtype
from wsi_pipeline.inference.engine import DEFAULT_BLOCK_PX, TileInference, plan_blocks, tile_views
from wsi_pipeline.inference.fusion import inference_module
from wsi_pipeline.inference.scores import InferenceStats, TileScores

__all__ = [
    "CPU_MODEL_CHUNK",
    "DEFAULT_BLOCK_PX",
    "InferenceStats",
    "TileInference",
    "TileScores",
    "autocast_dtype",
    "inference_module",
    "plan_blocks",
    "tile_views",
]
