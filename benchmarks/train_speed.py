"""Training throughput: the data path of ``wsi-train`` against the network's own speed.

For each architecture and precision this runs, side by side in one process,
  - the network alone: forward + backward + optimiser step on a random batch already in memory,
  - the real training path: patches gathered from the decode-once cache, cropped/flipped/rotated/
    colour-jittered as whole batches, normalised by the serving preprocessing, then the same step
    (:func:`wsi_pipeline.training.loop.train_epoch` over a cache of real patches),
and prints images/s, seconds per epoch of the dataset and the ratio path/network (1.0 = the data
path costs nothing), for each augmentation recipe: ``d4`` (flips/rotations: the study recipe,
``wsi-train``'s default), ``d4+hed`` (plus HED stain jitter: the shipped default model's recipe,
configs/default.yaml) and ``d4+hed+hsv`` (every colour jitter). On CUDA the cache is GPU-resident and
batches are the CUDA batch size.

    python benchmarks/train_speed.py --data ../shared/data/hcd_patches
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from wsi_pipeline.data import open_patch_dataset
from wsi_pipeline.data.cache import open_cache
from wsi_pipeline.devices import resolve_device
from wsi_pipeline.models.config import ModelConfig
from wsi_pipeline.models.registry import create_model
from wsi_pipeline.precision import FP32, Precision, cpu_has_native_bf16, cpu_name
from wsi_pipeline.training.augment import AugmentSettings
from wsi_pipeline.training.batches import BatchStream, BatchTransform, gpu_resident
from wsi_pipeline.training.loop import bce, train_epoch

ARCHS = {
    "seed_cnn": {},
    "context_cnn": {"widths": [24, 48, 96, 192], "stem": "conv"},  # a member of the default model
    "dense_cnn": {},
    "dense_cnn_d4": {"group": "d4", "widths": [8, 8, 16, 32, 32]},
}


def network_only(
    model: torch.nn.Module, batch: int, device: torch.device, precision: Precision, steps: int
) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, 96, 96, device=device).contiguous(memory_format=torch.channels_last)
    y = (torch.rand(batch, device=device) > 0.5).float()

    def step() -> None:
        with precision.autocast(device):
            loss = bce(model(x).float().reshape(-1), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * batch / (time.perf_counter() - t0)


RECIPES = {
    "d4": AugmentSettings(dihedral=True),
    "d4+hed": AugmentSettings(dihedral=True, hed=True, hed_scale=0.35, hed_shift=0.0),
    "d4+hed+hsv": AugmentSettings(dihedral=True, hed=True, hsv=True),
}


def data_path(
    model: torch.nn.Module,
    cache,
    batch: int,
    device: torch.device,
    precision: Precision,
    steps: int,
    augment: AugmentSettings,
) -> float:
    rows = np.arange(min(len(cache), batch * (steps + 1)), dtype=np.int64)
    stream = BatchStream(
        cache.images, cache.labels, rows, batch, device, 0, gpu_resident(cache.images, device)
    )
    config = ModelConfig(architecture="bench", mean=[0.7, 0.55, 0.7], std=[0.15, 0.2, 0.15])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    warm = BatchStream(cache.images, cache.labels, rows[:batch], batch, device, 0, stream.resident)
    train_epoch(
        model, optimizer, warm, BatchTransform(config, augment, 0, 0, 0), 0, lambda s: 1e-4, precision
    )
    _sync(device)
    result = train_epoch(
        model, optimizer, stream, BatchTransform(config, augment, 0, 0, 1), 1, lambda s: 1e-4, precision
    )
    _sync(device)
    return result.images_per_s


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("../shared/data/hcd_patches"))
    parser.add_argument("--models", default=",".join(ARCHS))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=128, help="CPU batch (CUDA: 1024)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    batch = 1024 if device.type == "cuda" else args.batch
    dataset = open_patch_dataset(args.data)
    t0 = time.perf_counter()
    cache = open_cache(dataset, progress=True)
    n_epoch = int(len(cache) * 0.9)
    print(
        f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else cpu_name()}), "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}; cache of {len(cache)} patches "
        f"ready in {time.perf_counter() - t0:.1f} s; batch {batch}; epoch = {n_epoch} patches"
    )
    precisions = [FP32]
    if device.type == "cuda" or cpu_has_native_bf16():
        precisions.append(Precision(torch.bfloat16, "bench"))
    header = ("model", "precision", "augment", "network img/s", "path img/s", "s/epoch", "path/network")
    print(f"{header[0]:<14}{header[1]:<10}{header[2]:<12}" + "".join(f"{h:>14}" for h in header[3:]))
    for name in args.models.split(","):
        arch = "dense_cnn" if name.startswith("dense_cnn") else name
        for precision in precisions:
            torch.manual_seed(0)
            model = create_model(arch, **ARCHS.get(name, {})).to(device).to(memory_format=torch.channels_last)
            net = network_only(model, batch, device, precision, args.steps)
            for recipe, augment in RECIPES.items():
                path = data_path(model, cache, batch, device, precision, args.steps, augment)
                figures = (net, path, n_epoch / path, path / net)
                print(f"{name:<14}{precision.name:<10}{recipe:<12}" + "".join(f"{v:>14.2f}" for v in figures))


if __name__ == "__main__":
    main()
