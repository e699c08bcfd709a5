"""Figures of posteriors: truth, measurement, posterior mean and std, a few samples.

matplotlib with the Agg backend (no display needed); files are written atomically.
"""

from __future__ import annotations

from pathlib import Path

import torch

from invdiff.io import atomic_open


def posterior_figure(
    path: str | Path,
    truth: torch.Tensor | None,
    y: torch.Tensor,
    samples: torch.Tensor,
    ref_mean: torch.Tensor | None = None,
    ref_std: torch.Tensor | None = None,
    title: str = "",
    n_show: int = 3,
) -> Path:
    """One row of panels for one measurement (first channel of each field).

    truth: ``x_shape`` or None; y: ``y_shape``; samples: ``(n, *x_shape)``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mean, std = samples.mean(0)[0], samples.std(0)[0]
    panels: list[tuple[str, torch.Tensor, str]] = []
    if truth is not None:
        panels.append(("truth", truth[0], "x"))
    panels.append(("measurement y", y[0], "y"))
    panels.append(("posterior mean", mean, "x"))
    if ref_mean is not None:
        panels.append(("reference mean", ref_mean[0], "x"))
    panels.append(("posterior std", std, "s"))
    if ref_std is not None:
        panels.append(("reference std", ref_std[0], "s"))
    panels += [(f"sample {i + 1}", samples[i, 0], "x") for i in range(min(n_show, len(samples)))]

    x_fields = [p[1] for p in panels if p[2] == "x"]
    vmin = min(float(f.min()) for f in x_fields)
    vmax = max(float(f.max()) for f in x_fields)
    s_max = max(float(p[1].max()) for p in panels if p[2] == "s")
    fig, axes = plt.subplots(1, len(panels), figsize=(2.4 * len(panels), 2.6))
    for ax, (name, field, kind) in zip(axes, panels, strict=True):
        kw = {"vmin": vmin, "vmax": vmax, "cmap": "viridis"} if kind == "x" else (
            {"vmin": 0, "vmax": s_max, "cmap": "magma"} if kind == "s" else {"cmap": "coolwarm"})
        im = ax.imshow(field.detach().cpu().float().numpy(), **kw)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
    return Path(path)


def loss_figure(path: str | Path, history: list[dict[str, float]]) -> Path:
    """Training and validation loss against step (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    steps = [h["step"] for h in history]
    ax.plot(steps, [h["loss"] for h in history], label="train loss")
    if history and "val_loss_ema" in history[0]:
        ax.plot(steps, [h["val_loss_ema"] for h in history], label="validation (EMA)")
    ax.set_xlabel("step")
    ax.set_ylabel("DSM loss")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
    return Path(path)
