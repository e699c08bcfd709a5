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

Dask sends pickles between the client, the scheduler and the workers, and a pickle can run
code: whoever can reach a plain ``tcp://`` scheduler can run code on every worker and on the
client. Use ``tcp://`` only on a network you trust (a warning says so for a scheduler that is
not on this machine); elsewhere use ``tls://`` with ``security`` (``data.security``: a CA,
certificate and key, :func:`make_security`), which encrypts the traffic and admits only peers
with a certificate signed by that CA. A LocalCluster given ``security`` talks TLS too.

The components (prior, forward and noise models) are sent to every worker once. A task
whose worker dies is rescheduled on another worker by the scheduler (Dask's
``distributed.scheduler.allowed-failures``, 3 by default), and a task that raises is retried
``RETRIES`` times, so a lost worker costs only its chunk.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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


def make_security(spec: Any) -> Any:
    """A ``distributed.security.Security`` requiring TLS, from ``spec``: None (none), a
    Security (as it is), or the CA, certificate and key files as a mapping or an object with
    attributes ``ca_file``, ``cert``, ``key`` (``key`` may be None when ``cert`` holds it;
    e.g. ``data.security`` of a config). The same certificate serves the client and, for a
    LocalCluster, the scheduler and workers it starts."""
    if spec is None:
        return None
    from distributed.security import Security

    if isinstance(spec, Security):
        return spec
    if hasattr(spec, "model_dump"):
        spec = spec.model_dump()
    if not isinstance(spec, Mapping) or not spec.get("ca_file") or not spec.get("cert"):
        raise ConfigError("data.security needs ca_file and cert (and key, unless the "
                          "certificate file holds it): PEM files of the cluster's TLS setup")
    files = {k: spec.get(k) for k in ("ca_file", "cert", "key")}
    for name, value in files.items():
        if value is not None and not Path(value).is_file():
            raise ConfigError(f"data.security.{name}: no file at {value}; give the path of "
                              f"the PEM file")
    ca, cert, key = (str(v) if v is not None else None for v in files.values())
    return Security(tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key,
                    tls_scheduler_cert=cert, tls_scheduler_key=key, tls_worker_cert=cert,
                    tls_worker_key=key, require_encryption=True)


def _warn_if_open(scheduler: str, security: Any) -> None:
    """Warn for a plain tcp:// scheduler on another machine: its pickles can run code."""
    parts = urlsplit(scheduler if "://" in scheduler else f"tcp://{scheduler}")
    local = parts.hostname in ("localhost", "127.0.0.1", "::1") or (
        parts.hostname or "").startswith("127.")
    if security is None and parts.scheme == "tcp" and not local:
        warnings.warn(
            f"data.scheduler {scheduler!r} is plain tcp://: Dask exchanges pickles, so anyone "
            f"who can reach that scheduler can run code on its workers and on this machine; "
            f"use it only on a trusted network, or use tls:// with data.security "
            f"(docs/scale-out.md)", UserWarning, stacklevel=4)


def client_for(scheduler: str | None, workers: int, security: Any = None
               ) -> tuple[Any, Any]:
    """``(client, cluster)``: connected to ``scheduler``, or to a new LocalCluster (then
    ``cluster`` is it, to close after the client). ``security``: TLS credentials
    (:func:`make_security`)."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError(f"data.executor = 'dask' needs Dask: {_EXTRA}") from None
    sec = make_security(security)
    if scheduler is None:
        tls = {"security": sec, "protocol": "tls://"} if sec is not None else {}
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR, **tls)
        try:
            return Client(cluster, **({"security": sec} if sec is not None else {})), cluster
        except BaseException:
            cluster.close()
            raise
    if sec is not None and not scheduler.startswith("tls://"):
        raise ConfigError(f"data.scheduler {scheduler!r}: with data.security the scheduler "
                          f"speaks TLS; give its tls:// address")
    if sec is None and scheduler.startswith("tls://"):
        raise ConfigError(f"data.scheduler {scheduler!r} is a TLS address: set data.security "
                          f"(ca_file, cert, key) to connect")
    _warn_if_open(scheduler, sec)
    timeout = _timeout_s()
    try:
        return Client(scheduler, timeout=timeout,
                      **({"security": sec} if sec is not None else {})), None
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConfigError(
            f"cannot reach the Dask scheduler at {scheduler!r} within {timeout:g} s "
            f"({type(exc).__name__}: {exc}); start it (`dask scheduler`), fix data.scheduler, "
            f"or unset it to simulate on a LocalCluster"
        ) from None


def map_chunks(todo: list[tuple], workers: int, scheduler: str | None = None,
               security: Any = None) -> Iterator[tuple[int, dict]]:
    """Run ``todo`` items ``(prior, forward_model, noise_model, n, seed, index)`` (all with
    the same three components) on Dask; yield ``(index, arrays)`` as chunks finish. After a
    chunk fails (past its retries), the chunks already finished are yielded before the
    error is raised, and the others are cancelled."""
    if not todo:
        return
    client, cluster = client_for(scheduler, workers, security)
    from dask.distributed import as_completed

    try:
        [components] = client.scatter([tuple(todo[0][:3])], broadcast=True)
        futures = [client.submit(_task, components, n, seed, index, pure=False,
                                 retries=RETRIES)
                   for *_, n, seed, index in todo]
        yielded: set[str] = set()
        for fut in as_completed(futures):
            if fut.status == "finished":
                yielded.add(fut.key)
                yield fut.result()
                continue
            rest = [f for f in futures if f.key not in yielded and f is not fut]
            for done in rest:  # keep what finished meanwhile (a rerun resumes from it)
                if done.status == "finished":
                    yield done.result()
            client.cancel([f for f in rest if f.status != "finished"])
            fut.result()  # raises the chunk's error
            return
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
