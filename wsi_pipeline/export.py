"""Export a patch model to TorchScript or ONNX, with a wsinfer-compatible ``config.json``.

Our models output one logit ``z`` per patch (tumour probability ``sigmoid(z / T)``, ``T`` the model's
calibration temperature, 1 without one). wsinfer expects one score per class and applies a softmax, so
the exported network returns ``[0, z / T]``: ``softmax([0, z / T])[1] == sigmoid(z / T)``, i.e.
wsinfer's ``prob_tumor`` equals our probability.

The wsinfer transform list can only express Resize / ToTensor / Normalize, so an optional centre crop
is built into the exported network. Stain normalisation cannot be expressed and is refused.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wsi_pipeline.errors import ModelError, OptionError, OutputError
from wsi_pipeline.models.io import LoadedModel, load_model

FORMATS = ("torchscript", "onnx")
TORCHSCRIPT_FILENAME = "torchscript_model.pt"  # the name wsinfer's model zoo uses
ONNX_FILENAME = "model.onnx"
EXPORT_CONFIG_FILENAME = "config.json"
WSINFER_SPEC_VERSION = "1.0"


class TwoClassLogits(nn.Module):
    """Wraps a one-logit patch model so it outputs ``[0, z]`` class scores (normal, tumour).

    Input: float ``(N, 3, patch_size, patch_size)``, already scaled to [0, 1] and normalised.
    """

    def __init__(
        self, module: nn.Module, patch_size: int, center_crop: int | None = None, temperature: float = 1.0
    ) -> None:
        super().__init__()
        self.module = module
        self.inv_temperature = 1.0 / float(temperature)  # the model's calibration, built into the graph
        crop = int(center_crop or 0)
        self.top = (patch_size - crop) // 2 if crop else 0
        self.crop = crop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.crop:
            x = x[:, :, self.top : self.top + self.crop, self.top : self.top + self.crop]
        z = self.module(x).reshape(-1, 1).float() * self.inv_temperature
        return torch.cat([torch.zeros_like(z), z], dim=1)


@dataclass
class ExportResult:
    """Paths written by :func:`export_model`."""

    format: str
    model_path: Path
    config_path: Path


def wsinfer_config(model: LoadedModel) -> dict[str, Any]:
    """The model described in wsinfer's model-config format (spec 1.0)."""
    cfg = model.config
    return {
        "spec_version": WSINFER_SPEC_VERSION,
        "architecture": cfg.architecture,
        "num_classes": 2,
        "class_names": list(cfg.class_names),
        "patch_size_pixels": int(cfg.patch_size),
        "spacing_um_px": float(cfg.mpp),
        "transform": [
            {"name": "Resize", "arguments": {"size": [int(cfg.patch_size), int(cfg.patch_size)]}},
            {"name": "ToTensor"},
            {"name": "Normalize", "arguments": {"mean": list(cfg.mean), "std": list(cfg.std)}},
        ],
        # Extra keys (allowed by the spec) recording where this export came from.
        "wsi_pipeline": {
            "name": model.name,
            "weights_sha256": model.weights_sha256,
            "output": "two logits [0, z / T]; softmax(...)[1] = sigmoid(z / T) = tumour probability",
            "temperature": float(cfg.temperature),
        },
    }


def exportable_module(model: LoadedModel) -> nn.Module:
    """CPU, fp32, eval-mode copy of the model wrapped to output two class scores."""
    cfg = model.config
    if cfg.stain_normalization:
        raise ModelError(
            f"{model.path}: model uses stain normalisation ({cfg.stain_normalization.get('method')}), "
            "which an exported model cannot reproduce"
        )
    import copy

    module = copy.deepcopy(model.module).float().cpu().eval()
    # Module.to(memory_format=...) exists at runtime but is missing from torch's overload stubs
    module = module.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    return TwoClassLogits(module, int(cfg.patch_size), cfg.center_crop, cfg.temperature).eval()


def export_model(
    model: LoadedModel | str | Path | None, out_dir: str | Path, fmt: str = "torchscript"
) -> ExportResult:
    """Write ``out_dir/{torchscript_model.pt|model.onnx}`` and ``out_dir/config.json``.

    ``model`` is a loaded model, a model folder, or ``None`` for the shipped default.
    """
    fmt = str(fmt).lower()
    if fmt not in FORMATS:
        raise OptionError(f"--format: unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    loaded = model if isinstance(model, LoadedModel) else load_model(model, device="cpu")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: output path exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out}: cannot create output folder: {exc}") from exc

    wrapped = exportable_module(loaded)
    size = int(loaded.config.patch_size)
    example = torch.rand(2, 3, size, size)
    if fmt == "torchscript":
        path = out / TORCHSCRIPT_FILENAME
        _export_torchscript(wrapped, example, path)
    else:
        path = out / ONNX_FILENAME
        _export_onnx(wrapped, example, path)
    config_path = out / EXPORT_CONFIG_FILENAME
    config_path.write_text(json.dumps(wsinfer_config(loaded), indent=2) + "\n")
    return ExportResult(format=fmt, model_path=path, config_path=config_path)


def _export_torchscript(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated but wsinfer needs it
        # Shape-dependent Python code (e.g. centre pooling) is traced for patch_size x patch_size input,
        # which is what the config's Resize guarantees.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # Frozen: weights are constants, ready for torch.jit.optimize_for_inference after loading
        # (the fast CPU form, about 1.0-1.8x here; it cannot be saved itself, its oneDNN-packed
        # constants do not serialise in torch 2.x).
        traced = torch.jit.freeze(torch.jit.trace(module, example, check_trace=False))
        torch.jit.save(traced, str(tmp))
    tmp.replace(path)


def _export_onnx(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ModelError(
            "ONNX export needs the 'onnx' and 'onnxscript' packages: pip install 'wsi-pipeline[onnx]'"
        ) from None
    tmp = path.with_name(path.name + ".tmp")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)
        if importlib.util.find_spec("onnxscript") is not None:
            # torch.export-based exporter (the default since torch 2.9); runs offline.
            batch = torch.export.Dim("batch", min=1)
            torch.onnx.export(
                module,
                (example,),
                str(tmp),
                dynamic_shapes={"x": {0: batch}},
                dynamo=True,
                external_data=False,
                verbose=False,
                input_names=["input"],
                output_names=["logits"],
            )
        else:  # older TorchScript-based exporter: needs only 'onnx'
            torch.onnx.export(
                module,
                (example,),
                str(tmp),
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=17,
                dynamo=False,
                input_names=["input"],
                output_names=["logits"],
            )
    tmp.replace(path)
