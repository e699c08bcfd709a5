"""What a training run is set up from: the normalisation, the device, the optimiser, checked
data."""

from __future__ import annotations

from typing import Any

import torch

from invdiff.checks import check_training_pairs
from invdiff.data import Dataset, Normalization
from invdiff.errors import ConfigError, DataError
from invdiff.training.config import TrainingConfig

__all__ = ["training_normalization", "resolve_device", "make_optimizer", "make_objective",
           "check_data"]


def training_normalization(train: Dataset, cfg: TrainingConfig) -> Normalization:
    """The normalisation the net trains in: the dataset's per-channel one, with y refitted
    per pixel under ``y_normalization = "pixel"`` and x's statistics refitted on ``log x``
    under ``x_transform = "log"``."""
    norm = train.normalization
    if cfg.y_normalization == "pixel":
        norm = norm.with_y_per_pixel(train.y)
    if cfg.x_transform == "log":
        norm = norm.with_x_log(train.x)
    return norm


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"training.device {name!r} is not a device: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"training.device is {name!r} but CUDA is not available here; set "
            f"training.device = 'cpu' or run on a GPU machine"
        )
    return device


def make_optimizer(net: torch.nn.Module, cfg: TrainingConfig) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(net.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def make_objective(cfg: TrainingConfig, net: torch.nn.Module) -> Any:
    """The run's objective (``training.objective`` with ``training.objective_params``, from
    the registry), prepared for ``net`` and the run's settings."""
    from invdiff.plugins import create

    objective = create("objective", cfg.objective, **cfg.objective_params)
    objective.prepare(net, cfg)
    return objective


def check_data(net: torch.nn.Module | None, data: Dataset, name: str,
               masking: bool = False) -> None:
    """Refuse an empty dataset, shapes other than ``net``'s (when given), and non-finite or
    inconsistent pairs. The pairs of a dataset object are checked once: a run that checks
    its data before measuring the ladder does not pay again in the trainer. ``masking``
    (``training.masking``): y may hold NaN (not measured), and the net takes y with one mask
    channel more (:mod:`invdiff.data.masking`)."""
    if len(data) == 0:
        raise DataError(f"the {name} dataset is empty; simulate some pairs first")
    for which in ("x", "y"):
        want = getattr(net, f"{which}_shape", None)
        have = tuple(getattr(data, f"{which}_shape"))
        if which == "y" and masking:  # the measurement and its mask
            have = (have[0] + 1, *have[1:])
        if want is not None and tuple(want) != have:
            hint = " (the measurement and its mask: training.masking)" if masking else ""
            raise DataError(
                f"the network expects {which} of shape {tuple(want)} but the {name} dataset "
                f"has {which} of shape {tuple(getattr(data, f'{which}_shape'))}; build the "
                f"net with {which}_shape={have}{hint}"
            )
    if getattr(data, "_pairs_checked", None) == bool(masking):
        return
    check_training_pairs(data.x, data.y, data.y_clean, f"{name} dataset", masking)
    data._pairs_checked = bool(masking)
