"""Snapshots and TensorBoard scalars of a training run (they must not change the run)."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from invdiff.errors import ConfigError
from invdiff.evaluation.metrics import reference_comparison
from invdiff.interfaces import ReferenceResult
from invdiff.reference import make_problem
from invdiff.sampling.sigmas import geometric
from invdiff.training import Trainer, TrainingConfig
from invdiff.training.checkpoint import load_checkpoint
from invdiff.training.tensorboard import N_BINS, TrainingWriter, open_writer
from tests.nets import TinyScoreNet, gaussian_datasets

SIGMAS = geometric(5.0, 0.05, 10)


@pytest.fixture(scope="module")
def data():
    problem = make_problem(n=2, blur=0.5, mask_fraction=1.0, noise_level=0.3)
    return gaussian_datasets(problem, n_train=600, n_val=100, seed=1)


def make(data, folder, **kw) -> Trainer:
    cfg = TrainingConfig(**({"steps": 6, "batch_size": 64, "lr": 1e-3, "val_every": 2,
                             "checkpoint_every": 5, "seed": 3, "ema_decay": 0.9} | kw))
    train, val = data
    return Trainer(TinyScoreNet(), train, SIGMAS, cfg, val=val, checkpoint_dir=folder,
                   progress=False)


def weights_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_snapshots_hold_the_weights_of_their_step(data, tmp_path):
    """step-2.pt of a 6-step run is bit-identical to the end of a 2-step run (same seed, a
    constant LR: a cosine schedule's LR at step 2 depends on the budget it is laid out over)."""
    full = make(data, tmp_path / "full", snapshot_steps=[2, 4], lr_decay="constant")
    full.fit()
    assert sorted(p.name for p in (tmp_path / "full").glob("step-*.pt")) == ["step-2.pt",
                                                                               "step-4.pt"]
    short = make(data, None, steps=2, lr_decay="constant")
    short.fit()
    snap = load_checkpoint(tmp_path / "full" / "step-2.pt")
    assert int(snap["step"]) == 2
    assert weights_equal(snap["model"], short.net.state_dict())
    assert weights_equal(snap["ema"], short.ema.state_dict())
    final = load_checkpoint(tmp_path / "full" / "final.pt")
    assert not weights_equal(snap["model"], final["model"])


def test_writer_bins_and_rates():
    """Per-bin means, examples per second and the history scalars, checked by hand."""
    logged: list[tuple[str, float, int]] = []

    class Recorder:
        def add_scalar(self, tag, value, step):
            logged.append((tag, value, step))

        def flush(self):
            pass

    sig = torch.tensor([0.01, 100.0])  # ln-bins of width ln(1e4) / 4: edges 0.01, 0.1, 1, 10, 100
    w = TrainingWriter(Recorder(), sig)
    assert w.bins(torch.tensor([0.01, 0.05, 0.5, 5.0, 100.0])).tolist() == [0, 0, 1, 2, 3]
    w.add_terms(torch.tensor([0.02, 0.03, 50.0]), torch.tensor([1.0, 3.0, 7.0]))
    w.add_terms(torch.tensor([0.05]), torch.tensor([5.0]))
    w.log_row({"step": 10, "loss": 2.5, "val_loss": None, "val_loss_ema": 1.5, "lr": 1e-3,
               "grad_norm": 0.7, "seconds": 4.0}, batch_size=8)
    got = {tag: (v, s) for tag, v, s in logged}
    assert got["loss/train"] == (2.5, 10) and got["loss/val_ema"] == (1.5, 10)
    assert "loss/val" not in got
    assert got["loss_by_sigma/0.01-0.1"] == (3.0, 10)  # (1 + 3 + 5) / 3
    assert got["loss_by_sigma/10-100"] == (7.0, 10)
    assert sum(t.startswith("loss_by_sigma") for t in got) == 2  # empty bins are not written
    assert got["speed/examples_per_s"] == (10 * 8 / 4.0, 10)
    logged.clear()
    w.log_row({"step": 20, "loss": 2.0, "lr": 1e-3, "grad_norm": 0.5, "seconds": 6.0}, 8)
    got = {tag: (v, s) for tag, v, s in logged}
    assert got["speed/examples_per_s"] == (10 * 8 / 2.0, 20)
    assert not any(t.startswith("loss_by_sigma") for t in got)  # reset after each row
    assert N_BINS == 4


def test_tensorboard_run_logs_the_history_and_changes_nothing(data, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logged = make(data, tmp_path / "tb" / "checkpoints", tensorboard=True)
    logged.fit()
    plain = make(data, None)
    plain.fit()
    assert weights_equal(logged.net.state_dict(), plain.net.state_dict())
    acc = EventAccumulator(str(tmp_path / "tb" / "tensorboard"))
    acc.Reload()
    train = [(e.step, e.value) for e in acc.Scalars("loss/train")]
    assert [s for s, _ in train] == [r["step"] for r in logged.history] == [2, 4, 6]
    for (_, v), row in zip(train, logged.history, strict=True):
        assert math.isclose(v, row["loss"], rel_tol=1e-6)
    tags = acc.Tags()["scalars"]
    assert {"loss/val", "loss/val_ema", "optim/lr", "speed/examples_per_s"} <= set(tags)
    assert any(t.startswith("loss_by_sigma/") for t in tags)


def test_tensorboard_missing_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(ConfigError, match=r"invdiff\[tensorboard\]"):
        open_writer(tmp_path / "checkpoints", SIGMAS)
    with pytest.raises(ConfigError, match="output folder"):
        open_writer(None, SIGMAS)


def test_reference_comparison_mean_error_in_std_units():
    """Samples centred at m_r + 0.5 s_r: the mean's error is 0.5 reference stds."""
    ref_mean, ref_std = torch.zeros(2, 1, 2, 2), torch.full((2, 1, 2, 2), 2.0)
    offsets = torch.tensor([-1.0, 1.0]).view(1, 2, 1, 1, 1)  # 2 samples, std sqrt(2)
    samples = ref_mean.unsqueeze(1) + 1.0 + offsets
    ref = ReferenceResult(index=[0, 1], mean=ref_mean, std=ref_std, seconds=0.0)
    out = reference_comparison(samples, torch.zeros(2, 1, 2, 2), ref)
    assert math.isclose(out["mean_err_std"], 0.5)
    assert math.isclose(out["std_ratio"], math.sqrt(2) / 2, rel_tol=1e-12)
    certain = ref_std.clone()
    certain[0, 0, 0, 0] = 0.0  # a pixel the reference is sure of: no error in its std units
    out = reference_comparison(samples, torch.zeros(2, 1, 2, 2),
                               ReferenceResult(index=[0, 1], mean=ref_mean, std=certain,
                                               seconds=0.0))
    assert "mean_err_std" not in out and math.isclose(out["rmse_ref"], 1.0)


def test_snapshot_steps_must_be_positive():
    with pytest.raises(ValueError, match="snapshot_steps"):
        TrainingConfig(snapshot_steps=[0, 10])
