"""The short GPU preset: the paper-scale elastography problem, one net, three references."""

from __future__ import annotations

from invdiff.study import load_preset, preset_names


def test_gpu_short_is_the_64_grid_elasticity_problem_against_three_mcmc_chains():
    assert "gpu-short" in preset_names()
    preset = load_preset("gpu-short")
    assert preset.device == "cuda" and list(preset.problems) == ["elasticity"]
    assert preset.cells("elasticity") == [(0.05, 0.05)]
    cfg = preset.experiment("elasticity", 0.05, "unet")
    assert cfg.problem.prior.params["n"] == cfg.problem.forward_model.params["grid"] == 64
    assert cfg.net.params["base_width"] == 64  # the "gpu" preset's width
    assert preset.problems["elasticity"].reference.params["n_ref"] == 3
    assert cfg.data.n_test == 3  # every held-out measurement has its reference chain
    # the paper's recipe stays one override away
    paper = load_preset("gpu-short", ["base.training.loss_weighting=sigma2",
                                      "base.training.y_normalization=channel"])
    tr = paper.experiment("elasticity", 0.05, "unet").training
    assert (tr.loss_weighting, tr.y_normalization) == ("sigma2", "channel")
