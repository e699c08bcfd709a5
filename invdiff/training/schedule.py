"""The learning-rate schedule: linear warm-up, then constant or cosine decay."""

from __future__ import annotations

import math

from invdiff.training.config import TrainingConfig

__all__ = ["warmup_lr", "scheduled_lr"]


def warmup_lr(step: int, lr: float, warmup_steps: int) -> float:
    """LR of 0-based ``step``: ``lr * min(1, (step + 1) / warmup_steps)`` (constant after)."""
    if warmup_steps <= 0:
        return lr
    return lr * min(1.0, (step + 1) / warmup_steps)


def scheduled_lr(step: int, cfg: TrainingConfig) -> float:
    """The LR of 0-based ``step``: linear warm-up, then constant or a cosine decay

    ``lr_t = lr (r + (1 - r) (1 + cos(pi p)) / 2)``, ``p = (t - w) / (steps - w)`` in [0, 1],
    ``r = lr_min_ratio``: full LR after warm-up, ``r lr`` at the last step.
    """
    lr = warmup_lr(step, cfg.lr, cfg.warmup_steps)
    if cfg.lr_decay == "constant" or step < cfg.warmup_steps:
        return lr
    span = max(cfg.steps - cfg.warmup_steps, 1)
    p = min(1.0, (step - cfg.warmup_steps) / span)
    r = cfg.lr_min_ratio
    return lr * (r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * p)))
