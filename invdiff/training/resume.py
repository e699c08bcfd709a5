"""A trainer's state in a checkpoint, and resuming it: a checkpoint is resumed only by the run
that wrote it (:func:`check_same_run`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from invdiff.errors import CheckpointError
from invdiff.training.checkpoint import load_state, save_checkpoint
from invdiff.training.config import RESUMABLE_CHANGES, TrainingConfig
from invdiff.training.objective import resolve_loss_weighting

__all__ = ["check_same_run", "save_state", "restore_state"]


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


def save_state(trainer: Any, path: str | Path) -> Path:
    """Write ``trainer``'s full state to ``path`` atomically: weights, EMA, optimiser, step,
    and in ``training`` what resuming needs (config, generator, data size, time, the partial
    loss accumulator, history, and where early stopping stopped)."""
    training = {
        "config": trainer.config.model_dump_json(),
        "generator": trainer.generator.get_state(),
        "n_train": len(trainer.train_data),
        "seconds": trainer._seconds,
        "acc": list(trainer._acc),
        "history": json.dumps(trainer.history),
        "world_size": trainer.dist.world_size,  # informative: a resume may use another
        "rank_batch": trainer.rank_batch,
        "early_stopped": json.dumps(trainer.early_stopped),
    }
    return save_checkpoint(
        path, model=trainer.net.state_dict(), ema=trainer.ema.state_dict(),
        optimizer=trainer.optimizer.state_dict(), step=trainer.step,
        normalization=trainer.normalization, sigmas=trainer.sigmas,
        experiment=trainer.experiment, net_spec=trainer.net_spec, training=training,
    )


def restore_state(trainer: Any, ckpt: dict[str, Any], path: str | Path = "<checkpoint>"
                  ) -> None:
    """Restore a checkpoint (:func:`~invdiff.training.checkpoint.load_checkpoint`) into
    ``trainer`` after :func:`check_same_run`."""
    tr = ckpt["training"]
    try:
        check_same_run(trainer, ckpt, path)
        load_state(trainer.net, ckpt["model"], path, "weights")
        load_state(trainer.ema.module, ckpt["ema"], path, "EMA weights")
        trainer.optimizer.load_state_dict(ckpt["optimizer"])
        trainer.generator.set_state(tr["generator"].cpu())
        trainer.step = int(ckpt["step"])
        trainer._seconds = float(tr["seconds"])
        trainer._acc = [float(tr["acc"][0]), float(tr["acc"][1]), int(tr["acc"][2])]
        trainer.history = json.loads(tr["history"])
        trainer.early_stopped = json.loads(tr.get("early_stopped", "null"))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path}: cannot resume training from it ({type(exc).__name__}: {exc}); "
            f"start a fresh run in a new checkpoint_dir"
        ) from None
