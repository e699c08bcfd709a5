"""Multi-process training (DDP on CPU with gloo): the same weights as one process, each rank
computing only its shard, resume across world sizes, and the refusals (batch that does not
split, ranks with different configs, a crashed rank).

The runs under ``torch.distributed.run`` start two Python processes (about 10-15 s on a
loaded 2-core machine), so they carry the ``slow`` marker; the checks that need no second
process run by default.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from invdiff.errors import ConfigError
from invdiff.training import distributed
from invdiff.training.checkpoint import load_checkpoint
from tests.dist_train import PART, STEPS, make

SCRIPT = Path(__file__).with_name("dist_train.py")
#: Weights of the 2-rank run against one process: the ranks' shard means are averaged by DDP
#: where one process takes the mean over the whole batch, so the float32 sums are taken in
#: another order (a few ulp per step, ~1e-7 on weights of size ~0.5); 12 Adam steps leave the
#: difference at the 1e-7 level (measured 6e-8). 1e-6 leaves a margin and would still catch a
#: wrong shard, a missing average (gradients twice as large) or another batch (all ~1e-3).
ATOL = 1e-6


def torchrun(mode: str, out: Path, nproc: int = 2, timeout: float = 240
             ) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", distributed.TIMEOUT_ENV: "60"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", str(SCRIPT), mode, str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def load(path: Path) -> dict:
    return torch.load(path, weights_only=False)


def assert_close(a: dict, b: dict, atol: float) -> None:
    for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True):
        assert ka == kb
        torch.testing.assert_close(va, vb, atol=atol, rtol=0, msg=ka)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("two_ranks")
    res = torchrun("train", out)
    assert res.returncode == 0, res.stdout + res.stderr
    return out


@pytest.fixture(scope="module")
def one_process():
    trainer = make(None)
    trainer.fit()
    return trainer


# -- two processes -----------------------------------------------------------------------------
@pytest.mark.slow
def test_two_ranks_give_the_one_process_weights(two_ranks, one_process):
    r0, r1 = load(two_ranks / "rank0_full.pt"), load(two_ranks / "rank1_full.pt")
    for r in (r0, r1):
        assert_close(r["model"], one_process.net.state_dict(), ATOL)
        assert_close(r["ema"], one_process.ema.state_dict(), ATOL)
    assert_close(r0["model"], r1["model"], 0.0)  # DDP keeps the ranks bit-identical
    keys = ("loss", "val_loss", "val_loss_ema")  # validation is shared out over the ranks
    flat = lambda hist: [h[k] for h in hist for k in keys]
    assert flat(r0["history"]) == pytest.approx(flat(one_process.history), rel=1e-6)


@pytest.mark.slow
def test_each_rank_forwards_only_its_half_of_each_global_batch(two_ranks, one_process):
    r0, r1 = load(two_ranks / "rank0_full.pt"), load(two_ranks / "rank1_full.pt")
    glob = one_process.net.seen  # the global batches of one process, step by step
    assert len(glob) == len(r0["seen"]) == len(r1["seen"]) == STEPS
    half = glob[0].shape[0] // 2
    for g, a, b in zip(glob, r0["seen"], r1["seen"], strict=True):
        assert a.shape[0] == b.shape[0] == half
        assert torch.equal(a, g[:half]) and torch.equal(b, g[half:])


@pytest.mark.slow
def test_checkpoints_record_the_world_size(two_ranks):
    ckpt = load_checkpoint(two_ranks / "full" / "final.pt")
    assert ckpt["training"]["world_size"] == 2 and ckpt["training"]["rank_batch"] == 8
    assert ckpt["step"] == STEPS


@pytest.mark.slow
def test_resume_with_two_ranks_is_bit_identical(two_ranks):
    """Interrupted at step 5 and resumed by two ranks: the same arithmetic as the run that
    was never interrupted, so the same bits."""
    for rank in (0, 1):
        full = load(two_ranks / f"rank{rank}_full.pt")
        resumed = load(two_ranks / f"rank{rank}_resumed.pt")
        assert_close(resumed["model"], full["model"], 0.0)
        assert_close(resumed["ema"], full["ema"], 0.0)
        strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]
        assert strip(resumed["history"]) == strip(full["history"])


@pytest.mark.slow
def test_resume_of_a_two_rank_run_by_one_process(two_ranks, tmp_path):
    """The 2-rank checkpoint of step 5 resumed by one process: equal to the uninterrupted
    2-rank run up to the float rounding of the 7 single-process steps (ATOL, as above)."""
    shutil.copytree(two_ranks / "part5", tmp_path / "ckpt")
    assert load_checkpoint(tmp_path / "ckpt" / "last.pt")["step"] == PART
    resumed = make(tmp_path / "ckpt")
    resumed.fit(resume=True)
    assert resumed.step == STEPS and len(resumed.net.seen) == STEPS - PART
    full = load(two_ranks / "rank0_full.pt")
    assert_close(resumed.net.state_dict(), full["model"], ATOL)
    assert_close(resumed.ema.state_dict(), full["ema"], ATOL)
    assert load_checkpoint(tmp_path / "ckpt" / "final.pt")["training"]["world_size"] == 1


@pytest.mark.slow
def test_ranks_with_different_configs_refuse_to_start(tmp_path):
    res = torchrun("mismatch", tmp_path)
    assert res.returncode != 0
    assert "different configs" in res.stderr and "ranks [0]" in res.stderr


@pytest.mark.slow
def test_a_crashed_rank_stops_the_others(tmp_path):
    res = torchrun("crash", tmp_path, timeout=120)  # a hang would exceed the timeout
    assert res.returncode != 0
    assert "simulated crash of this rank" in res.stderr
    assert "rank: 1" in res.stderr  # torchrun's summary names the rank that failed first


@pytest.mark.slow
def test_a_silent_rank_makes_the_others_fail_after_the_timeout(tmp_path):
    """Rank 1 stops answering (alive, no crash): rank 0 fails in its next collective after
    INVDIFF_DIST_TIMEOUT (5 s here) instead of waiting, and torchrun then stops rank 1."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", distributed.TIMEOUT_ENV: "5"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node=2", str(SCRIPT), "hang", str(tmp_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=200, env=env)
    assert res.returncode != 0  # rank 1 alone would sleep 600 s: the timeout ended it
    assert "Timed out waiting 5000ms" in res.stderr


