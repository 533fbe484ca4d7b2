"""Patches re-stained in HED space, to report how a model holds up under another lab's staining.

A re-staining multiplies the haematoxylin and eosin concentrations of every pixel by fixed factors
(white stays white: zero optical density is unchanged), e.g. ``H x0.7, E x1.3`` for pale, pink
slides and ``H x1.3, E x0.8`` for dark ones.
"""

from __future__ import annotations

import numpy as np
import torch

from wsi_pipeline.errors import OptionError
from wsi_pipeline.hed import stain_transform

#: The re-stainings ``(haematoxylin factor, eosin factor)`` that ``wsi-eval --restain`` reports.
DEFAULT_RESTAININGS = ((0.7, 1.3), (1.3, 0.8))


def parse_restaining(text: str) -> tuple[float, float]:
    """``"0.7,1.3"`` -> ``(0.7, 1.3)``; both factors positive."""
    try:
        h, e = (float(part) for part in text.split(","))
    except ValueError:
        raise OptionError(f"--restain takes H,E factors such as 0.7,1.3, got {text!r}") from None
    if not (h > 0 and e > 0):
        raise OptionError(f"--restain factors must be positive, got {text!r}")
    return h, e


def restain_patches(patches: np.ndarray, haematoxylin: float, eosin: float) -> np.ndarray:
    """uint8 NHWC patches with their H and E concentrations scaled (DAB unchanged), as uint8."""
    x = torch.from_numpy(np.ascontiguousarray(patches)).permute(0, 3, 1, 2).float().div_(255.0)
    scale = torch.tensor([haematoxylin, eosin, 1.0])
    out = stain_transform(x, scale).mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)
    return out.permute(0, 2, 3, 1).contiguous().numpy()
