"""Choosing a JPEG tile decoder for a device; nvJPEG on CUDA through nvImageCodec (optional).

==> The CUDA path below has NOT been run: the development machine has no GPU and nvImageCodec
    (``pip install nvidia-nvimgcodec-cu12[nvjpeg]``) is not installed there. It is kept small,
    imports its library only when asked for, and sits behind the same :class:`TileDecoder`
    interface and the same open-time probe as the CPU decoder (``fast_blocks``), so wrong colours,
    a broken library or differences beyond :data:`NVJPEG_TOLERANCE` send a level back to
    libjpeg-turbo. (torchvision's ``decode_jpeg`` would need torch here, which the slide layer does
    not import; torchvision is not installable beside torch 2.13 either.) <==

nvJPEG takes one complete JPEG per image, so each tile is made standalone first (the TIFF's shared
tables spliced in, an Adobe marker for RGB-coded Aperio tiles: :func:`standalone_stream`). Decoded
tiles are copied back to the host, where blocks are assembled.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from wsi_pipeline.slide.jpeg_stream import StreamError, check_stream, standalone_stream
from wsi_pipeline.slide.jpeg_tiles import CpuJpegDecoder, JpegLevel, TileDecodeError, TileDecoder

#: Max per-pixel difference from libjpeg-turbo accepted for nvJPEG (its IDCT and chroma upsampling
#: differ). An assumption until measured on a GPU: benchmarks/jpeg_decode.py --device cuda prints it.
NVJPEG_TOLERANCE = 8


def tile_decoder(device: object = None, threads: int | None = None) -> TileDecoder:
    """nvJPEG for a CUDA ``device`` (``"cuda"``, ``"cuda:1"``, a torch device) when nvImageCodec
    can be imported and opens the GPU, else libjpeg-turbo on ``threads`` CPU threads (default: up
    to 8)."""
    name = str(device) if device is not None else "cpu"
    if name.startswith("cuda"):
        index = int(name.partition(":")[2] or 0)
        try:
            return NvJpegDecoder(index)
        except Exception:  # noqa: BLE001 - not installed, no GPU, no nvJPEG: decode on the CPU
            pass
    return CpuJpegDecoder(threads)


class NvJpegDecoder:
    """Batched nvJPEG decoding of TIFF JPEG tiles on GPU ``device_index`` via nvImageCodec."""

    name = "nvjpeg (nvimagecodec)"
    tolerance = NVJPEG_TOLERANCE

    def __init__(self, device_index: int = 0) -> None:
        from nvidia import nvimgcodec  # optional dependency (ignore_missing_imports in pyproject)

        self._decoder = nvimgcodec.Decoder(device_id=device_index)

    def decode(self, level: JpegLevel, tiles: Sequence[bytes | memoryview]) -> list[np.ndarray]:
        streams = []
        for position, tile in enumerate(tiles):
            try:
                check_stream(tile)
                streams.append(standalone_stream(bytes(tile), level.tables, level.rgb_coded))
            except StreamError as exc:
                raise TileDecodeError(position, str(exc)) from exc
        images = self._decoder.decode(streams) if streams else []
        out = []
        for position, image in enumerate(images):
            if image is None:
                raise TileDecodeError(position, f"{self.name} could not decode it")
            out.append(np.asarray(image.cpu()))
        return out

    def close(self) -> None:
        self._decoder = None
