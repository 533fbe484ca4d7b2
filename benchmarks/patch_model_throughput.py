"""Training and evaluation throughput (images/s) of the patch models on this machine.

Prints, side by side, for the study's ``seed_cnn`` (96 px input) and the shipped default
(read from its config.json): parameters, forward FLOPs per tile, training images/s
(forward + backward + Adam step, batch 32/64) and evaluation images/s (``predict_proba`` on uint8
patches, batch 256, including preprocessing). Synthetic patches are enough for timing.

    .venv/bin/python benchmarks/patch_model_throughput.py [--threads N] [--seconds S]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from wsi_pipeline.models import ModelConfig, create_model, default_model_dir
from wsi_pipeline.models.io import LoadedModel


def _flops(model: torch.nn.Module, size: int) -> int:
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return int(counter.get_total_flops())


def _timed(fn, seconds: float) -> float:
    """Calls per second of ``fn`` after one warm-up call, measured for at least ``seconds``."""
    fn()
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and n >= 2:
            return n / elapsed


def measure(name: str, kwargs: dict, crop: int | None, batch: int, seconds: float) -> dict:
    size = crop or 96
    model = create_model(name, **kwargs)
    params = sum(p.numel() for p in model.parameters())
    flops = _flops(model, size)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, size, size)
    y = torch.randint(0, 2, (batch,)).float()

    def step() -> None:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).reshape(-1), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    train_ips = _timed(step, seconds) * batch
    loaded = LoadedModel(
        model.eval().to(memory_format=torch.channels_last),
        ModelConfig(architecture=name, arch_kwargs=kwargs, center_crop=crop),
        default_model_dir(),
        "",
    )
    patches = np.random.default_rng(0).integers(0, 256, (256, 96, 96, 3), dtype=np.uint8)
    eval_ips = _timed(lambda: loaded.predict_proba(patches), seconds) * len(patches)
    return {
        "params": params,
        "flops": flops,
        "train": train_ips,
        "eval": eval_ips,
        "input": size,
        "batch": batch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum timing window per figure")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    default_arch, default_kwargs, default_crop = "context_cnn", {"widths": [16, 32, 64, 128]}, None
    cfg_path = default_model_dir() / "config.json"
    if cfg_path.is_file():
        cfg = ModelConfig.load(cfg_path)
        default_arch, default_kwargs, default_crop = cfg.architecture, cfg.arch_kwargs, cfg.center_crop
    rows = [
        ("seed_cnn (study)", measure("seed_cnn", {}, None, 32, args.seconds)),
        (f"{default_arch} (default)", measure(default_arch, default_kwargs, default_crop, 64, args.seconds)),
    ]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu")
    print(
        f"{'model':24s} {'input':>6s} {'params':>9s} {'GFLOP/tile':>11s} "
        f"{'train img/s':>12s} {'eval img/s':>11s}"
    )
    for label, r in rows:
        print(
            f"{label:24s} {r['input']:>6d} {r['params'] / 1e6:>8.2f}M {r['flops'] / 1e9:>11.3f} "
            f"{r['train']:>12.1f} {r['eval']:>11.1f}"
        )
    seed, tiny = rows[0][1], rows[1][1]
    print(
        f"default vs study: {seed['flops'] / tiny['flops']:.1f}x fewer FLOPs, "
        f"{tiny['train'] / seed['train']:.1f}x training and "
        f"{tiny['eval'] / seed['eval']:.1f}x evaluation speed"
    )


if __name__ == "__main__":
    main()
