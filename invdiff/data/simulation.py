"""Simulate training pairs: x ~ Prior, y = Noise(Forward(x)).

Work is split into chunks of ``chunk_size`` pairs. Chunk ``i`` draws from its own generator
seeded by ``(seed, i)``, so the data do not depend on the number of workers or on restarts.
With a ``path``, each finished chunk is written atomically to ``<path>.parts/`` and a rerun
skips the chunks already there (resume after a crash); at the end the chunks are merged into
one ``.npz`` dataset (see :mod:`invdiff.data.dataset`) and the parts folder is removed.

Pairs with a non-finite x, clean or noisy y are dropped and counted (``meta["dropped"]``),
never kept silently.

Failures name what failed: a component that raises is a :class:`DataError` naming the chunk,
its seed and the component (:func:`invdiff.data.chunks.run_chunk`); a worker process that dies
(killed for memory) is a :class:`DataError` that says so and what to lower. Every chunk that
finished before the failure, in whatever order, is written first, so a rerun resumes.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import warnings
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from invdiff.data import Dataset, Normalization, load_arrays, load_dataset, save_arrays
from invdiff.data.chunks import chunk_seed, run_chunk, worker_init
from invdiff.errors import ConfigError, DataError
from invdiff.integrity import fingerprint
from invdiff.io import atomic_write_text


def simulation_signature(n: int, chunk_size: int, seed: int, spec: Any) -> str:
    """The fingerprint of a simulation's settings (``meta["signature"]`` of its dataset):
    what stages compare to decide whether data on disk are this config's."""
    return fingerprint({"n": n, "chunk_size": chunk_size, "seed": seed, "spec": spec})


def _default_spec(prior: Any, forward_model: Any, noise_model: Any) -> dict[str, Any]:
    """Each component's class and its plain settings (attributes that are numbers, strings,
    dtypes or tuples of them; public ones), so that resuming with another ``length_scale`` is
    refused even without a ``spec``; caches and arrays are left out (they may fill in
    lazily)."""
    return {role: {"class": type(obj).__module__ + "." + type(obj).__qualname__,
                   "settings": {k: _plain(v) for k, v in sorted(vars(obj).items())
                                if not k.startswith("_") and _plain(v) is not None}
                   if hasattr(obj, "__dict__") else {}}
            for role, obj in (("prior", prior), ("forward_model", forward_model),
                              ("noise_model", noise_model))}


def _plain(v: Any) -> Any:
    """``v`` as a JSON-able plain value, or None if it is not one."""
    if isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, torch.dtype):
        return str(v)
    if isinstance(v, (tuple, list)) and v and all(_plain(i) is not None for i in v):
        return [_plain(i) for i in v]
    return None


def simulate(
    prior: Any,
    forward_model: Any,
    noise_model: Any,
    n: int,
    chunk_size: int = 256,
    workers: int = 1,
    seed: int = 0,
    path: str | Path | None = None,
    progress: bool = True,
    spec: Any = None,
    executor: str = "local",
    scheduler: str | None = None,
    security: Any = None,
) -> Dataset:
    """Simulate ``n`` pairs (fewer if some are dropped as non-finite) and return a Dataset.

    Args:
        prior, forward_model, noise_model: the components (picklable when ``workers > 1``).
        n: number of pairs to draw; chunk_size: pairs per chunk (the unit of resume).
        workers: processes (1 = in this process). seed: the master seed.
        path: ``.npz`` file to write; with a path, finished chunks are kept in
            ``<path>.parts/`` until the end, so an interrupted run resumes where it stopped.
            If ``path`` already holds a dataset made with the same settings, it is loaded.
        spec: a JSON-able description of the components (e.g. their registry names and
            params); it is stored in ``meta`` and guards resume against mixing settings.
        executor: ``"local"`` (a process pool of ``workers``) or ``"dask"``
            (:mod:`invdiff.data.dask_executor`: a LocalCluster of ``workers`` processes, or the
            running ``scheduler``); the data do not depend on it.
        security: dask only: TLS credentials (a ``distributed.security.Security``, or a dict
            ``{"ca_file": ..., "cert": ..., "key": ...}``, :func:`invdiff.data.dask_executor.
            make_security`) for the scheduler, workers and client.

    Before any work, the memory the pairs need is compared with the memory available
    (:mod:`invdiff.resources`); too little is a :class:`ConfigError` naming ``n``.
    """
    if executor not in ("local", "dask"):
        raise ConfigError(f"unknown executor {executor!r}; use 'local' or 'dask'")
    if n < 1 or chunk_size < 1 or workers < 1:
        raise ConfigError(f"need n, chunk_size, workers >= 1; got {n}, {chunk_size}, {workers}")
    if seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed}")
    spec = spec if spec is not None else _default_spec(prior, forward_model, noise_model)
    signature = simulation_signature(n, chunk_size, seed, spec)
    meta = {"n_requested": n, "chunk_size": chunk_size, "seed": seed, "spec": spec,
            "signature": signature}
    sizes = [min(chunk_size, n - start) for start in range(0, n, chunk_size)]

    parts_dir = None
    done: dict[int, dict[str, np.ndarray]] = {}
    if path is not None:
        path = Path(path)
        existing = _existing_dataset(path, signature)
        if existing is not None:
            return existing
        parts_dir = path.with_name(path.name + ".parts")
    _check_memory(prior, forward_model, n, workers * chunk_size)
    if parts_dir is not None:
        done = _load_parts(parts_dir, signature, len(sizes))

    todo = [(prior, forward_model, noise_model, size, chunk_seed(seed, i), i)
            for i, size in enumerate(sizes) if i not in done]
    bar = tqdm(total=len(sizes), initial=len(done), desc="simulate", unit="chunk",
               disable=not progress)
    if executor == "dask":
        from invdiff.data.dask_executor import map_chunks as dask_map

        tls = {"security": security} if security is not None else {}
        results = dask_map(todo, workers, scheduler, **tls)
    else:
        results = _map_chunks(todo, workers)
    for index, arrays in results:
        if parts_dir is not None:
            save_arrays(parts_dir / f"chunk_{index:06d}.npz", arrays)
        done[index] = arrays
        bar.update(1)
    bar.close()

    dataset = _merge(done, meta)
    if path is not None:
        dataset.save(path)
        shutil.rmtree(parts_dir, ignore_errors=True)
    return dataset


