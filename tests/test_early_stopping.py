"""Early stopping on the held-out loss: the run stops after `patience` validations without
improvement, keeps the best validation's EMA weights, and a stopped run stays finished."""

from __future__ import annotations

import pytest
import torch

from invdiff.errors import ConfigError
from invdiff.training import Trainer, TrainingConfig
from invdiff.training.checkpoint import load_checkpoint
from tests.nets import TinyScoreNet
from tests.test_training import SIGMAS, data, problem  # noqa: F401 - fixtures

#: the validation losses a scripted run sees (EMA weights), one per validation
SCRIPT = [5.0, 4.0, 3.0, 3.5, 3.2, 3.9, 2.0]


def _scripted(tr: Trainer, snapshots: dict[int, dict]) -> None:
    """Replace validation by SCRIPT (raw and EMA alike) and record the EMA weights at each."""
    calls = iter(x for v in SCRIPT for x in (v, v))

    def validate(net=None):
        if net is tr.ema.module:
            snapshots[tr.step] = {k: v.clone() for k, v in tr.ema.state_dict().items()}
        return next(calls)

    tr.validate = validate


def _trainer(data, tmp_path=None, **kw) -> Trainer:  # noqa: F811
    cfg = TrainingConfig(steps=7, batch_size=64, val_every=1, checkpoint_every=1, seed=3,
                         ema_decay=0.9, **kw)
    train, val = data
    return Trainer(TinyScoreNet(), train, SIGMAS, cfg, val=val, progress=False,
                   checkpoint_dir=tmp_path)


def test_the_run_stops_after_patience_and_keeps_the_best_weights(data, tmp_path):  # noqa: F811
    tr = _trainer(data, tmp_path, early_stopping=2)
    snaps: dict[int, dict] = {}
    _scripted(tr, snaps)
    model = tr.fit()
    # best at step 3 (3.0); 3.5 and 3.2 do not improve on it: stop after step 5
    assert tr.step == 5 and tr.early_stopped == {"step": 5, "best_step": 3,
                                                 "best_val_loss_ema": 3.0}
    for k, v in model.net.state_dict().items():
        assert torch.equal(v, snaps[3][k]), k  # the best validation's EMA weights
    final = load_checkpoint(tmp_path / "final.pt")
    assert final["step"] == 5 and torch.equal(next(iter(final["ema"].values())),
                                              next(iter(snaps[3].values())))


def test_a_stopped_run_trains_no_further_when_resumed(data, tmp_path):  # noqa: F811
    first = _trainer(data, tmp_path, early_stopping=2)
    _scripted(first, {})
    first.fit()
    again = _trainer(data, tmp_path, early_stopping=2)
    again.validate = lambda net=None: pytest.fail("a stopped run validated again")
    model = again.fit(resume=True)
    assert again.step == 5 and again.early_stopped["best_step"] == 3
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 first.model().state_dict().values(),
                                                 strict=True))


def test_without_early_stopping_the_run_goes_on(data):  # noqa: F811
    tr = _trainer(data)
    _scripted(tr, {})
    tr.fit()
    assert tr.step == 7 and tr.early_stopped is None


def test_early_stopping_needs_validation_pairs(data):  # noqa: F811
    train, _ = data
    cfg = TrainingConfig(steps=3, batch_size=64, early_stopping=2)
    with pytest.raises(ConfigError, match="data.n_val"):
        Trainer(TinyScoreNet(), train, SIGMAS, cfg, progress=False).fit()
