"""Simulation chunks on a Dask cluster: ``data.executor = "dask"`` (``invdiff[dask]``).

:func:`map_chunks` runs the chunks of :func:`invdiff.data.simulation.simulate` as Dask tasks and
yields ``(index, arrays)`` as they finish, in any order: each chunk draws from its own
seed, so the data are bit-identical to ``executor = "local"`` whatever the number of workers.

- ``scheduler = None``: a ``LocalCluster`` of ``workers`` single-threaded worker processes on
  this machine, closed at the end.
- ``scheduler = "tcp://host:8786"``: an existing scheduler (``dask scheduler`` plus
  ``dask worker --nthreads 1`` processes, a dask-jobqueue cluster on SLURM/PBS, Kubernetes).
  The workers must run the same Python environment (invdiff and the plugins that provide the
  problem's components installed; plugin selection variables such as
  ``INVDIFF_LOAD_PLUGINS`` set there too): the components are pickled by reference to their
  classes. An unreachable address fails within ``INVDIFF_DASK_TIMEOUT`` seconds (default 30).

The components (prior, forward and noise models) are sent to every worker once. A task
whose worker dies is rescheduled on another worker by the scheduler (Dask's
``distributed.scheduler.allowed-failures``, 3 by default), and a task that raises is retried
``RETRIES`` times, so a lost worker costs only its chunk.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

from invdiff.errors import ConfigError

TIMEOUT_ENV = "INVDIFF_DASK_TIMEOUT"
RETRIES = 3
_EXTRA = "pip install 'invdiff[dask]' (Dask with dask.distributed)"


def _task(components: tuple, n: int, seed: int, index: int) -> tuple[int, dict]:
    """One chunk on a worker, with one torch / BLAS thread (workers parallelise chunks)."""
    from invdiff.data.chunks import run_chunk, worker_init

    worker_init()
    return run_chunk((*components, n, seed, index))


def _timeout_s() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        return float(raw) if raw else 30.0
    except ValueError:
        raise ConfigError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds") from None


def client_for(scheduler: str | None, workers: int) -> tuple[Any, Any]:
    """``(client, cluster)``: connected to ``scheduler``, or to a new LocalCluster (then
    ``cluster`` is it, to close after the client)."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError(f"data.executor = 'dask' needs Dask: {_EXTRA}") from None
    if scheduler is None:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
        return Client(cluster), cluster
    timeout = _timeout_s()
    try:
        return Client(scheduler, timeout=timeout), None
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConfigError(
            f"cannot reach the Dask scheduler at {scheduler!r} within {timeout:g} s "
            f"({type(exc).__name__}: {exc}); start it (`dask scheduler`), fix data.scheduler, "
            f"or unset it to simulate on a LocalCluster"
        ) from None


def map_chunks(todo: list[tuple], workers: int, scheduler: str | None = None
               ) -> Iterator[tuple[int, dict]]:
    """Run ``todo`` items ``(prior, forward_model, noise_model, n, seed, index)`` (all with
    the same three components) on Dask; yield ``(index, arrays)`` as chunks finish."""
    if not todo:
        return
    client, cluster = client_for(scheduler, workers)
    from dask.distributed import as_completed

    try:
        [components] = client.scatter([tuple(todo[0][:3])], broadcast=True)
        futures = [client.submit(_task, components, n, seed, index, pure=False,
                                 retries=RETRIES)
                   for *_, n, seed, index in todo]
        for fut in as_completed(futures):
            yield fut.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
