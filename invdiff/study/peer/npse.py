"""The ``sbi-npse`` peer: sbi's neural posterior score estimation (NPSE; Geffner et al. 2023,
Sharrock et al. 2024).

NPSE here is sbi's default: an MLP score of the flattened x (theta) given the flattened y,
each z-scored per entry by sbi, variance-exploding SDE, trained with sbi's early stopping on a
10% validation split; sampled by Euler-Maruyama on the reverse SDE with ``steps`` steps (one
network evaluation each). Optional: without ``sbi`` the study records why its rows are missing.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class NPSEParams(BaseModel):
    """Settings of the ``sbi-npse`` peer (``[peer.sbi-npse]`` in a preset)."""

    model_config = ConfigDict(extra="forbid")

    max_epochs: int = Field(200, ge=1, description="at most this many epochs (sbi stops "
                            "earlier when the validation loss stops improving)")
    batch_size: int = Field(200, ge=1)
    lr: float = Field(5e-4, gt=0, description="Adam learning rate (sbi's default)")
    steps: int = Field(500, ge=2, description="reverse-SDE (Euler-Maruyama) steps of sampling")


class _NoTracker:
    """sbi's tracker protocol, doing nothing (its default writes TensorBoard logs to cwd)."""

    log_dir = None

    def log_metric(self, *args: Any, **kwargs: Any) -> None: ...
    def log_metrics(self, *args: Any, **kwargs: Any) -> None: ...
    def log_params(self, *args: Any, **kwargs: Any) -> None: ...
    def add_figure(self, *args: Any, **kwargs: Any) -> None: ...
    def flush(self) -> None: ...


def available() -> str | None:
    """None if sbi's NPSE can be imported, else why not."""
    try:
        from sbi.inference import NPSE  # noqa: F401
    except ImportError as exc:
        return (f"sbi NPSE skipped: sbi is not importable ({exc}). It is optional: "
                f"`pip install invdiff[peers]` or `pip install sbi` (check first with "
                f"`pip install --dry-run sbi` that it keeps your torch).")
    return None


def version() -> str:
    import sbi

    return f"sbi {sbi.__version__}"


def _varying(t: Any) -> tuple[Any, Any]:
    """The mean of each entry over the pairs and the mask of entries that vary among them."""
    mean = t.mean(0)
    return mean, t.std(0) > 1e-6 * (1 + mean.abs())


def run(task: Any) -> Any:
    """Train NPSE on the task's pairs, sample its held-out measurements."""
    import torch
    from sbi.inference import NPSE

    from .base import PeerOutput

    p: NPSEParams = task.params
    torch.manual_seed(task.seed)
    t0 = time.perf_counter()
    inf = NPSE(prior=None, sde_type="ve", device=task.device, show_progress_bars=False,
               tracker=_NoTracker())
    x, y = task.train_x.flatten(1), task.train_y.flatten(1)
    fixed_x, kx = _varying(x)  # entries the prior never varies are known: sbi's z-scoring of
    _, ky = _varying(y)        # a zero-variance entry cannot be inverted, so they stay out
    inf.append_simulations(x[:, kx], y[:, ky])
    inf.train(max_num_epochs=p.max_epochs, training_batch_size=p.batch_size,
              learning_rate=p.lr)
    epochs = (inf.summary.get("epochs_trained") or [None])[-1]  # passes over the pairs
    with warnings.catch_warnings():  # prior=None is deliberate: sbi's improper prior warns
        warnings.filterwarnings("ignore", message="The passed prior has no support")
        post = inf.build_posterior()
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    samples = fixed_x.repeat(len(task.y), task.n_samples, 1)
    for m, y_m in enumerate(task.y):
        samples[m][:, kx] = post.sample(
            (task.n_samples,), x=y_m.flatten()[ky].to(task.device), steps=p.steps,
            show_progress_bars=False, reject_outside_prior=False).cpu()
    samples = samples.reshape(len(task.y), task.n_samples, *task.train_x.shape[1:])
    seconds = time.perf_counter() - t0
    n_train = int(0.9 * len(task.train_x))  # sbi's default validation fraction is 10%
    steps = None if epochs is None else int(epochs) * -(-n_train // p.batch_size)
    return PeerOutput(
        samples=samples, nfe=p.steps, train_seconds=train_s, seconds=seconds,
        net="sbi-npse-mlp", sampler="sbi-euler-maruyama", train_steps=steps,
        description=(f"{version()} NPSE (MLP score, VE SDE), at most {p.max_epochs} epochs "
                     f"with sbi's early stopping (batch {p.batch_size}, lr {p.lr:g}), "
                     f"{p.steps} Euler-Maruyama steps"),
        detail=f"{len(task.train_x)} pairs, {epochs if epochs is not None else '?'} epochs")
