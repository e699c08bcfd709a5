"""No silent wrong results: stale data, concurrent runs, stray temporaries."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from invdiff.cli import main
from invdiff.errors import DataError, FolderInUseError
from invdiff.experiment import run as pipeline
from invdiff.experiment.config import load_config
from invdiff.experiment.lock import LOCK_NAME, stage_lock
from tests.test_pipeline import TINY


@pytest.fixture
def cfg_path(tmp_path):
    p = tmp_path / "tiny.toml"
    p.write_text(TINY.format(out=tmp_path / "run"))
    return p




@pytest.mark.parametrize("override, named", [
    ("problem.prior.params.length_scale=0.3", "problem.prior.params.length_scale"),
    ("data.n_train=64", "n: data have 128, config has 96"),
    ("data.seed=5", "seed"),
])
def test_train_and_sample_refuse_data_of_other_settings(cfg_path, override, named):
    pipeline.run_train(load_config(cfg_path), progress=False)  # simulates, then trains
    cfg = load_config(cfg_path, overrides=[override])
    for stage in (pipeline.run_train, pipeline.run_sample):
        with pytest.raises(DataError, match="simulated with other settings") as err:
            stage(cfg, progress=False)
        assert named in str(err.value) and "--out" in str(err.value)


def test_cli_names_the_stale_data_and_the_fix(cfg_path, capsys):
    assert main(["simulate", str(cfg_path), "-q"]) == 0
    code = main(["train", str(cfg_path), "-q", "--set", "problem.prior.params.length_scale=0.3"])
    err = capsys.readouterr().err
    assert code == 2 and "invdiff train: error:" in err and "rerun `invdiff simulate" in err


def _hold_lock_in_child(folder) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        import sys, time
        from invdiff.experiment.lock import stage_lock
        with stage_lock({str(folder)!r}):
            print("held", flush=True)
            time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_second_run_on_a_folder_in_use_is_refused_and_a_killed_holder_is_taken_over(
        cfg_path, tmp_path):
    out = tmp_path / "run"
    child = _hold_lock_in_child(out)
    try:
        with pytest.raises(FolderInUseError) as err:
            pipeline.run_simulate(load_config(cfg_path), progress=False)
        assert str(out) in str(err.value) and f"pid {child.pid}" in str(err.value)
        assert not (out / "data").exists()  # nothing was written
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    pipeline.run_simulate(load_config(cfg_path), progress=False)  # the stale lock is free
    assert (out / "data" / "train.npz").exists()


def test_nested_stages_share_the_lock(tmp_path):
    with stage_lock(tmp_path), stage_lock(tmp_path / "."):
        assert (tmp_path / LOCK_NAME).exists()
    with stage_lock(tmp_path):  # released after the outer block
        pass


def test_the_lock_removes_temporaries_of_killed_writes(tmp_path):
    # temporaries are named after their writer (.NAME.invdiff-HOST-PID-RANDOM.tmp), and only
    # those of a dead writer are removed: other hidden .tmp files are another tool's (the
    # former ".NAME.RANDOM.tmp" pattern is kept here on purpose, see tests/test_safety.py)
    from invdiff.io import host_tag

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # its pid is now a dead writer's
    tag = f"invdiff-{host_tag()}-{child.pid}"
    stray = [tmp_path / f".last.pt.{tag}-abc123.tmp",
             tmp_path / "data" / f".train.npz.{tag}-x9.tmp"]
    keep = [tmp_path / "data" / "notes.tmp", tmp_path / "data" / ".train.npz.x9.tmp"]
    for p in [*stray, *keep]:
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"")
    with stage_lock(tmp_path):
        assert not any(p.exists() for p in stray) and all(p.exists() for p in keep)


def test_out_under_a_file_is_a_one_line_error(cfg_path, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code = main(["simulate", str(cfg_path), "-q", "--out", str(blocker / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("invdiff simulate: error: ") and str(blocker) in err and "--out" in err


@pytest.mark.parametrize("code, fix", [(28, "free disk space"), (30, "you can write to"),
                                       (13, "you can write to")])
def test_disk_full_and_read_only_are_one_line_errors(cfg_path, capsys, monkeypatch, code, fix):
    from invdiff.experiment.run import Experiment

    def failing(exp):
        raise OSError(code, os.strerror(code), str(exp.paths.train))

    monkeypatch.setattr(Experiment, "train", failing)
    assert main(["train", str(cfg_path), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("invdiff train: error: ") and "train.npz" in err and fix in err
    assert os.strerror(code) in err and err.count("\n") == 1


def _children(pid: int) -> list[int]:
    kids = []
    for stat in os.listdir("/proc"):
        if stat.isdigit():
            try:
                with open(f"/proc/{stat}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                kids.append(int(stat))
    return kids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and prctl")
def test_simulation_workers_end_when_the_parent_is_killed(tmp_path):
    import time

    code = textwrap.dedent(f"""
        import time, invdiff
        from invdiff.reference import make_problem

        class Slow:
            def __init__(self, inner):
                self.inner = inner
            def output_shape(self, s):
                return self.inner.output_shape(s)
            def __call__(self, x):
                time.sleep(30)
                return self.inner(x)

        p = make_problem(n=4)
        print("start", flush=True)
        invdiff.simulate(p.prior, Slow(p.forward_model), p.noise_model, n=8, chunk_size=2,
                         workers=2, path={str(tmp_path / "d.npz")!r}, progress=False)
    """)
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert parent.stdout.readline().strip() == "start"
    deadline = time.monotonic() + 20
    while len(workers := _children(parent.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(workers) == 2, workers
    time.sleep(0.5)  # let the workers run their initializer
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = [w for w in workers if _alive(w)]
    for w in alive:  # clean up before failing
        os.kill(w, signal.SIGKILL)
    assert not alive, f"orphan workers {alive} outlived their killed parent"


def test_resume_refuses_chunks_of_other_component_settings_without_a_spec(tmp_path,
                                                                          monkeypatch):
    """A simulation interrupted with one prior and resumed with another must not mix them,
    even through the Python API without a ``spec``."""
    import invdiff
    from invdiff.data import simulation
    from invdiff.reference import make_problem

    a, b = make_problem(n=6, length_scale=0.2), make_problem(n=6, length_scale=0.5)
    path = tmp_path / "d.npz"

    def interrupted(*args):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:  # every chunk is written, then the run is killed
        m.setattr(simulation, "_merge", interrupted)
        with pytest.raises(KeyboardInterrupt):
            invdiff.simulate(a.prior, a.forward_model, a.noise_model, n=32, chunk_size=8,
                             path=path, progress=False)
    with pytest.raises(DataError, match="chunks of a run with other settings"):
        invdiff.simulate(b.prior, b.forward_model, b.noise_model, n=32, chunk_size=8,
                         path=path, progress=False)
    done = invdiff.simulate(a.prior, a.forward_model, a.noise_model, n=32, chunk_size=8,
                            path=path, progress=False)  # the original settings resume
    fresh = invdiff.simulate(a.prior, a.forward_model, a.noise_model, n=32, chunk_size=8,
                             progress=False)
    assert torch.equal(done.x, fresh.x)


def test_ranks_of_a_distributed_job_share_rank_zeros_lock(tmp_path, monkeypatch):
    child = _hold_lock_in_child(tmp_path)  # stands for rank 0
    try:
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", "1")
        with stage_lock(tmp_path):
            pass
        monkeypatch.setenv("RANK", "0")
        with pytest.raises(FolderInUseError):
            with stage_lock(tmp_path):
                pass
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
