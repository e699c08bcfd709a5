"""Resuming a run: a checkpoint is resumed only by the run that wrote it."""

from __future__ import annotations

from typing import Any

import torch

from invdiff.errors import CheckpointError
from invdiff.training.config import RESUMABLE_CHANGES, TrainingConfig
from invdiff.training.objective import resolve_loss_weighting

__all__ = ["check_same_run"]


def check_same_run(trainer: Any, ckpt: dict[str, Any], path: Any) -> None:
    """Raise a :class:`CheckpointError` naming every difference unless ``ckpt`` (from
    :func:`~invdiff.training.checkpoint.load_checkpoint`) continues ``trainer``'s run: the
    same training settings but those in :data:`RESUMABLE_CHANGES`, data size, ladder and
    normalisation."""
    tr = ckpt["training"]
    old = TrainingConfig.model_validate_json(tr["config"]).model_dump()
    new = trainer.config.model_dump()
    # "auto" and the weighting it stands for with this net are the same run
    for cfg in (old, new):
        cfg["loss_weighting"] = resolve_loss_weighting(cfg["loss_weighting"], trainer.net)
    # a cosine schedule is laid out over `steps`: changing it would change the trajectory
    free = RESUMABLE_CHANGES - ({"steps"} if new["lr_decay"] == "cosine" else set())
    diff = sorted(k for k in new if k not in free and old.get(k) != new[k])
    problems = [f"training.{k}: {old.get(k)!r} in the checkpoint, {new[k]!r} now"
                for k in diff]
    if "steps" in diff and new["lr_decay"] == "cosine":
        problems[diff.index("steps")] += (" (a cosine LR schedule is laid out over `steps`; "
                                          "to extend finished runs, train them with "
                                          "lr_decay = \"constant\")")
    if int(tr["n_train"]) != len(trainer.train_data):
        problems.append(f"{tr['n_train']} training pairs then, {len(trainer.train_data)} now")
    sig = ckpt["sigmas"].to(trainer.sigmas)
    if sig.shape != trainer.sigmas.shape or not torch.equal(sig, trainer.sigmas):
        problems.append("a different sigma ladder")
    saved, now = ckpt["normalization"], trainer.normalization.state_dict()
    if set(saved) != set(now) or any(not torch.equal(saved[k].cpu(), v.cpu())
                                     for k, v in now.items()):
        problems.append("a different data normalisation")
    if problems:
        raise CheckpointError(
            f"{path} belongs to another training run: " + "; ".join(problems)
            + ". Resume with the original settings and data, or train afresh in a new "
            "checkpoint_dir"
        )
