"""Safe by default: trusted loading only on a torch that makes it safe, runs that touch only
their own files, limits and seeds checked before any work, failures that name what failed,
checksums on every file invdiff reads back, and TLS for Dask (docs/reliability.md)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import tomllib
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import invdiff
from invdiff import resources
from invdiff.cli import main
from invdiff.data.chunks import chunk_seed
from invdiff.errors import CheckpointError, ConfigError, DataError, InvdiffError
from invdiff.experiment import run as pipeline
from invdiff.experiment.config import load_config, parse_config, read_config_data
from invdiff.experiment.lock import LOCK_NAME, stage_lock
from invdiff.integrity import file_sha256
from invdiff.io import TEMP_PATTERN, atomic_open, cached_arrays, host_tag
from invdiff.reference import make_problem
from tests.test_pipeline import TINY

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cfg_path(tmp_path):
    p = tmp_path / "tiny.toml"
    p.write_text(TINY.format(out=tmp_path / "run"))
    return p


@pytest.fixture(scope="module")
def prob():
    return make_problem(n=6, mask_fraction=0.8)


# -- 1. checkpoints load only on a torch whose weights_only loading is safe ------------------
def test_pyproject_requires_a_torch_without_the_weights_only_bypass():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    [torch_dep] = [d for d in deps if d.split(">")[0].split("=")[0].strip() == "torch"]
    assert torch_dep.replace(" ", "") == "torch>=2.6"


@pytest.mark.parametrize("version", ["2.5.1", "2.5.1+cpu", "2.1.0", "1.13.1"])
def test_checkpoints_are_refused_on_a_torch_before_2_6(tmp_path, monkeypatch, version):
    from invdiff.training import checkpoint

    path = _tiny_checkpoint(tmp_path)
    monkeypatch.setattr(checkpoint.torch, "__version__", version)
    loads = []
    monkeypatch.setattr(checkpoint.torch, "load", lambda *a, **k: loads.append(a))
    with pytest.raises(CheckpointError, match=r"torch 2\.|torch 1\.") as err:
        checkpoint.load_checkpoint(path)
    msg = str(err.value)
    assert "CVE-2025-32434" in msg and "torch>=2.6" in msg and str(path) in msg
    assert loads == []  # nothing was read with the unsafe loader


@pytest.mark.parametrize("version", ["2.6.0", "2.13.0+cpu", "3.0.0a0"])
def test_checkpoints_load_on_torch_2_6_and_later(tmp_path, monkeypatch, version):
    from invdiff.training import checkpoint

    path = _tiny_checkpoint(tmp_path)
    monkeypatch.setattr(checkpoint.torch, "__version__", version)
    assert checkpoint.load_checkpoint(path)["step"] == 3


def _tiny_checkpoint(tmp_path: Path) -> Path:
    from invdiff.data import Normalization
    from invdiff.training.checkpoint import save_checkpoint

    lin = torch.nn.Linear(2, 2)
    return save_checkpoint(tmp_path / "c.pt", model=lin.state_dict(), ema=lin.state_dict(),
                           optimizer={}, step=3, normalization=Normalization.identity(1, 1),
                           sigmas=torch.tensor([1.0, 0.1]))


def test_a_checkpoint_whose_bytes_changed_since_hashed_is_refused(tmp_path):
    from invdiff.training.checkpoint import load_checkpoint

    path = _tiny_checkpoint(tmp_path)
    good = file_sha256(path)
    assert load_checkpoint(path, sha256=good)["step"] == 3
    with pytest.raises(CheckpointError, match="changed while it was being used"):
        load_checkpoint(path, sha256="0" * 64)


def test_sample_records_the_hash_of_the_bytes_it_loaded(cfg_path, monkeypatch):
    """metrics.json's checkpoint_sha256 is taken before the model is loaded: a checkpoint
    that changes on disk after loading (a copy still being written) does not change it."""
    from invdiff.training import checkpoint

    cfg = load_config(cfg_path)
    pipeline.run_train(cfg, progress=False)
    final = cfg.out_dir / "checkpoints" / "final.pt"
    loaded_sha = file_sha256(final)
    real = checkpoint.load_model

    def load_then_change(path, *args, **kwargs):
        model = real(path, *args, **kwargs)
        with open(path, "ab") as fh:  # the file changes after it was read
            fh.write(b"appended later")
        return model

    monkeypatch.setattr(checkpoint, "load_model", load_then_change)
    metrics = pipeline.run_sample(cfg, progress=False)
    assert metrics["checkpoint_sha256"] == loaded_sha != file_sha256(final)


# -- 2. the lock cleans only invdiff's own stale temporaries, only in its folder -------------
def test_atomic_writes_name_their_temporaries_after_their_process(tmp_path):
    with atomic_open(tmp_path / "x.bin") as fh:
        [tmp] = [p for p in tmp_path.iterdir() if p.name != "x.bin"]
        m = TEMP_PATTERN.match(tmp.name)
        assert m and m["pid"] == str(os.getpid()) and m["host"] == host_tag()
        fh.write(b"1")
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]


def test_other_tools_temporaries_survive_a_run(cfg_path, tmp_path, capsys):
    out = tmp_path / "out"
    foreign = [out / ".notes.tmp", out / "sub" / ".draft.tmp", out / "data" / ".x.abc.tmp",
               out / ".last.pt.abc123.tmp"]  # the old pattern: not provably invdiff's
    for p in foreign:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("keep me")
    assert main(["simulate", str(cfg_path), "--out", str(out), "-q"]) == 0
    assert (out / "data" / "train.npz").is_file()
    assert all(p.read_text() == "keep me" for p in foreign)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_lock_removes_only_stale_invdiff_temporaries(tmp_path):
    """Of invdiff's temporaries, those of a dead writer on this host go; a live writer's
    (another process, in flight) stays, and so does anything behind a symbolic link."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    outside = tmp_path / "outside"
    outside.mkdir()
    run = tmp_path / "run"
    try:
        dead, live = _dead_pid(), sleeper.pid
        stale = [run / f".last.pt.invdiff-{host_tag()}-{dead}-ab12.tmp",
                 run / "data" / "train.npz.parts" / f".chunk_000001.npz.invdiff-{host_tag()}-"
                                                   f"{dead}-x9.tmp"]
        in_flight = run / "checkpoints" / f".final.pt.invdiff-{host_tag()}-{live}-zz.tmp"
        behind_link = outside / f".f.invdiff-{host_tag()}-{dead}-q.tmp"
        for p in [*stale, in_flight, behind_link]:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"partial")
        (run / "linked").symlink_to(outside, target_is_directory=True)
        with stage_lock(run):
            assert not any(p.exists() for p in stale)
            assert in_flight.exists() and behind_link.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    with stage_lock(run):  # its writer has died since: now it goes
        assert not in_flight.exists()


