"""Training objectives are a registered kind: denoising score matching built in, chosen by
``training.objective``, checked by the contract kit."""

from __future__ import annotations

import pytest

import invdiff
from invdiff.errors import ConfigError, UnknownComponentError
from invdiff.experiment.config import check_components, parse_config
from invdiff.testing import check_objective
from invdiff.training import TrainingConfig
from tests.test_pipeline import TINY


@pytest.mark.parametrize("settings", [{}, {"loss_weighting": "edm"},
                                      {"sigma_sampling": "log-normal"}])
def test_dsm_is_built_in_and_keeps_the_contract(settings):
    assert "dsm" in invdiff.available("objective")
    assert TrainingConfig().objective == "dsm"
    check_objective(invdiff.create("objective", "dsm"), TrainingConfig(**settings))


def test_an_unknown_objective_is_named_before_any_work(tmp_path):
    import tomllib

    cfg = parse_config(tomllib.loads(TINY.format(out=tmp_path / "run")))
    cfg.training.objective = "score-matching"
    with pytest.raises((ConfigError, UnknownComponentError), match="training.objective.*dsm"):
        check_components(cfg)
    assert not (tmp_path / "run").exists()


def test_the_trainer_trains_with_the_configured_objective(tmp_path):
    """A run with objective = "flow-matching" records it, and its validation loss is the
    flow-matching loss (not the DSM one) of the same net."""
    import tomllib

    from invdiff.experiment.run import Experiment
    from invdiff.training.objective import DenoisingScoreMatching

    if "flow-matching" not in invdiff.available("objective"):
        pytest.skip("the invdiff-flow plugin is not installed")
    cfg = parse_config(tomllib.loads(TINY.format(out=tmp_path / "run")))
    cfg.training.objective = "flow-matching"
    summary = Experiment(cfg, progress=False).train()
    assert summary["loss_weighting"].startswith("flow-matching")
    ckpt = invdiff.load_model(tmp_path / "run")
    assert ckpt.experiment["training"]["objective"] == "flow-matching"
    assert isinstance(invdiff.create("objective", "dsm"), DenoisingScoreMatching)
