"""The thread policy: training and sampling run on ``threads`` CPU threads (default 1), and
the caller's setting is restored after."""

from __future__ import annotations

import pytest
import torch

from invdiff.data import Dataset, Normalization
from invdiff.sampling.posterior import sample_posterior
from invdiff.sampling.sigmas import geometric
from invdiff.training import Trainer, TrainingConfig
from invdiff.training.model import ScoreModel
from tests.nets import TinyScoreNet


class ThreadSpy(TinyScoreNet):
    """Records torch's thread count at every call."""

    def __init__(self):
        super().__init__(hidden=8)
        self.seen = set()

    def forward(self, x, y, sigma):
        self.seen.add(torch.get_num_threads())
        return super().forward(x, y, sigma)


@pytest.fixture
def caller_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    yield 3
    torch.set_num_threads(before)


def _data():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 1, 2, 2, generator=g), torch.randn(32, 1, 2, 2, generator=g)
    return Dataset(x, y, Normalization.fit(x, y))


@pytest.mark.parametrize("threads, want", [({}, 1), ({"threads": 2}, 2), ({"threads": None}, 3)])
def test_training_runs_on_the_configured_threads(caller_threads, threads, want):
    net = ThreadSpy()
    cfg = TrainingConfig(steps=2, batch_size=16, **threads)
    Trainer(net, _data(), geometric(3, 0.1, 3), cfg, progress=False).fit()
    assert net.seen == {want} and torch.get_num_threads() == caller_threads


@pytest.mark.parametrize("threads, want", [({}, 1), ({"threads": 2}, 2), ({"threads": None}, 3)])
def test_sampling_runs_on_the_given_threads(caller_threads, threads, want):
    data = _data()
    net = ThreadSpy()
    model = ScoreModel(net, data.normalization, geometric(3, 0.1, 3)).eval()
    sample_posterior(model, data.y[:1], "annealed-langevin", n=2, steps_per_level=1,
                     progress=False, **threads)
    assert net.seen == {want} and torch.get_num_threads() == caller_threads


def test_config_sections_carry_threads():
    from invdiff.experiment.config import SamplingConfig

    assert TrainingConfig().threads == SamplingConfig().threads == 1
    assert TrainingConfig(threads=None).threads is None
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        TrainingConfig(threads=0)
