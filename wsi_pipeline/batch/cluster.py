"""Start a local Dask cluster (one worker process per GPU, or N CPU workers) or connect to one.

A slide is one task and a worker runs one task at a time (``nthreads=1``); parallelism inside a
slide comes from torch threads and the slide reader's threads, so each CPU worker gets
``cores // workers`` torch threads. GPU workers are pinned with ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from wsi_pipeline.errors import OptionError

if TYPE_CHECKING:
    from distributed import Client, LocalCluster

#: Environment variable read by the slide task to size torch's thread pool.
TORCH_THREADS_ENV = "WSI_TORCH_THREADS"
#: How often a slide may be on a worker that dies before it is reported failed.
DEFAULT_ALLOWED_FAILURES = 3


@dataclass
class ClusterPlan:
    """How many worker processes to start and what environment each one gets."""

    n_workers: int
    threads_per_worker: int
    torch_threads: int
    envs: list[dict[str, str]]
    gpu: bool


def visible_gpu_ids() -> list[str]:
    """GPU ids this process may use (respects an existing ``CUDA_VISIBLE_DEVICES``)."""
    try:
        import torch

        count = torch.cuda.device_count()
    except Exception:  # a broken CUDA install means "no GPU", not a crash
        count = 0
    if count == 0:
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        return ids[:count]
    return [str(i) for i in range(count)]


def _thread_env(threads: int) -> dict[str, str]:
    return {TORCH_THREADS_ENV: str(threads), "OMP_NUM_THREADS": str(threads)}


def plan_workers(
    workers: int | None, device: str = "auto", cores: int | None = None, gpu_ids: list[str] | None = None
) -> ClusterPlan:
    """Decide the local worker layout.

    GPU (``device`` is ``auto`` with a GPU present, or ``cuda``): one worker per visible GPU, each
    pinned to its GPU (``workers`` may ask for fewer). CPU: ``workers`` processes (default:
    one per two cores, at least one), each with ``cores // workers`` torch threads.
    """
    cores = cores or os.cpu_count() or 1
    if workers is not None and workers < 1:
        raise OptionError(f"--workers must be >= 1, got {workers}")
    want_gpu = device.startswith("cuda") or device == "auto"
    gpus = (visible_gpu_ids() if gpu_ids is None else gpu_ids) if want_gpu else []
    if device.startswith("cuda") and not gpus:
        raise OptionError(f"--device {device}: no CUDA GPU is visible on this machine")
    if gpus:
        if workers is not None and workers > len(gpus):
            raise OptionError(f"--workers {workers}: only {len(gpus)} GPU(s) visible, one worker per GPU")
        gpus = gpus[: workers or len(gpus)]
        torch_threads = max(1, cores // len(gpus))
        envs = [{"CUDA_VISIBLE_DEVICES": g, **_thread_env(torch_threads)} for g in gpus]
        return ClusterPlan(len(gpus), 1, torch_threads, envs, gpu=True)
    n = workers or max(1, cores // 2)
    torch_threads = max(1, cores // n)
    # Hide GPUs from CPU workers so "auto" never picks one up behind our back.
    envs = [{"CUDA_VISIBLE_DEVICES": "", **_thread_env(torch_threads)} for _ in range(n)]
    return ClusterPlan(n, 1, torch_threads, envs, gpu=False)


def start_local_cluster(
    plan: ClusterPlan, allowed_failures: int = DEFAULT_ALLOWED_FAILURES, dashboard_address: str | None = ":0"
) -> LocalCluster:
    """Start a ``LocalCluster`` of worker processes, each with its own environment (GPU pinning)."""
    from distributed import LocalCluster
    from distributed.worker_memory import parse_memory_limit

    memory_limit = parse_memory_limit("auto", 1, plan.n_workers, logger=logging.getLogger(__name__))
    cluster = LocalCluster(
        n_workers=0,
        threads_per_worker=plan.threads_per_worker,
        processes=True,
        dashboard_address=dashboard_address,
        scheduler_kwargs={"allowed_failures": allowed_failures},
        memory_limit=memory_limit,
    )
    try:
        for env in plan.envs:
            name, spec = next(iter(cluster.new_worker_spec().items()))
            cluster.worker_spec[name] = {"cls": spec["cls"], "options": {**spec["options"], "env": env}}
        cluster.scale(plan.n_workers)
    except BaseException:
        cluster.close()
        raise
    return cluster


@contextmanager
def open_client(
    scheduler: str | None,
    plan: ClusterPlan | None,
    allowed_failures: int = DEFAULT_ALLOWED_FAILURES,
    connect_timeout: float = 30.0,
    echo: Callable[[str], object] = print,
) -> Iterator[Client]:
    """Yield a ``distributed.Client``: connected to ``scheduler`` or to a new local cluster."""
    from distributed import Client

    if scheduler:
        if "://" not in scheduler:
            scheduler = f"tcp://{scheduler}"
        try:
            client = Client(scheduler, timeout=connect_timeout)
        except (OSError, TimeoutError) as exc:
            raise OptionError(f"--scheduler {scheduler}: cannot connect: {exc}") from exc
        try:
            n_workers = len(client.scheduler_info()["workers"])
            echo(
                f"Connected to Dask scheduler {scheduler} ({n_workers} workers); "
                f"dashboard: {client.dashboard_link}"
            )
            yield client
        finally:
            client.close()
        return
    if plan is None:
        raise ValueError("open_client needs a scheduler address or a ClusterPlan")
    cluster = start_local_cluster(plan, allowed_failures=allowed_failures)
    try:
        client = Client(cluster)
        try:
            client.wait_for_workers(plan.n_workers, timeout=90)
            kind = "GPU" if plan.gpu else "CPU"
            echo(
                f"Started local Dask cluster: {plan.n_workers} {kind} worker process(es), "
                f"{plan.torch_threads} torch thread(s) each; dashboard: {client.dashboard_link}"
            )
            yield client
        finally:
            client.close()
    finally:
        cluster.close()
