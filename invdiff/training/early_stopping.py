"""Early stopping on the held-out loss: the weights of the best validation, not the last.

Long training can collapse the posterior's variance and make samples cluster on training
examples with similar measurements; the validation loss (held-out pairs, fixed levels and
noise) turns up when that starts. With ``training.early_stopping = K`` the run stops once the
EMA weights' validation loss has not improved for K validations in a row, and the final model
holds the EMA weights of the best validation (kept in ``checkpoint_dir/best.pt``, so an
interrupted run resumes with them; in memory without a checkpoint folder). The checkpoints
record where the run stopped (``training.early_stopped``: ``{"step", "best_step",
"best_val_loss_ema"}``), and a stopped run is finished: resuming it trains no further.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["EarlyStopping"]


class EarlyStopping:
    """Watches a trainer's validation rows (``patience``: validations without improvement)."""

    def __init__(self, patience: int) -> None:
        self.patience = int(patience)
        self._best_ema: dict[str, Any] | None = None

    @classmethod
    def of(cls, trainer: Any) -> EarlyStopping | None:
        """The trainer's early stopping, or None when ``training.early_stopping`` is off."""
        k = trainer.config.early_stopping
        if k is None:
            return None
        if trainer.val_data is None:
            from invdiff.errors import ConfigError

            raise ConfigError("training.early_stopping watches the validation loss: give the "
                              "trainer validation pairs (data.n_val > 0)")
        return cls(k)

    @staticmethod
    def best_row(history: list[dict[str, Any]]) -> tuple[int, dict[str, Any]] | None:
        """The index and row of the lowest ``val_loss_ema`` (the first of equals)."""
        rows = [(i, r) for i, r in enumerate(history)
                if r.get("val_loss_ema") is not None and math.isfinite(r["val_loss_ema"])]
        return min(rows, key=lambda ir: ir[1]["val_loss_ema"]) if rows else None

    def update(self, trainer: Any) -> bool:
        """After a validation row: keep the best weights; True when the run should stop."""
        best = self.best_row(trainer.history)
        if best is None:
            return False
        index, row = best
        if index == len(trainer.history) - 1:  # this validation is the best so far
            self._best_ema = {k: v.detach().clone() for k, v in
                              trainer.ema.state_dict().items()}
            path = trainer._ckpt_path("best.pt")
            if path is not None and trainer.dist.is_main:
                trainer.save(path)
            return False
        if len(trainer.history) - 1 - index < self.patience:
            return False
        trainer.early_stopped = {"step": trainer.step, "best_step": row["step"],
                                 "best_val_loss_ema": row["val_loss_ema"]}
        return True

    def restore_best(self, trainer: Any) -> None:
        """Put the best validation's EMA weights into the trainer's EMA model."""
        from invdiff.training.checkpoint import load_checkpoint, load_state

        state = self._best_ema
        path = trainer._ckpt_path("best.pt")
        if state is None and path is not None and path.is_file():  # resumed after a stop
            state = load_checkpoint(path, map_location=trainer.device)["ema"]
        if state is not None:
            load_state(trainer.ema.module, state, path or "<best weights>", "EMA weights")