# -- one process -------------------------------------------------------------------------------
def test_single_process_touches_no_process_group(one_process):
    assert one_process.dist == distributed.DistContext(0, 1, 0)
    assert not torch.distributed.is_initialized()
    assert one_process.rank_batch == one_process.config.batch_size


def test_world_size_must_divide_the_global_batch(monkeypatch):
    monkeypatch.setattr(distributed, "setup", lambda device: distributed.DistContext(0, 3, 0))
    with pytest.raises(ConfigError, match="batch_size 16 .* over 3 ranks; use a multiple of 3"):
        make(None)


def test_check_same_names_the_ranks_that_differ(monkeypatch):
    monkeypatch.setattr(distributed, "context", lambda: distributed.DistContext(0, 3, 0))
    same = distributed.digest({"a": 1})
    monkeypatch.setattr(distributed, "all_gather",
                        lambda obj: [obj, same, distributed.digest({"a": 2})])
    with pytest.raises(ConfigError, match=r"different configs .*ranks \[0, 1\].*ranks \[2\]"):
        distributed.check_same({"a": 1})
    monkeypatch.setattr(distributed, "all_gather", lambda obj: [obj, obj, obj])
    distributed.check_same({"a": 1})


def test_context_reads_torchrun_variables(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    ctx = distributed.context()
    assert ctx == distributed.DistContext(2, 4, 0) and ctx.active and not ctx.is_main
    assert list(distributed.shard(10, ctx)) == [2, 6]
    assert distributed.device_for(torch.device("cuda"), ctx) == torch.device("cuda", 0)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ConfigError, match="RANK 4"):
        distributed.context()
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "soon")
    with pytest.raises(ConfigError, match="INVDIFF_DIST_TIMEOUT"):
        distributed.timeout()


# -- the command line under torchrun -----------------------------------------------------------
@pytest.mark.slow
def test_cli_trains_and_samples_with_two_ranks(tmp_path, fresh_registry):
    """`invdiff train/sample CONFIG --nproc 2`: checkpoints and training.json record two
    ranks, and the sampled posteriors (3 measurements over 2 ranks: shares of 2 and 1) equal
    the single-process ones sample for sample (chains are seeded by the measurement index)."""
    import numpy as np

    from invdiff.experiment import run as pipeline
    from invdiff.experiment.config import load_config
    from tests.test_pipeline import TINY

    path = tmp_path / "tiny.toml"
    path.write_text(TINY.format(out=tmp_path / "run").replace("n_test = 2", "n_test = 3"))
    cfg = load_config(path)
    pipeline.run_simulate(cfg, progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1", distributed.TIMEOUT_ENV: "60"}
    for stage in ("train", "sample"):
        res = subprocess.run([sys.executable, "-m", "invdiff.cli", stage, str(path), "-q",
                              "--nproc", "2"], capture_output=True, text=True, timeout=300,
                             env=env)
        assert res.returncode == 0, res.stdout + res.stderr
        assert res.stdout.count('"world_size": 2') == 1  # one report, from rank 0
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "final.pt")
    assert ckpt["training"]["world_size"] == 2 and ckpt["training"]["rank_batch"] == 8
    import json

    summary = json.loads((tmp_path / "run" / "training.json").read_text())
    assert summary["world_size"] == 2 and summary["rank_batch"] == 8
    with np.load(tmp_path / "run" / "posterior.npz") as f:
        two = f["samples"]
    metrics = pipeline.run_sample(cfg, progress=False)
    assert metrics["world_size"] == 1
    with np.load(tmp_path / "run" / "posterior.npz") as f:
        one = f["samples"]
    assert two.shape == one.shape and two.shape[0] == 3
    assert np.array_equal(two, one)


