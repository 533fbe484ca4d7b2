"""wsi-infer vs wsinfer 0.6.1 on the same large slide, with the same model, patch size, um/px and stride.

    .venv/bin/python benchmarks/compare_wsinfer.py                  # default model, 200x200-tile mosaic
    .venv/bin/python benchmarks/compare_wsinfer.py --model-kind seed_cnn --grid 100

Steps (everything cached under ``--cache``, default ``~/.cache/wsi_pipeline/bench``, outside the repo):

1. builds a mosaic slide from the real patches in ``/work/shared/data/hcd_patches`` (``_mosaic.py``):
   ``grid x grid`` cells of 96 px at 0.972 um/px, ~55 % tissue, the rest glass; pyramidal TIFF, JPEG tiles;
2. installs wsinfer 0.6.1 in its own venv (``pip install torch==2.14.1 torchvision==0.29.1 wsinfer==0.6.1
   'zarr<3' openslide-python openslide-bin``) and, for offline use, a placeholder model-zoo registry at
   ``~/.wsinfer-zoo/wsinfer-zoo-registry.json`` (only if none exists) with ``HF_HUB_OFFLINE=1``;
3. exports the model with ``wsi-pipeline export --format torchscript`` (TorchScript + wsinfer config.json);
4. measures model-only throughput (random batches; fp32 channels-last, and bf16 autocast);
5. runs ``wsi-infer`` and ``wsinfer run`` on the slide, each as a child process whose whole process tree
   is polled for RSS (psutil), and times them end to end;
6. matches tiles by (minx, miny) in both CSVs and reports the tumour-probability agreement on the
   tiles both tools analysed (their tissue masks differ).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import psutil
import torch
from _mosaic import build_mosaic  # beside this script (python puts its folder on sys.path)
from _pss import pss_bytes

from wsi_pipeline.precision import cpu_name

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = Path.home() / ".cache" / "wsi_pipeline" / "bench"
PATCH_DIR = REPO.parent / "shared" / "data" / "hcd_patches"
WSINFER_PACKAGES = [
    "torch==2.14.1",
    "torchvision==0.29.1",
    "wsinfer==0.6.1",
    "zarr<3",
    "openslide-python",
    "openslide-bin",
]
REGISTRY = Path.home() / ".wsinfer-zoo" / "wsinfer-zoo-registry.json"
PLACEHOLDER_REGISTRY = {
    "models": {
        "offline-placeholder": {
            "description": "placeholder so wsinfer starts offline; nothing is downloaded",
            "hf_repo_id": "none/none",
            "hf_revision": "main",
        }
    }
}


# --- process-tree measurement ------------------------------------------------------------------
@dataclass
class RunStats:
    """One child-process run: wall time, peak memory of its process tree, exit code."""

    name: str
    wall_s: float = 0.0
    peak_tree_rss_mb: float = 0.0  # max over time of the summed RSS of the process and its children
    peak_single_rss_mb: float = 0.0  # largest RSS of any one process of the tree
    peak_tree_pss_mb: float = 0.0  # max over time of the summed PSS (shared pages counted once in all)
    returncode: int = 0
    n_tiles: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def tiles_per_s(self) -> float:
        return self.n_tiles / self.wall_s if self.wall_s else 0.0


def run_measured(name: str, cmd: list[str], env: dict[str, str] | None, log: Path) -> RunStats:
    """Run ``cmd``; poll the RSS of its process tree every 0.1 s."""
    stats = RunStats(name)
    stats.extra["loadavg_1min_before"] = round(os.getloadavg()[0], 2)
    with open(log, "w") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        root = psutil.Process(proc.pid)
        done = threading.Event()

        def poll() -> None:
            while not done.is_set():
                total, single, pss = 0, 0, 0
                try:
                    procs = [root, *root.children(recursive=True)]
                except psutil.Error:
                    procs = []
                for p in procs:
                    try:
                        rss = p.memory_info().rss
                        pss += pss_bytes(p.pid)
                    except psutil.Error:
                        continue
                    total += rss
                    single = max(single, rss)
                stats.peak_tree_pss_mb = max(stats.peak_tree_pss_mb, pss / 2**20)
                stats.peak_tree_rss_mb = max(stats.peak_tree_rss_mb, total / 2**20)
                stats.peak_single_rss_mb = max(stats.peak_single_rss_mb, single / 2**20)
                done.wait(0.1)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        stats.returncode = proc.wait()
        stats.wall_s = time.perf_counter() - t0
        done.set()
        poller.join()
    stats.extra["loadavg_1min_after"] = round(os.getloadavg()[0], 2)
    if stats.returncode != 0:
        tail = log.read_text().strip().splitlines()[-15:]
        raise SystemExit(f"{name} failed (exit {stats.returncode}); log {log}:\n" + "\n".join(tail))
    return stats


# --- model ---------------------------------------------------------------------------------------
def prepare_model(kind: str, model_dir: Path | None, cache: Path) -> Path:
    """Model folder to benchmark: ``--model DIR``, the shipped default, or a seed_cnn/tiny_resnet
    with fixed random weights (same size and cost as a trained one)."""
    from wsi_pipeline.models import ModelConfig, create_model, default_model_dir, save_model

    if model_dir is not None:
        return model_dir
    if kind == "default":
        folder = default_model_dir()
        if not (folder / "model.safetensors").is_file():
            raise SystemExit(
                f"{folder}: default model not trained yet; use --model-kind seed_cnn or --model DIR"
            )
        return folder
    folder = cache / f"model-{kind}"
    if not (folder / "model.safetensors").is_file():
        torch.manual_seed(0)
        arch, crop = ("context_cnn", None) if kind == "default-random" else (kind, None)
        module = create_model(arch)
        for m in module.modules():  # non-trivial BN statistics, so outputs vary from tile to tile
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.8, 1.2)
        config = ModelConfig(
            architecture=arch,
            name=f"{kind}-random",
            mean=[0.70, 0.55, 0.70],
            std=[0.20, 0.22, 0.17],
            center_crop=crop,
        )
        save_model(folder, module, config)
    return folder


def model_only_throughput(model_dir: Path, batch_size: int, seconds: float) -> dict[str, float]:
    """Tiles/s of the bare network on random, already-normalised channels-last batches (fp32),
    the same with bf16 autocast, and fp32 including uint8 -> float preprocessing."""
    from wsi_pipeline.models import load_model

    model = load_model(model_dir, device="cpu")
    side = model.config.input_size  # what the network sees (centre crop, if any)
    x = torch.randn(batch_size, 3, side, side).contiguous(memory_format=torch.channels_last)
    size = model.config.patch_size
    raw = torch.randint(0, 256, (batch_size, size, size, 3), dtype=torch.uint8)
    out: dict[str, float] = {}

    def measure(fn) -> float:  # type: ignore[no-untyped-def]
        with torch.inference_mode():
            fn()  # warm-up
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds or n < 2:
                fn()
                n += 1
            return n * batch_size / (time.perf_counter() - t0)

    out["fp32_channels_last"] = measure(lambda: model.module(x))
    try:  # the module as the wsi-infer engine runs it (BatchNorm folded into the convolutions)
        from wsi_pipeline.inference import inference_module

        fused = inference_module(model.module)
        out["fp32_bn_folded"] = measure(lambda: fused(x))
    except ImportError:
        pass
    out["fp32_with_preprocess"] = measure(lambda: model.module(model.preprocess(raw)))

    def bf16() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model.module(x)

    out["bf16_autocast"] = measure(bf16)
    return out


# --- wsinfer ---------------------------------------------------------------------------------------
def ensure_wsinfer(venv: Path, install: bool) -> Path:
    exe = venv / "bin" / "wsinfer"
    if exe.is_file():
        return exe
    if not install:
        raise SystemExit(f"{exe} not found (run without --no-install to create it)")
    print(f"installing wsinfer 0.6.1 into {venv} (large: ~5.5 GB with CUDA wheels) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *WSINFER_PACKAGES], check=True)
    return exe


def ensure_registry() -> None:
    if not REGISTRY.is_file():
        REGISTRY.parent.mkdir(parents=True, exist_ok=True)
        REGISTRY.write_text(json.dumps(PLACEHOLDER_REGISTRY, indent=2) + "\n")


def read_wsinfer_csv(path: Path) -> dict[tuple[int, int], float]:
    with open(path, newline="") as fh:
        return {
            (int(float(r["minx"])), int(float(r["miny"]))): float(r["prob_tumor"]) for r in csv.DictReader(fh)
        }


def read_our_csv(path: Path) -> dict[tuple[int, int], float]:
    with open(path, newline="") as fh:
        return {
            (int(float(r["minx"])), int(float(r["miny"]))): float(r["prob_tumor"]) for r in csv.DictReader(fh)
        }


def agreement(ours: dict, theirs: dict) -> dict[str, float]:
    common = sorted(set(ours) & set(theirs))
    diff = np.abs(np.array([ours[k] for k in common]) - np.array([theirs[k] for k in common]))
    return {
        "tiles_ours": len(ours),
        "tiles_wsinfer": len(theirs),
        "tiles_common": len(common),
        "fraction_of_ours_matched": len(common) / max(1, len(ours)),
        "fraction_of_wsinfer_matched": len(common) / max(1, len(theirs)),
        "max_abs_diff": float(diff.max()) if len(diff) else float("nan"),
        "mean_abs_diff": float(diff.mean()) if len(diff) else float("nan"),
        "frac_diff_over_1e-3": float((diff > 1e-3).mean()) if len(diff) else float("nan"),
    }


# --- main ---------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", type=int, default=200, help="mosaic side in 96 px tiles (200 -> 19,200 px)")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--patches", type=Path, default=PATCH_DIR)
    ap.add_argument("--model", type=Path, default=None, help="model folder (overrides --model-kind)")
    ap.add_argument(
        "--model-kind",
        choices=["default", "default-random", "seed_cnn"],
        default="default",
        help="default: the shipped model; default-random: its architecture (context_cnn) "
        "with fixed random weights; seed_cnn: the study's larger CNN, random weights",
    )
    ap.add_argument("--batch-size", type=int, default=256, help="wsi-infer batch size (and model-only)")
    ap.add_argument("--wsinfer-batch-size", type=int, default=32, help="wsinfer's default is 32")
    ap.add_argument("--wsinfer-workers", type=int, default=None, help="wsinfer default: min(cpus, 8)")
    ap.add_argument("--model-only-seconds", type=float, default=10.0)
    ap.add_argument("--skip-wsinfer", action="store_true")
    ap.add_argument("--no-install", action="store_true")
    ap.add_argument("--infer-args", default="", help="extra wsi-infer arguments, e.g. '--num-readers 1'")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()

    cache = args.cache.expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    slide, layout = build_mosaic(cache / f"mosaic_{args.grid}_s0.tif", args.patches, grid=args.grid)
    print(f"slide {slide}: {args.grid * 96} px square, {int((layout.cells >= 0).sum())} tissue cells")

    model_dir = prepare_model(args.model_kind, args.model, cache)
    bin_dir = Path(sys.executable).parent
    export_dir = cache / f"export-{model_dir.name}"
    subprocess.run(
        [str(bin_dir / "wsi-pipeline"), "export", "--format", "torchscript", "--model", str(model_dir),
         "-o", str(export_dir)],
        check=True,
    )  # fmt: skip

    print("model-only throughput ...", flush=True)
    load_before = os.getloadavg()[0]
    model_only = model_only_throughput(model_dir, args.batch_size, args.model_only_seconds)
    model_only["loadavg_1min"] = round((load_before + os.getloadavg()[0]) / 2, 2)

    runs: dict[str, RunStats] = {}
    out_ours = cache / "out-wsi-infer"
    shutil.rmtree(out_ours, ignore_errors=True)
    cmd = [str(bin_dir / "wsi-infer"), str(slide), "-o", str(out_ours), "--model", str(model_dir),
           "--batch-size", str(args.batch_size), "--device", "cpu", "--no-progress"]  # fmt: skip
    cmd += args.infer_args.split()
    print("running wsi-infer ...", flush=True)
    ours = run_measured("wsi-infer", cmd, None, cache / "wsi-infer.log")
    our_tiles = read_our_csv(out_ours / slide.stem / "tiles.csv")
    ours.n_tiles = len(our_tiles)
    summary = json.loads((out_ours / slide.stem / "summary.json").read_text())
    ours.extra["timings"] = summary.get("timings", {})
    runs["wsi-infer"] = ours

    theirs_tiles: dict = {}
    if not args.skip_wsinfer:
        exe = ensure_wsinfer(cache / "wsinfer-venv", not args.no_install)
        ensure_registry()
        wsi_dir = cache / "wsinfer-slides"
        shutil.rmtree(wsi_dir, ignore_errors=True)
        wsi_dir.mkdir()
        (wsi_dir / slide.name).symlink_to(slide)
        results = cache / "out-wsinfer"
        shutil.rmtree(results, ignore_errors=True)
        env = dict(os.environ, HF_HUB_OFFLINE="1", WSINFER_FORCE_CPU="1")
        cmd = [str(exe), "run", "--wsi-dir", str(wsi_dir), "--results-dir", str(results),
               "--model-path", str(export_dir / "torchscript_model.pt"),
               "--config", str(export_dir / "config.json"),
               "--batch-size", str(args.wsinfer_batch_size)]  # fmt: skip
        if args.wsinfer_workers is not None:
            cmd += ["--num-workers", str(args.wsinfer_workers)]
        print("running wsinfer ...", flush=True)
        theirs = run_measured("wsinfer", cmd, env, cache / "wsinfer.log")
        theirs_tiles = read_wsinfer_csv(results / "model-outputs-csv" / f"{slide.stem}.csv")
        theirs.n_tiles = len(theirs_tiles)
        runs["wsinfer"] = theirs

    report = {
        "machine": {
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "cuda": torch.cuda.is_available(),
        },
        "slide": {
            "path": str(slide),
            "side_px": args.grid * 96,
            "tissue_cells": int((layout.cells >= 0).sum()),
        },
        "model": str(model_dir),
        "model_only_tiles_per_s": model_only,
        "runs": {k: {**asdict(v), "tiles_per_s": v.tiles_per_s} for k, v in runs.items()},
    }
    if theirs_tiles:
        report["agreement"] = agreement(our_tiles, theirs_tiles)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    (cache / "last_report.json").write_text(json.dumps(report, indent=2) + "\n")


def print_report(report: dict) -> None:
    mo = report["model_only_tiles_per_s"]
    limit = max(mo["fp32_channels_last"], mo.get("fp32_bn_folded", 0.0))  # the faster of the two
    print("\n=== model-only throughput (tiles/s, batch of random tiles) ===")
    for key, value in mo.items():
        print(f"  {key:<24} {value:9.1f}")
    print("  (loadavg_1min: the machine's 1-minute load average while measuring; 2 cores)")
    print("\n=== whole slide, end to end (process start to exit) ===")
    head = ("tool", "tiles", "wall s", "tiles/s", "% model", "peak tree RSS MB", "max 1 proc", "tree PSS MB")
    print("  {:<10} {:>7} {:>8} {:>8} {:>8} {:>17} {:>11} {:>12}".format(*head))
    for name, r in report["runs"].items():
        load = (r["extra"].get("loadavg_1min_before"), r["extra"].get("loadavg_1min_after"))
        print(f"  {name}: load average before/after {load[0]}/{load[1]}")
        print(
            f"  {name:<10} {r['n_tiles']:>7} {r['wall_s']:>8.1f} {r['tiles_per_s']:>8.1f} "
            f"{100 * r['tiles_per_s'] / limit:>7.1f}% {r['peak_tree_rss_mb']:>17.0f} "
            f"{r['peak_single_rss_mb']:>11.0f} {r.get('peak_tree_pss_mb', 0.0):>12.0f}"
        )
    ours = report["runs"].get("wsi-infer")
    if ours and ours.get("extra", {}).get("timings"):
        t = ours["extra"]["timings"]
        other = sum(t.get(k, 0.0) for k in ("open_s", "tissue_s", "aggregate_s", "write_s"))
        stage = ours["n_tiles"] / max(1e-9, t.get("total_s", 0.0) - other)
        print(f"  wsi-infer stage timings (s): {t}")
        print(f"  wsi-infer tile stage only: {stage:.1f} tiles/s = {100 * stage / limit:.1f}% of model-only")
    theirs = report["runs"].get("wsinfer")
    if ours and theirs:
        print(
            f"\n  speed ratio wsi-infer / wsinfer: {ours['tiles_per_s'] / theirs['tiles_per_s']:.2f}x; "
            f"peak memory ratio (tree RSS): {ours['peak_tree_rss_mb'] / theirs['peak_tree_rss_mb']:.2f}, "
            f"(tree PSS): {ours['peak_tree_pss_mb'] / max(theirs['peak_tree_pss_mb'], 1e-9):.2f}"
        )
    if "agreement" in report:
        print("\n=== tumour probability agreement (tiles matched by minx,miny) ===")
        for key, value in report["agreement"].items():
            print(f"  {key:<28} {value}")


if __name__ == "__main__":
    main()
