"""Scaling from 1 to 2 processes on this machine, measured side by side in one run.

- Simulation (pairs/s), elasticity FEM at N = 32 and 64: one process, a process pool of 2
  (``data.executor = "local"``, ``workers = 2``; one whole ``invdiff.simulate`` call, pool
  start-up included) and a Dask LocalCluster of 2 single-threaded workers
  (``executor = "dask"`` with ``scheduler`` = its address). The cluster's start-up (worker
  processes, and their imports of torch and the plugins, forced by one small chunk) is timed
  once on its own row, as it is paid once per ``invdiff simulate``, not per pair.
- Training (examples/s): the demo's U-Net (base width 16, 32 x 32 fields), global batch 32,
  after 3 warm-up steps: one process with one thread, one process with two threads, and two
  ranks under ``torch.distributed.run`` (DDP, gloo, one thread each, 16 examples per rank).

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_scale_out.py [--out FILE]``
(about 7 minutes on 2 cores; prints the rows, and ``--out`` writes them as a result file: JSON,
with the command, threads and machine). ``--out docs/results/data/scale-out.json`` also writes
docs/results/scale-out.md (``benchmarks/results_pages.py``). Needs the invdiff-elasticity and
invdiff-unet plugins and the ``dask`` extra.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SIM = {32: 512, 64: 128}  # grid -> pairs per measurement (a few seconds each)
TRAIN_STEPS, WARMUP, BATCH, GRID = 12, 3, 32, 32


def problem(grid: int) -> tuple:
    import invdiff

    return (invdiff.create("prior", "circular-inclusion", n=grid),
            invdiff.create("forward_model", "elasticity-fem", grid=grid),
            invdiff.create("noise_model", "gaussian", level=0.05))


def simulate_rate(grid: int, n: int, workers: int, executor: str,
                  scheduler: str | None = None) -> float:
    import invdiff

    t0 = time.perf_counter()
    ds = invdiff.simulate(*problem(grid), n=n, chunk_size=n // 8, workers=workers,
                          executor=executor, scheduler=scheduler, progress=False)
    seconds = time.perf_counter() - t0
    assert len(ds) == n
    return n / seconds


def train_worker(threads: int) -> None:
    """Time TRAIN_STEPS steps (after WARMUP) of the Trainer; rank 0 prints JSON."""
    import torch

    import invdiff
    from invdiff.data import Dataset, Normalization
    from invdiff.sampling.sigmas import geometric
    from invdiff.training import Trainer, TrainingConfig, distributed

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(256, 1, GRID, GRID, generator=g)
    y = torch.randn(256, 1, GRID, GRID, generator=g)
    data = Dataset(x, y, Normalization.fit(x, y))
    net = invdiff.create("score_net", "unet", x_shape=(1, GRID, GRID), y_shape=(1, GRID, GRID),
                         base_width=16, channel_mult=[1, 2, 2], num_res_blocks=1)
    cfg = TrainingConfig(steps=WARMUP + TRAIN_STEPS, batch_size=BATCH, val_every=10**6,
                         checkpoint_every=10**6)
    trainer = Trainer(net, data, geometric(20.0, 0.02, 40), cfg, progress=False)
    for _ in range(WARMUP):
        trainer.train_step(*trainer.batch(trainer.step))
    distributed.barrier()
    t0 = time.perf_counter()
    for _ in range(TRAIN_STEPS):
        trainer.train_step(*trainer.batch(trainer.step))
    distributed.barrier()
    seconds = time.perf_counter() - t0
    if trainer.dist.is_main:
        print(json.dumps({"examples_per_s": TRAIN_STEPS * BATCH / seconds,
                          "world_size": trainer.dist.world_size}))
    distributed.shutdown()


def train_rate(ranks: int, threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    me = [str(Path(__file__).resolve()), "--train-worker", str(threads)]
    if ranks == 1:
        cmd = [sys.executable, *me]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={ranks}", *me]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["examples_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, help="write the rows as this result file (JSON)")
    ap.add_argument("--train-worker", type=int, metavar="THREADS", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.train_worker is not None:
        return train_worker(args.train_worker)
    from invdiff.data.dask_executor import client_for

    rows = []
    t0 = time.perf_counter()
    client, cluster = client_for(None, 2)
    client.run(lambda: problem(64))  # workers import torch and the plugins once
    rows.append({"work": "dask-start", "seconds": time.perf_counter() - t0})
    print(rows[-1], flush=True)
    try:
        for grid, n in SIM.items():
            base = None
            for mode, workers, executor, address in (
                    ("one", 1, "local", None), ("pool", 2, "local", None),
                    ("dask", 2, "dask", cluster.scheduler_address)):
                rate = simulate_rate(grid, n, workers, executor, address)
                base = base or rate
                rows.append({"work": "simulate", "grid": grid, "pairs": n, "mode": mode,
                             "pairs_per_s": rate, "ratio": rate / base})
                print(rows[-1], flush=True)
    finally:
        client.close()
        cluster.close()
    base = None
    for mode, ranks, threads in (("threads-1", 1, 1), ("threads-2", 1, 2), ("ddp", 2, 1)):
        rate = train_rate(ranks, threads)
        base = base or rate
        rows.append({"work": "train", "grid": GRID, "batch": BATCH, "mode": mode,
                     "examples_per_s": rate, "ratio": rate / base})
        print(rows[-1], flush=True)
    if args.out:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import results_pages

        results_pages.save_run(args.out, results_pages.new_run(
            results_pages.thread_settings("each case sets its own torch threads in each process"),
            results_pages.machine("torch", "dask"), rows=rows))


if __name__ == "__main__":
    main()