# -- sampling seeded by the measurement index ---------------------------------------------------
def test_each_measurement_has_its_own_chains_whatever_the_sharing():
    """Three measurements sampled together, and shared out as two ranks would ({0, 2} and
    {1}): the same samples bit for bit. They are draws of the exact posterior (predictor run
    to sigma = 0 with the exact noised score): the sample means lie within 5 Monte Carlo
    standard errors of the closed-form means; measurements differ in their noise streams."""
    from invdiff.reference import make_problem
    from invdiff.sampling.posterior import sample_measurements
    from invdiff.sampling.sigmas import geometric

    prob = make_problem(n=3, blur=1.0, mask_fraction=1.0, noise_level=0.3)
    g = torch.Generator().manual_seed(0)
    y = prob.noise_model(prob.forward_model(prob.prior.sample(3, generator=g)), generator=g)
    post = prob.posterior
    kw = dict(sampler="predictor-corrector", n=400, sigmas=geometric(10.0, 0.01, 60),
              x_shape=post.x_shape, progress=False, corrector_steps=0, final_denoise=False)
    run = lambda idx: sample_measurements(post.score_fn(), y[idx], 7, idx, **kw).samples
    together = run([0, 1, 2])
    shares = {0: run([0, 2]), 1: run([1])}
    assert torch.equal(together[[0, 2]], shares[0]) and torch.equal(together[[1]], shares[1])
    assert not torch.equal(run([1]), sample_measurements(post.score_fn(), y[[1]], 8, [1],
                                                         **kw).samples)  # the seed matters
    with pytest.raises(ConfigError, match="one index for each"):
        sample_measurements(post.score_fn(), y, 7, [0, 1], **kw)
    mean, std = post.mean(y).double(), post.cov.diagonal().sqrt().reshape(post.x_shape)
    err = (together.double().mean(1) - mean) / (std / 400**0.5)
    assert err.abs().max() < 5, err.abs().max()


def test_rank_zero_gathers_the_shares_in_measurement_order(monkeypatch):
    """Rank 0 of 4 with 5 measurements samples {0, 4}, the others {1}, {2}, {3}: the gathered
    posterior (put back in measurement order) equals sampling all five in one process. With
    2 measurements, ranks 2 and 3 sample nothing and only rank 0 returns a posterior."""

    from invdiff.evaluation.score import sample_shared_out
    from invdiff.reference import make_problem
    from invdiff.sampling.posterior import sample_measurements
    from invdiff.sampling.sigmas import geometric

    prob = make_problem(n=2, mask_fraction=1.0, noise_level=0.3)
    y = prob.forward_model(prob.prior.sample(5, generator=torch.Generator().manual_seed(0)))
    score = prob.posterior.score_fn()
    score.sigmas = geometric(5.0, 0.05, 8)  # as a ScoreModel carries its ladder
    params = dict(x_shape=prob.posterior.x_shape, progress=False)

    def shared_out(y, ctx):
        monkeypatch.setattr(distributed, "context", lambda: ctx)
        return sample_shared_out(score, y, 5, "annealed-langevin", 6, **params)

    one = shared_out(y, distributed.DistContext())

    def share(idx, seconds):
        if not idx:
            return (idx, None, 0, 0.0, {})
        p = sample_measurements(score, y[idx], 5, idx, sampler="annealed-langevin", n=6,
                                **params)
        return (idx, p.samples, p.nfe, seconds, p.info)

    monkeypatch.setattr(distributed, "all_gather", lambda obj: [
        obj, share([1], 9.0), share([2], 1.0), share([3], 2.0)])
    four = shared_out(y, distributed.DistContext(0, 4, 0))
    assert torch.equal(four.samples, one.samples) and four.nfe == one.nfe
    assert four.seconds == 9.0  # the slowest rank's
    monkeypatch.setattr(distributed, "all_gather", lambda obj: [
        share([0], 1.0), share([1], 1.0), share([], 0), obj])
    assert shared_out(y[:2], distributed.DistContext(3, 4, 0)) is None
