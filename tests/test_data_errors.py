"""Bad training data and measurements give one clear error (or work), not a misleading one."""

from __future__ import annotations

import pytest
import torch

from invdiff.data import Dataset, Normalization
from invdiff.errors import DataError
from invdiff.sampling.posterior import sample_posterior
from invdiff.sampling.sigmas import geometric, suggest
from invdiff.training import Trainer, TrainingConfig
from invdiff.training.model import ScoreModel
from tests.nets import TinyScoreNet

SIGMAS = geometric(3.0, 0.1, 4)


def _pairs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(64, 1, 2, 2, generator=g), torch.randn(64, 1, 2, 2, generator=g)


def _nan_at(t, i=3):
    t = t.clone()
    t[i, 0, 1, 0] = float("nan")
    return t


x, y = _pairs()
CASES = {
    "nan x": (_nan_at(x), y, None, r"x contains 1 non-finite values .* index \(3, 0, 1, 0\)"),
    "integer x": ((10 * x).long(), y, None, r"x has dtype torch.int64.*\.float\(\)"),
    "constant x": (torch.ones_like(x), y, None, r"x is the same field in every sample.*prior"),
    "nan y_clean": (x, y, _nan_at(y, 5), r"y_clean contains 1 non-finite .* index \(5, 0, 1, 0\)"),
    "integer y": (x, torch.zeros_like(y, dtype=torch.long), None, r"y has dtype torch.int64"),
}


@pytest.mark.parametrize("case", CASES)
def test_trainer_names_the_bad_data(case):
    xx, yy, yc, match = CASES[case]
    ds = Dataset(xx, yy, Normalization.identity(1, 1), {}, yc)
    cfg = TrainingConfig(steps=30, batch_size=16, redraw_noise=yc is not None)
    from invdiff.reference import make_problem

    noise = make_problem(n=2).noise_model
    with pytest.raises(DataError, match=match) as err:
        Trainer(TinyScoreNet(hidden=8), ds, SIGMAS, cfg, noise_model=noise, progress=False)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("case", ["nan x", "integer x", "constant x"])
def test_pipeline_ladder_names_the_bad_data(case, monkeypatch):
    """The ladder is measured on x before the trainer sees it: it must not hide the cause."""
    from invdiff.experiment.config import parse_config
    from invdiff.experiment.parts import make_ladder
    from tests.test_pipeline import TINY

    xx, yy, _, match = CASES[case]
    ds = Dataset(xx, yy, Normalization.identity(1, 1), {})
    cfg = parse_config(__import__("tomllib").loads(TINY.format(out="unused")))
    with pytest.raises(DataError, match=match):
        make_ladder(cfg, ds)


def test_suggest_refuses_non_finite_x():
    with pytest.raises(DataError, match="non-finite"):
        suggest(_nan_at(x))


@pytest.mark.parametrize("y_as", [lambda t: t.double(), lambda t: t.round().long()])
def test_sampling_takes_float64_and_integer_measurements(y_as):
    net = TinyScoreNet(hidden=8)
    model = ScoreModel(net, Normalization.fit(x, y), SIGMAS).eval()
    y_obs = y[:2].round()
    kw = {"sampler": "annealed-langevin", "n": 3, "steps_per_level": 2, "progress": False}
    want = sample_posterior(model, y_obs, generator=torch.Generator().manual_seed(0), **kw)
    got = sample_posterior(model, y_as(y_obs), generator=torch.Generator().manual_seed(0), **kw)
    assert torch.isfinite(got.samples).all()
    assert torch.equal(got.samples, want.samples)