def _check_memory(prior: Any, forward_model: Any, n: int, in_flight: int) -> None:
    from invdiff.resources import check_memory, problem_shapes, simulation_bytes

    shapes = problem_shapes(prior, forward_model)
    if shapes is not None:
        check_memory(simulation_bytes(n, *shapes, in_flight=min(in_flight, n)), setting="n",
                     value=n, what=f"the simulated pairs (x {shapes[0]}, y {shapes[1]})",
                     fix=", or workers x chunk_size")


def _map_chunks(todo: list[tuple], workers: int):
    """Yield ``(index, arrays)`` of the chunks in ``todo`` as they finish (any order). After
    a failure, the chunks already finished are yielded (to be written) before it is raised,
    and chunks not yet started are cancelled."""
    if workers == 1 or len(todo) <= 1:
        for args in todo:
            yield run_chunk(args)
        return
    # fork where available (no `if __name__ == "__main__"` guard needed in user scripts, no
    # re-import of torch); workers then use one thread each, as torch's DataLoader workers do.
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=worker_init,
                               initargs=(os.getpid(),))
    try:
        pending = {pool.submit(run_chunk, args): args for args in todo}
        failure: BaseException | None = None
        lost: list[tuple] = []  # chunks a dead worker took down with the pool
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in sorted(finished, key=lambda f: pending[f][-1]):
                args = pending.pop(fut)
                if fut.cancelled():
                    continue
                exc = fut.exception()
                if exc is None:
                    yield fut.result()
                    continue
                if isinstance(exc, BrokenProcessPool):
                    lost.append(args)
                elif failure is None:
                    failure = exc
                for other in pending:  # chunks not started: not worth starting
                    other.cancel()
        if failure is not None:
            raise failure
        if lost:
            raise _worker_died(lost)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _worker_died(lost: list[tuple]) -> DataError:
    chunks = ", ".join(f"{index} (seed {seed})" for *_, seed, index in lost[:5])
    more = f" and {len(lost) - 5} more" if len(lost) > 5 else ""
    return DataError(
        f"a simulation worker died (killed for memory?) with chunks {chunks}{more} unfinished; "
        f"lower data.workers or data.chunk_size (workers x chunk_size pairs are in memory at "
        f"once), then rerun: finished chunks are kept when simulating to a file"
    )


def _existing_dataset(path: Path, signature: str) -> Dataset | None:
    if not path.exists():
        return None
    ds = load_dataset(path)
    if ds.meta.get("signature") != signature:
        raise DataError(
            f"{path} already holds a dataset made with other settings; delete it or choose "
            f"another path"
        )
    return ds


def _load_parts(parts_dir: Path, signature: str, n_chunks: int) -> dict[int, dict]:
    """Chunks finished by an earlier, interrupted run with the same settings."""
    manifest = parts_dir / "manifest.json"
    if parts_dir.exists() and manifest.exists():
        if json.loads(manifest.read_text()).get("signature") != signature:
            raise DataError(
                f"{parts_dir} holds chunks of a run with other settings; delete the folder to "
                f"start afresh, or rerun with the original settings to resume"
            )
    parts_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(manifest, json.dumps({"signature": signature}))
    done = {}
    for f in sorted(parts_dir.glob("chunk_*.npz")):
        index = int(f.stem.split("_")[1])
        if index < n_chunks:
            try:
                done[index] = load_arrays(f, "it is simulated again")
            except DataError as exc:  # chunks are deterministic: redo a damaged one
                warnings.warn(str(exc), stacklevel=3)
                f.unlink()
    return done


def _merge(done: dict[int, dict[str, np.ndarray]], meta: dict[str, Any]) -> Dataset:
    order = sorted(done)
    cat = {k: np.concatenate([done[i][k] for i in order]) for k in ("x", "y", "y_clean")}
    dropped = int(sum(int(done[i]["dropped"]) for i in order))
    if len(cat["x"]) == 0:
        raise DataError("every simulated pair was non-finite: check the forward model")
    x, y, y_clean = (torch.from_numpy(cat[k]) for k in ("x", "y", "y_clean"))
    meta = {**meta, "dropped": dropped, "n": int(x.shape[0])}
    return Dataset(x, y, Normalization.fit(x, y), meta, y_clean)
