"""TensorBoard scalars of a training run (``training.tensorboard = true``).

Written to ``<out>/tensorboard/`` (the parent of the checkpoint folder), viewed with
``tensorboard --logdir <out>/tensorboard``. At every history row (``training.val_every``
steps) :class:`TrainingWriter` logs, against the step:

* ``loss/train``, ``loss/val``, ``loss/val_ema``: the history's losses;
* ``loss_by_sigma/<lo>-<hi>``: the mean training DSM term of the pairs whose level fell in
  each of four bins of ln sigma spanning the ladder (normalised units), since the last row;
  the per-pair terms are already computed for the loss, so this costs a bincount;
* ``optim/lr``, ``optim/grad_norm``;
* ``speed/examples_per_s``: training pairs per wall-clock second since the previous row
  (validation and checkpoint time included, as a user waiting on the run sees it).

``torch.utils.tensorboard`` needs the ``tensorboard`` package, an optional extra:
``pip install 'invdiff[tensorboard]'``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from invdiff.errors import ConfigError

N_BINS = 4


def open_writer(checkpoint_dir: Path | None, sigmas: torch.Tensor) -> TrainingWriter:
    """A :class:`TrainingWriter` into ``checkpoint_dir/../tensorboard``; a clear
    :class:`ConfigError` when there is no output folder or tensorboard is not installed."""
    if checkpoint_dir is None:
        raise ConfigError("training.tensorboard needs an output folder (the Trainer's "
                          "checkpoint_dir; <out>/tensorboard is written beside it)")
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("training.tensorboard = true needs the tensorboard package: "
                          "pip install 'invdiff[tensorboard]' (or set "
                          "training.tensorboard = false)") from None
    return TrainingWriter(SummaryWriter(str(Path(checkpoint_dir).parent / "tensorboard")),
                          sigmas)


class TrainingWriter:
    """Accumulates per-level training terms between history rows and writes the scalars.

    writer: a ``SummaryWriter``-like object (``add_scalar(tag, value, step)``, ``flush()``);
    sigmas: the training ladder ``(L,)``, normalised units (it sets the bin edges).
    """

    def __init__(self, writer: Any, sigmas: torch.Tensor) -> None:
        self.writer = writer
        lo, hi = math.log(float(sigmas.min())), math.log(float(sigmas.max()))
        self.edges = torch.linspace(lo, hi, N_BINS + 1, dtype=torch.float64)
        e = self.edges.exp().tolist()
        self.tags = [f"loss_by_sigma/{e[i]:.3g}-{e[i + 1]:.3g}" for i in range(N_BINS)]
        self._sum = torch.zeros(N_BINS, dtype=torch.float64)
        self._count = torch.zeros(N_BINS, dtype=torch.float64)
        self._last: tuple[int, float] | None = None

    def bins(self, sigma: torch.Tensor) -> torch.Tensor:
        """Bin index in [0, N_BINS) of each level ``sigma (B,)`` (ends clamped)."""
        inner = self.edges[1:-1].to(sigma.device)
        return torch.bucketize(sigma.double().log(), inner)

    def add_terms(self, sigma: torch.Tensor, terms: torch.Tensor) -> None:
        """Add one batch: levels ``sigma (B,)`` and their DSM terms ``(B,)``."""
        idx = self.bins(sigma.flatten()).cpu()
        t = terms.detach().double().flatten().cpu()
        self._sum += torch.bincount(idx, weights=t, minlength=N_BINS)
        self._count += torch.bincount(idx, minlength=N_BINS).double()

    def log_row(self, row: dict[str, Any], batch_size: int) -> None:
        """Write one history row of :class:`~invdiff.training.Trainer` (and the bins)."""
        step = int(row["step"])
        for tag, key in (("loss/train", "loss"), ("loss/val", "val_loss"),
                         ("loss/val_ema", "val_loss_ema"), ("optim/lr", "lr"),
                         ("optim/grad_norm", "grad_norm")):
            if row.get(key) is not None:
                self.writer.add_scalar(tag, float(row[key]), step)
        for tag, s, n in zip(self.tags, self._sum.tolist(), self._count.tolist(), strict=True):
            if n > 0:
                self.writer.add_scalar(tag, s / n, step)
        self._sum.zero_()
        self._count.zero_()
        prev_step, prev_s = self._last or (0, 0.0)
        seconds = float(row["seconds"])
        if seconds > prev_s and step > prev_step:
            self.writer.add_scalar("speed/examples_per_s",
                                   (step - prev_step) * batch_size / (seconds - prev_s), step)
        self._last = (step, seconds)

    def flush(self) -> None:
        self.writer.flush()
