"""The reference problem's accuracy target, end to end (slow): a U-Net trained on this CPU
learns the reference posterior. 16 x 16 Gaussian field, blur 1.5 px, half the pixels masked
at random, 5% noise; 20 held-out measurements compared with the closed-form posterior.

Target: posterior mean error <= 0.5 exact posterior std (RMS over pixels and measurements), mean
std within [0.6, 1.5] of the exact one. Budget and measured numbers:
docs/results/reference-accuracy.md (the same config, configs/reference-unet.toml).

Training levels are drawn log-normally (``sigma_sampling = "log-normal"``) with a cosine
learning rate, and the U-Net's default EDM loss weighting (``loss_weighting = "auto"``). At 3000
steps this measured mean error 0.443 and std ratio 1.17 (one training, one thread); the sigma^2
weighting needed 5000 steps for 0.409 / 1.15, and the ladder-uniform levels of the paper met the
target only narrowly there (0.492 constant LR, 0.496 cosine; std ratio 1.21, 1.19). CI's slow run
includes it (about 7 minutes on 2 cores); ``make test-accuracy`` runs it alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from invdiff.experiment import run as pipeline
from invdiff.experiment.config import load_config

ROOT = Path(__file__).resolve().parents[1]
STEPS = 3000  # about 9 minutes of training on 2 quiet CPU cores (173 ms per step)


@pytest.mark.slow
@pytest.mark.accuracy
def test_unet_learns_the_reference_posterior(tmp_path):
    cfg = load_config(ROOT / "configs" / "reference-unet.toml")
    cfg.output.dir = str(tmp_path / "run")
    cfg.output.figures = False
    cfg.training.steps = STEPS
    cfg.training.lr_decay = "cosine"
    cfg.training.sigma_sampling = "log-normal"  # EDM's ln sigma ~ N(-1.2, 1.2^2)
    cfg.sampling.n_samples = 64  # sample-mean noise: 1/sqrt(64) = 0.125 posterior std
    # CI has both cores to itself: train and sample on both (the default is one thread)
    cfg.training.threads = cfg.sampling.threads = 2
    pipeline.run_train(cfg, progress=False)
    metrics = pipeline.run_sample(cfg, progress=False)
    assert metrics["reference"] == "linear-gaussian" and metrics["n_measurements"] == 20
    assert metrics["mean_err_std"] <= 0.5, metrics
    assert 0.6 <= metrics["std_ratio"] <= 1.5, metrics
