"""One chunk of simulated pairs, the unit of work of every executor (local pool or Dask).

Chunk ``i`` draws its pairs from its own generator seeded by ``chunk_seed(seed, i)``, so the data
do not depend on the number of workers, the executor or restarts.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["chunk_seed", "simulate_chunk", "worker_init", "run_chunk"]

_SEED_STRIDE = 1_000_003  # chunk seeds: seed * stride + chunk index (distinct for any sane n)


def chunk_seed(seed: int, index: int) -> int:
    return seed * _SEED_STRIDE + index


def simulate_chunk(
    prior: Any, forward_model: Any, noise_model: Any, n: int, seed: int
) -> dict[str, np.ndarray]:
    """Draw ``n`` pairs with one generator seeded by ``seed``; drop non-finite pairs.

    Returns numpy arrays ``x``, ``y``, ``y_clean`` (float32 unless the prior says otherwise)
    and ``dropped`` (a 0-d count).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        x = prior.sample(n, generator=g)
        y_clean = forward_model(x)
        y = noise_model(y_clean, generator=g)
    ok = (
        torch.isfinite(x.flatten(1)).all(1)
        & torch.isfinite(y_clean.flatten(1)).all(1)
        & torch.isfinite(y.flatten(1)).all(1)
    )
    dtype = x.dtype
    return {
        "x": x[ok].cpu().numpy(),
        "y": y[ok].to(dtype).cpu().numpy(),
        "y_clean": y_clean[ok].to(dtype).cpu().numpy(),
        "dropped": np.array(int((~ok).sum())),
    }


def worker_init(parent_pid: int | None = None) -> None:
    # One torch and one BLAS thread per worker process: workers parallelise across chunks.
    # OpenBLAS threads spin while waiting, so 2 workers x 2 BLAS threads on 2 cores made FEM
    # simulation (scipy banded solves) over 10x slower than one worker.
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)
    if parent_pid is not None:  # no orphans when the parent is killed with -9
        from invdiff.runtime import die_with_parent

        die_with_parent(parent_pid)


def run_chunk(args: tuple) -> tuple[int, dict[str, np.ndarray]]:
    prior, fwd, noise, n, seed, index = args
    return index, simulate_chunk(prior, fwd, noise, n, seed)
