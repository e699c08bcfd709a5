"""Simulation on Dask (``executor = "dask"``): the same bytes as the local executor, resume of
written chunks, and the errors for a missing Dask or an unreachable scheduler.

The tests that start a LocalCluster (worker processes that import torch: about 10 s each on a
loaded 2-core machine) carry the ``slow`` marker."""

from __future__ import annotations

import hashlib
import socket
import sys
import time

import numpy as np
import pytest

import invdiff
from invdiff.errors import ConfigError
from invdiff.experiment.config import parse_config
from invdiff.reference import make_problem

pytest.importorskip("dask.distributed", reason="Dask is the optional extra invdiff[dask]")


@pytest.fixture(scope="module")
def prob():
    return make_problem(n=6, mask_fraction=0.8)


def sha256(ds) -> str:
    h = hashlib.sha256()
    for t in (ds.x, ds.y, ds.y_clean):
        h.update(np.ascontiguousarray(t.numpy()).tobytes())
    return h.hexdigest()


@pytest.mark.slow
def test_dask_local_cluster_gives_the_same_bytes(prob, tmp_path):
    """Two worker processes on a LocalCluster, 5 chunks finishing in any order: the merged
    arrays hash to the same sha256 as one local process (chunks keep their seeds)."""
    kw = dict(n=37, chunk_size=8, seed=5, progress=False)
    local = invdiff.simulate(prob.prior, prob.forward_model, prob.noise_model, **kw)
    dask = invdiff.simulate(prob.prior, prob.forward_model, prob.noise_model, workers=2,
                            executor="dask", path=tmp_path / "d.npz", **kw)
    assert len(dask) == 37 and sha256(dask) == sha256(local)
    assert (tmp_path / "d.npz").is_file() and not (tmp_path / "d.npz.parts").exists()


@pytest.mark.slow
def test_dask_reuses_chunks_written_before_an_interruption(prob, tmp_path, monkeypatch):
    """Chunks an interrupted run wrote are not simulated again: only the missing ones go to
    Dask, and the result still has the local bytes."""
    from invdiff.data import dask_executor

    kw = dict(n=24, chunk_size=8, seed=2, progress=False)
    local = invdiff.simulate(prob.prior, prob.forward_model, prob.noise_model, **kw)
    path = tmp_path / "d.npz"
    real = dask_executor.map_chunks

    def interrupted(todo, workers, scheduler=None):
        for i, item in enumerate(real(todo, workers, scheduler)):
            if i == 2:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(dask_executor, "map_chunks", interrupted)
    with pytest.raises(KeyboardInterrupt):
        invdiff.simulate(prob.prior, prob.forward_model, prob.noise_model, executor="dask",
                         path=path, workers=1, **kw)
    assert len(list((tmp_path / "d.npz.parts").glob("chunk_*.npz"))) == 2
    sent: list[int] = []

    def counting(todo, workers, scheduler=None):
        sent.extend(item[-1] for item in todo)
        yield from real(todo, workers, scheduler)

    monkeypatch.setattr(dask_executor, "map_chunks", counting)
    ds = invdiff.simulate(prob.prior, prob.forward_model, prob.noise_model, executor="dask",
                          path=path, workers=1, **kw)
    assert len(sent) == 1 and sha256(ds) == sha256(local)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket is: nobody listens there


def test_unreachable_scheduler_fails_fast_naming_the_address(prob, monkeypatch):
    monkeypatch.setenv("INVDIFF_DASK_TIMEOUT", "2")
    address = f"tcp://127.0.0.1:{_closed_port()}"
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=f"cannot reach the Dask scheduler at '{address}'"):
        invdiff.simulate(prob.prior, prob.forward_model, prob.noise_model, n=8,
                         executor="dask", scheduler=address, progress=False)
    assert time.monotonic() - t0 < 30  # a timeout, not a hang


def test_missing_dask_names_the_extra(prob, monkeypatch):
    monkeypatch.setitem(sys.modules, "dask.distributed", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"invdiff\[dask\]"):
        invdiff.simulate(prob.prior, prob.forward_model, prob.noise_model, n=8,
                         executor="dask", progress=False)


def test_config_fields():
    base = {"problem": {k: {"name": "x"} for k in ("prior", "forward_model", "noise_model")},
            "net": {"name": "x"}}
    assert parse_config(base).data.executor == "local"
    cfg = parse_config({**base, "data": {"executor": "dask", "workers": 4,
                                         "scheduler": "tcp://h:8786"}})
    assert cfg.data.scheduler == "tcp://h:8786"
    with pytest.raises(ConfigError, match="data.executor"):
        parse_config({**base, "data": {"executor": "ray"}})
    with pytest.raises(ConfigError, match="set data.executor = 'dask'"):
        parse_config({**base, "data": {"scheduler": "tcp://h:8786"}})


class DyingPrior:
    """The reference prior, except that the first chunk to run kills its worker process
    (os._exit, no exception: as if the machine went away) once, marked by a file."""

    def __init__(self, prior, marker):
        self.prior, self.marker, self.shape = prior, str(marker), prior.shape

    def sample(self, n, generator=None):
        import os
        from pathlib import Path

        if not Path(self.marker).exists():
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(1)
        return self.prior.sample(n, generator=generator)


@pytest.mark.slow
def test_a_worker_that_dies_costs_only_its_chunk(prob, tmp_path):
    """A worker dies in the middle of a chunk: Dask reruns that chunk on a worker that lives,
    and the data still hash like the local executor's."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests
    kw = dict(n=24, chunk_size=8, seed=4, progress=False)
    local = invdiff.simulate(prob.prior, prob.forward_model, prob.noise_model, **kw)
    dying = DyingPrior(prob.prior, tmp_path / "died")
    ds = invdiff.simulate(dying, prob.forward_model, prob.noise_model, executor="dask",
                          workers=2, **kw)
    assert (tmp_path / "died").exists()  # a worker did die
    assert sha256(ds) == sha256(local)
