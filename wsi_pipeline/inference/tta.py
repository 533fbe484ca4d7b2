"""Test-time augmentation for slide inference: a tile's probability is the mean over its 8 dihedral
views (4 rotations x a flip), the same average ``wsi-eval --tta`` reports
(:func:`wsi_pipeline.evaluation.predict.predict_patches`), at 8x the model's cost.

:class:`D4Average` wraps the network so the engine stays unchanged: it returns the logit whose
calibrated probability (``sigmoid(logit / temperature)``) is that mean, so batching, precision and
calibration work as for one view. Views come from :mod:`wsi_pipeline.d4`, the one implementation.
"""

from __future__ import annotations

import torch
from torch import nn

from wsi_pipeline.d4 import N_VIEWS, dihedral
from wsi_pipeline.models.calibration import calibrated, calibrated_logit


class D4Average(nn.Module):
    """``forward(x)``, NCHW tiles: ``T * logit(mean_k sigmoid(net(view_k(x)) / T))``, T the temperature."""

    def __init__(self, net: nn.Module, temperature: float = 1.0) -> None:
        super().__init__()
        self.net = net
        self.temperature = float(temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = torch.zeros((), dtype=torch.float32, device=x.device)
        for k in range(N_VIEWS):
            total = total + calibrated(self.net(dihedral(x, k)).float(), self.temperature)
        return calibrated_logit(total / N_VIEWS, self.temperature)