def test_a_killed_writers_temporary_is_removed_and_a_live_ones_kept(tmp_path):
    code = textwrap.dedent(f"""
        import time
        from invdiff.io import atomic_open
        with atomic_open({str(tmp_path / "big.npz")!r}) as fh:
            fh.write(b"half written")
            fh.flush()
            print("writing", flush=True)
            time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "writing"
        [tmp] = [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]
        with stage_lock(tmp_path):  # another process writing its own file here: kept
            assert tmp.exists()
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    with stage_lock(tmp_path):
        assert not tmp.exists() and not (tmp_path / "big.npz").exists()


# -- 3. the lock file is never written through a link -----------------------------------------
def test_a_planted_lock_symlink_is_refused_and_its_target_untouched(tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).symlink_to(victim)
    with pytest.raises(InvdiffError, match="symbolic link") as err:
        with stage_lock(run):
            pass
    assert str(run / LOCK_NAME) in str(err.value) and "rm " in str(err.value)
    assert victim.read_text() == "precious"
    dangling = tmp_path / "run2"
    dangling.mkdir()
    (dangling / LOCK_NAME).symlink_to(tmp_path / "would-be-created")
    with pytest.raises(InvdiffError, match="symbolic link"):
        with stage_lock(dangling):
            pass
    assert not (tmp_path / "would-be-created").exists()


def test_a_lock_file_with_another_name_is_refused(tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    os.link(victim, run / LOCK_NAME)
    with pytest.raises(InvdiffError, match="hard links"):
        with stage_lock(run):
            pass
    assert victim.read_text() == "precious"


def test_the_cli_reports_a_planted_lock_link_in_one_line(cfg_path, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).symlink_to(tmp_path / "elsewhere")
    assert main(["simulate", str(cfg_path), "-q"]) == 2
    err = capsys.readouterr().err
    assert "symbolic link" in err and "Traceback" not in err
    assert not (out / "data").exists() and not (tmp_path / "elsewhere").exists()


# -- 4. seeds are checked when the config loads ----------------------------------------------
@pytest.mark.parametrize("field", ["data.seed", "training.seed", "sampling.seed"])
def test_a_negative_seed_is_refused_at_load_naming_the_field(cfg_path, tmp_path, capsys,
                                                            field):
    out = tmp_path / "run"
    for stage in ("simulate", "train", "run"):
        assert main([stage, str(cfg_path), "-q", "--set", f"{field}=-1"]) == 2
        err = capsys.readouterr().err
        assert f"{field}: Input should be greater than or equal to 0" in err
        assert not out.exists()  # nothing written
    with pytest.raises(ConfigError, match=f"{field}: Input should be less than or equal"):
        load_config(cfg_path, overrides=[f"{field}={2**40}"])


def test_training_config_and_presets_refuse_negative_seeds(tmp_path):
    from pydantic import ValidationError

    from invdiff.study.preset import load_preset
    from invdiff.training import TrainingConfig

    with pytest.raises(ValidationError, match="seed"):
        TrainingConfig(seed=-3)
    assert TrainingConfig(seed=0).seed == 0
    with pytest.raises(ConfigError, match="seed: Input should be greater than or equal to 0"):
        load_preset("smoke", ["seed=-1"])


def test_direct_simulate_refuses_a_negative_seed(prob, tmp_path):
    with pytest.raises(ConfigError, match="seed must be a non-negative integer, got -2"):
        invdiff.simulate(prob.prior, prob.forward_model, prob.noise_model, n=8, seed=-2,
                         path=tmp_path / "d.npz", progress=False)
    assert list(tmp_path.iterdir()) == []


# -- 5. Dask over TLS ------------------------------------------------------------------------
BASE = {"problem": {k: {"name": "x"} for k in ("prior", "forward_model", "noise_model")},
        "net": {"name": "x"}}


def test_security_config_fields():
    sec = {"ca_file": "ca.pem", "cert": "me.pem", "key": "me.key"}
    cfg = parse_config({**BASE, "data": {"executor": "dask", "scheduler": "tls://h:8786",
                                         "security": sec}})
    assert cfg.data.security.ca_file == "ca.pem"
    assert "security" not in cfg.model_dump()["data"]  # no result depends on it
    with pytest.raises(ConfigError, match="set data.executor = 'dask'"):
        parse_config({**BASE, "data": {"security": sec}})
    with pytest.raises(ConfigError, match="speaks TLS: set data.security"):
        parse_config({**BASE, "data": {"executor": "dask", "scheduler": "tls://h:8786"}})
    with pytest.raises(ConfigError, match="tls://"):
        parse_config({**BASE, "data": {"executor": "dask", "scheduler": "tcp://h:8786",
                                       "security": sec}})


def test_missing_tls_files_are_named(tmp_path):
    pytest.importorskip("dask.distributed")
    from invdiff.data.dask_executor import make_security

    with pytest.raises(ConfigError, match="data.security.ca_file: no file at"):
        make_security({"ca_file": str(tmp_path / "nope.pem"), "cert": str(tmp_path / "x")})


def test_a_plain_tcp_scheduler_elsewhere_is_warned_about(prob, monkeypatch):
    pytest.importorskip("dask.distributed")
    monkeypatch.setenv("INVDIFF_DASK_TIMEOUT", "1")
    address = "tcp://192.0.2.1:8786"  # TEST-NET-1: never answers
    with pytest.warns(UserWarning, match="trusted network.*tls://"):
        with pytest.raises(ConfigError, match="cannot reach"):
            invdiff.simulate(prob.prior, prob.forward_model, prob.noise_model, n=8,
                             executor="dask", scheduler=address, progress=False)


def _self_signed(folder: Path) -> dict[str, str]:
    """A self-signed certificate (its own CA) and key, made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=invdiff-test",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    return {"ca_file": str(cert), "cert": str(cert), "key": str(key)}


def test_a_tls_local_cluster_simulates_the_local_data(prob, tmp_path, monkeypatch):
    """One worker on a LocalCluster that speaks TLS (a self-signed certificate): the same
    bytes as the local executor."""
    pytest.importorskip("dask.distributed")
    from invdiff.data import dask_executor

    sec = _self_signed(tmp_path)
    addresses = []
    real = dask_executor.client_for

    def recording(scheduler, workers, security=None):
        client, cluster = real(scheduler, workers, security)
        addresses.append(client.scheduler.address)
        return client, cluster

    monkeypatch.setattr(dask_executor, "client_for", recording)
    kw = dict(n=16, chunk_size=8, seed=3, progress=False)
    local = invdiff.simulate(prob.prior, prob.forward_model, prob.noise_model, **kw)
    tls = invdiff.simulate(prob.prior, prob.forward_model, prob.noise_model, workers=1,
                           executor="dask", security=sec, **kw)
    assert addresses and addresses[0].startswith("tls://")
    for k in ("x", "y", "y_clean"):
        assert torch.equal(getattr(tls, k), getattr(local, k))


# -- 6. memory checked before work -----------------------------------------------------------
def test_available_memory_is_read():
    avail = resources.available_memory()
    assert avail is None or avail > 0
    assert resources.available_memory("cuda:7") is None or torch.cuda.is_available()
    assert resources.format_bytes(300 * 2**30) == "300 GiB"
    assert resources.format_bytes(1.5 * 2**20) == "1.5 MiB"


def test_a_cuda_device_is_checked_against_its_free_memory(monkeypatch):
    """The GPU branch without a GPU: torch.cuda's answers stand in for a device's."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (3 * 2**30, 80 * 2**30))
    assert resources.available_memory("cuda:0") == 3 * 2**30
    with pytest.raises(ConfigError, match="but 3 GiB are available on cuda:0"):
        resources.check_memory(5 * 2**30, setting="sampling.n_samples", value=9,
                               what="chains", device="cuda:0")


@pytest.fixture
def little_memory(monkeypatch):
    """A machine with 4 MiB available; simulating a chunk is an error (a tripwire: a size
    that is not refused up front fails the test at once instead of filling the memory)."""
    from invdiff.data import simulation

    def tripwire(args):
        raise AssertionError("work started although the sizes cannot fit")

    monkeypatch.delenv(resources.SWITCH, raising=False)
    monkeypatch.setattr(resources, "available_memory", lambda device=None: 4 * 2**20)
    monkeypatch.setattr(simulation, "run_chunk", tripwire)


def test_simulate_refuses_a_data_size_that_cannot_fit(cfg_path, tmp_path, little_memory,
                                                      capsys):
    assert main(["simulate", str(cfg_path), "-q", "--set", "data.n_train=10000000"]) == 2
    err = capsys.readouterr().err
    assert "data.n_train = 10000000 needs about" in err and "but 4 MiB are available" in err
    assert "lower data.n_train" in err
    assert not (tmp_path / "run" / "data").exists()  # nothing simulated


def test_train_refuses_before_simulating(cfg_path, tmp_path, monkeypatch):
    cfg = load_config(cfg_path, overrides=["training.batch_size=500"])
    with pytest.raises(ConfigError, match="training.batch_size = 500 exceeds data.n_train"):
        pipeline.run_train(cfg, progress=False)
    assert not (tmp_path / "run" / "data").exists()
    cfg = load_config(cfg_path)
    pipeline.run_simulate(cfg, progress=False)
    monkeypatch.setattr(resources, "available_memory", lambda device=None: 2**10)
    with pytest.raises(ConfigError, match="data.n_train = 96 needs about .* training pairs"):
        pipeline.run_train(cfg, progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_sample_refuses_chains_that_cannot_fit(cfg_path, tmp_path, little_memory):
    cfg = load_config(cfg_path, overrides=["sampling.n_samples=1000000"])
    with pytest.raises(ConfigError, match="sampling.n_samples = 1000000 needs about"):
        pipeline.run_sample(cfg, progress=False)
    assert not (tmp_path / "run" / "data").exists()


def test_sample_posterior_refuses_chains_that_cannot_fit(little_memory):
    from invdiff.reference import make_problem

    p = make_problem(n=4)
    y = torch.zeros(2, *p.forward_model.output_shape(p.prior.shape))
    score = lambda x, y, sigma: -x  # noqa: E731
    # 10^12 chains could never be allocated: without the check this fails at once too
    with pytest.raises(ConfigError, match=r"n = 1000000000000 needs about .* lower n"):
        invdiff.sample_posterior(score, y, sampler="annealed-langevin", n=10**12,
                                 sigmas=[1.0, 0.1], x_shape=p.prior.shape, progress=False)


def test_the_memory_check_can_be_switched_off(monkeypatch):
    monkeypatch.setattr(resources, "available_memory", lambda device=None: 1)
    with pytest.raises(ConfigError, match="INVDIFF_MEMORY_CHECK=0"):
        resources.check_memory(10, setting="n", value=5, what="things")
    monkeypatch.setenv(resources.SWITCH, "0")
    resources.check_memory(10, setting="n", value=5, what="things")


def test_direct_simulate_refuses_too_many_pairs(prob, tmp_path, little_memory):
    with pytest.raises(ConfigError, match="n = 100000000 needs about"):
        invdiff.simulate(prob.prior, prob.forward_model, prob.noise_model, n=10**8,
                         path=tmp_path / "d.npz", progress=False)
    assert list(tmp_path.iterdir()) == []


# -- 7. simulation failures name the chunk, its seed and the component -----------------------
class FailOnChunk:
    """A forward model that raises on the chunk whose first x is ``marker`` (the chunk is
    recognised by its content, as a worker process sees only x). With ``wait_for``, it first
    waits (up to 20 s) until those files exist: the other chunks have finished and been
    written, so chunks finish out of order."""

    def __init__(self, fwd, marker, wait_for=(), kill=False):
        self.fwd, self.marker, self.wait_for, self.kill = fwd, marker, list(wait_for), kill

    def output_shape(self, x_shape):
        return self.fwd.output_shape(x_shape)

    def __call__(self, x):
        if torch.equal(x[0], self.marker):
            deadline = time.monotonic() + 20
            while not all(Path(f).exists() for f in self.wait_for):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            if self.kill:
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("mesh did not converge")
        return self.fwd(x)


def _first_x(prob, seed, index, size):
    g = torch.Generator().manual_seed(chunk_seed(seed, index))
    return prob.prior.sample(size, generator=g)[0]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_forward_model_names_chunk_seed_and_class_and_resume_works(
        prob, tmp_path, workers):
    kw = dict(n=32, chunk_size=8, seed=5, progress=False, spec="same")
    full = invdiff.simulate(prob.prior, prob.forward_model, prob.noise_model, **kw)
    bad = FailOnChunk(prob.forward_model, _first_x(prob, 5, 2, 8))
    path = tmp_path / "d.npz"
    with pytest.raises(DataError) as err:
        invdiff.simulate(prob.prior, bad, prob.noise_model, workers=workers, path=path, **kw)
    msg = str(err.value)
    assert f"chunk 2 (8 pairs, seed {chunk_seed(5, 2)})" in msg
    assert "forward model FailOnChunk raised RuntimeError: mesh did not converge" in msg
    parts = tmp_path / "d.npz.parts"
    kept = sorted(p.name for p in parts.glob("chunk_*.npz"))
    assert "chunk_000002.npz" not in kept and "chunk_000000.npz" in kept
    ds = invdiff.simulate(prob.prior, prob.forward_model, prob.noise_model, workers=workers,
                          path=path, **kw)
    assert torch.equal(ds.x, full.x) and torch.equal(ds.y, full.y)


@pytest.mark.slow
def test_a_failing_forward_model_on_dask_is_named_and_finished_chunks_are_kept(prob, tmp_path):
    pytest.importorskip("dask.distributed")
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests
    kw = dict(n=24, chunk_size=8, seed=5, progress=False, spec="same")
    parts = tmp_path / "d.npz.parts"
    bad = FailOnChunk(prob.forward_model, _first_x(prob, 5, 2, 8),
                      wait_for=[parts / "chunk_000000.npz", parts / "chunk_000001.npz"])
    with pytest.raises(DataError, match=f"chunk 2 .*seed {chunk_seed(5, 2)}.*FailOnChunk"):
        invdiff.simulate(prob.prior, bad, prob.noise_model, workers=2, executor="dask",
                         path=tmp_path / "d.npz", **kw)
    assert (parts / "chunk_000000.npz").exists() and (parts / "chunk_000001.npz").exists()


def test_chunks_finished_out_of_order_are_all_kept(prob, tmp_path):
    """Chunk 0 fails only after chunks 1-3 finished (on the other worker) and were written:
    every one of them is on disk, and a rerun simulates chunk 0 alone."""
    kw = dict(n=32, chunk_size=8, seed=7, progress=False, spec="same")
    parts = tmp_path / "d.npz.parts"
    others = [parts / f"chunk_{i:06d}.npz" for i in (1, 2, 3)]
    bad = FailOnChunk(prob.forward_model, _first_x(prob, 7, 0, 8), wait_for=others)
    with pytest.raises(DataError, match="chunk 0 "):
        invdiff.simulate(prob.prior, bad, prob.noise_model, workers=2,
                         path=tmp_path / "d.npz", **kw)
    assert all(f.exists() for f in others) and not (parts / "chunk_000000.npz").exists()


def test_a_killed_worker_is_named_with_what_to_lower(prob, tmp_path):
    kw = dict(n=32, chunk_size=8, seed=9, progress=False, spec="same")
    parts = tmp_path / "d.npz.parts"
    bad = FailOnChunk(prob.forward_model, _first_x(prob, 9, 3, 8), kill=True,
                      wait_for=[parts / "chunk_000000.npz"])
    with pytest.raises(DataError) as err:
        invdiff.simulate(prob.prior, bad, prob.noise_model, workers=2,
                         path=tmp_path / "d.npz", **kw)
    msg = str(err.value)
    assert "a simulation worker died (killed for memory?)" in msg
    assert f"3 (seed {chunk_seed(9, 3)})" in msg  # the chunk it was simulating is named
    assert "data.workers" in msg and "data.chunk_size" in msg
    assert (parts / "chunk_000000.npz").exists()


# -- 8. checksums on everything read back ----------------------------------------------------
def test_a_dataset_or_chunk_without_checksum_warns_naming_the_file(prob, tmp_path):
    from invdiff.data import load_dataset

    ds = invdiff.simulate(prob.prior, prob.forward_model, prob.noise_model, n=16,
                          chunk_size=8, seed=1, progress=False, path=tmp_path / "d.npz")
    with np.load(tmp_path / "d.npz") as f:
        arrays = {k: f[k] for k in f.files if k != "sha256"}
    np.savez(tmp_path / "old.npz", **arrays)
    with pytest.warns(UserWarning, match=r"old.npz carries no checksum"):
        old = load_dataset(tmp_path / "old.npz")
    assert torch.equal(old.x, ds.x)
    # a chunk of an interrupted run without checksum: named too
    parts = tmp_path / "e.npz.parts"
    parts.mkdir()
    np.savez(parts / "chunk_000000.npz", x=ds.x[:8].numpy(), y=ds.y[:8].numpy(),
             y_clean=ds.y_clean[:8].numpy(), dropped=np.array(0))
    with pytest.warns(UserWarning, match=r"chunk_000000.npz carries no checksum"):
        invdiff.simulate(prob.prior, prob.forward_model, prob.noise_model, n=16,
                         chunk_size=8, seed=1, progress=False, path=tmp_path / "e.npz")


def test_posterior_files_carry_a_checksum(tmp_path):
    from invdiff.sampling.posterior import Posterior

    post = Posterior.from_samples(torch.randn(2, 5, 1, 3, 3), nfe=7, seconds=0.5,
                                  info={"a": 1})
    path = post.save(tmp_path / "posterior.npz")
    back = Posterior.load(path)
    assert torch.equal(back.samples, post.samples) and back.nfe == 7
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    assert "sha256" in arrays
    arrays["mean"][0, 0, 1, 1] += 1.0  # a valid npz with the old checksum
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=r"posterior.npz is damaged.*sample again"):
        Posterior.load(path)
    del arrays["sha256"]
    np.savez(path, **arrays)
    with pytest.warns(UserWarning, match="posterior.npz carries no checksum"):
        Posterior.load(path)


def test_cached_arrays_carry_a_checksum_and_a_damaged_cache_is_recomputed(tmp_path):
    path = tmp_path / "chain.npz"
    calls = []

    def compute():
        calls.append(1)
        return {"a": np.arange(4.0)}

    cached_arrays(path, compute)
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    assert "sha256" in arrays
    arrays["a"][2] = 99.0  # damaged, still a valid npz
    np.savez(path, **arrays)
    with pytest.warns(UserWarning, match="chain.npz are damaged.*computing them again"):
        out = cached_arrays(path, compute)
    assert len(calls) == 2 and out["a"][2] == 2.0
    np.savez(path, a=np.arange(4.0))  # an older cache without checksum: used, with a warning
    with pytest.warns(UserWarning, match="carry no checksum"):
        cached_arrays(path, compute)
    assert len(calls) == 2


def test_study_cells_carry_a_checksum_and_a_damaged_cell_is_recomputed(tmp_path):
    from invdiff.study.runner import read_cell, write_cell

    path = tmp_path / "cell.json"
    metrics, calib = {"rmse_truth": 0.125, "nfe": 30, "odd": float("nan")}, {"ranks": [1, 2]}
    write_cell(path, metrics, calib)
    data = json.loads(path.read_text())
    assert data["checksum"].startswith("sha256:")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = read_cell(path)
    assert got[0]["rmse_truth"] == 0.125 and got[1] == calib
    path.write_text(path.read_text().replace("0.125", "0.126"))
    with pytest.warns(UserWarning, match="cell.json is damaged.*computing the cell again"):
        assert read_cell(path) is None
    path.write_text("{not json")
    with pytest.warns(UserWarning, match="damaged"):
        assert read_cell(path) is None
    path.write_text(json.dumps([metrics, calib]))  # a cell of an older invdiff
    with pytest.warns(UserWarning, match="carries no checksum"):
        assert read_cell(path)[0]["nfe"] == 30
    assert read_cell(tmp_path / "none.json") is None


# -- 9. extends loops, however the path is spelt ---------------------------------------------
def test_a_preset_extending_itself_by_another_spelling_is_a_loop_error(tmp_path):
    from invdiff.study.preset import read_preset_data

    d = tmp_path / "dir"
    d.mkdir()
    (d / "a.toml").write_text('extends = "../dir/a.toml"\nname = "a"\n')
    with pytest.raises(ConfigError, match=r"extends loop: .*a.toml -> .*a.toml"):
        read_preset_data(d / "a.toml")
    (d / "b.toml").write_text('extends = "../dir/c.toml"\nname = "b"\n')
    (d / "c.toml").write_text('extends = "./b.toml"\nname = "c"\n')
    with pytest.raises(ConfigError, match=r"extends loop: .*b.toml -> .*c.toml -> .*b.toml"):
        read_preset_data(d / "b.toml")


def test_a_config_extending_itself_by_another_spelling_is_a_loop_error(tmp_path):
    d = tmp_path / "dir"
    d.mkdir()
    (d / "a.toml").write_text('extends = "../dir/a.toml"\nname = "a"\n')
    with pytest.raises(ConfigError, match=r"extends loop: .*a.toml -> .*a.toml"):
        read_config_data(d / "a.toml")

