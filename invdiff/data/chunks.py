"""One chunk of simulated pairs, the unit of work of every executor (local pool or Dask).

Chunk ``i`` draws its pairs from its own generator seeded by ``chunk_seed(seed, i)``, so the data
do not depend on the number of workers, the executor or restarts.

A component that raises while a chunk is simulated (a plugin's bug, a mesh that fails to
converge) is reported as a :class:`~invdiff.errors.DataError` naming the chunk, its seed, the
component (role and class) and the original error, the same on every executor.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from invdiff.errors import DataError

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
        x = _call("prior", prior, lambda: prior.sample(n, generator=g))
        y_clean = _call("forward model", forward_model, lambda: forward_model(x))
        y = _call("noise model", noise_model, lambda: noise_model(y_clean, generator=g))
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


class ComponentFailed(DataError):
    """A component raised inside :func:`simulate_chunk` (its role, class and error);
    :func:`run_chunk` adds the chunk and its seed."""


def _call(role: str, component: Any, fn: Any) -> Any:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - any failure of a plugin's code is reported
        detail = " ".join(str(exc).split())[:500] or "(no message)"
        raise ComponentFailed(f"the {role} {type(component).__name__} raised "
                              f"{type(exc).__name__}: {detail}") from exc


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
    """``(index, arrays)`` of the chunk ``(prior, forward_model, noise_model, n, seed,
    index)``; a component that raises becomes a :class:`DataError` naming the chunk."""
    prior, fwd, noise, n, seed, index = args
    try:
        return index, simulate_chunk(prior, fwd, noise, n, seed)
    except ComponentFailed as exc:
        raise DataError(f"simulating chunk {index} ({n} pairs, seed {seed}) failed: {exc}; "
                        f"fix the component, or rerun to simulate the chunks that are "
                        f"missing (finished chunks are kept when simulating to a file)"
                        ) from exc.__cause__
