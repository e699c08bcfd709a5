"""Training: fit a conditional score network to simulated pairs.

* ``config``: :class:`TrainingConfig` (pydantic only: no torch import);
* ``objective``: denoising score matching, its weightings and the level draws;
* ``schedule``, ``ema``: the learning-rate schedule and the weights' moving average;
* ``setup``: normalisation, device, optimiser, checked data;
* ``trainer``: :class:`Trainer`, the loop; ``resume``: which checkpoint a run may resume;
* ``checkpoint``: save and load (``weights_only``, checksummed); ``model``: :class:`ScoreModel`;
* ``distributed``: torchrun (DDP) ranks; ``tensorboard``: optional scalar logging.

Names load lazily: ``from invdiff.training import TrainingConfig`` does not import torch.
"""

from __future__ import annotations

from invdiff.lazy import lazy_exports

_EXPORTS = {
    "TrainingConfig": "invdiff.training.config",
    "RESUMABLE_CHANGES": "invdiff.training.config",
    "Trainer": "invdiff.training.trainer",
    "EMA": "invdiff.training.ema",
    "dsm_loss": "invdiff.training.objective",
    "dsm_terms": "invdiff.training.objective",
    "draw_dsm": "invdiff.training.objective",
    "loss_weight": "invdiff.training.objective",
    "resolve_loss_weighting": "invdiff.training.objective",
    "warmup_lr": "invdiff.training.schedule",
    "scheduled_lr": "invdiff.training.schedule",
    "training_normalization": "invdiff.training.setup",
    "ScoreModel": "invdiff.training.model",
    "load_model": "invdiff.training.checkpoint",
    "load_checkpoint": "invdiff.training.checkpoint",
    "save_checkpoint": "invdiff.training.checkpoint",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
