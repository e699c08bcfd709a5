"""Figures of posteriors: truth, measurement, posterior mean and std, a few samples.

Colorbars carry units and a caption says what x and y are physically, from the components'
optional ``label`` / ``units`` (:func:`invdiff.evaluation.verdicts.field_labels`). matplotlib with
the Agg backend (no display needed); files are written atomically.
"""

from __future__ import annotations

from pathlib import Path

import torch

from invdiff.evaluation.verdicts import FieldLabel, field_labels
from invdiff.io import atomic_open

STD_NOTE = ("std: the posterior standard deviation per pixel, i.e. where the measurement leaves "
            "x uncertain (it should be large where the posterior mean misses the truth)")
REF_NOTE = "; the reference panels are an independent posterior to compare with"


def posterior_figure(
    path: str | Path,
    truth: torch.Tensor | None,
    y: torch.Tensor,
    samples: torch.Tensor,
    ref_mean: torch.Tensor | None = None,
    ref_std: torch.Tensor | None = None,
    title: str = "",
    n_show: int = 3,
    labels: dict[str, FieldLabel] | None = None,
    residual: torch.Tensor | None = None,
) -> Path:
    """One row of panels for one measurement (first channel of each field), with a caption
    naming x and y (``labels``, default neutral) and what the std shows.

    truth: ``x_shape`` or None; y: ``y_shape``; samples: ``(n, *x_shape)``; residual:
    ``y_shape`` or None, the posterior predictive residual map (y minus the mean of F(x) over
    posterior draws: structure in it is what the posterior fails to explain).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mean, std = samples.mean(0)[0], samples.std(0)[0]
    panels: list[tuple[str, torch.Tensor, str]] = []
    if truth is not None:
        panels.append(("truth", truth[0], "x"))
    panels.append(("measurement y", y[0], "y"))  # colorbar: y's units; the rest: x's
    panels.append(("posterior mean", mean, "x"))
    if ref_mean is not None:
        panels.append(("reference mean", ref_mean[0], "x"))
    panels.append(("posterior std", std, "s"))
    if ref_std is not None:
        panels.append(("reference std", ref_std[0], "s"))
    panels += [(f"sample {i + 1}", samples[i, 0], "x") for i in range(min(n_show, len(samples)))]
    if residual is not None:
        panels.append(("predictive residual", residual[0], "r"))

    x_fields = [p[1] for p in panels if p[2] == "x"]
    vmin = min(float(f.min()) for f in x_fields)
    vmax = max(float(f.max()) for f in x_fields)
    s_max = max(float(p[1].max()) for p in panels if p[2] == "s")
    labels = labels or field_labels()
    units = {"x": labels["x"].units or "x", "y": labels["y"].units or "y",
             "s": labels["x"].units or "x", "r": labels["y"].units or "y"}
    # (NaN where y was not measured: those pixels are left blank)
    r_max = max((float(p[1].nan_to_num().abs().max()) for p in panels if p[2] == "r"),
                default=1.0)
    fig, axes = plt.subplots(1, len(panels), figsize=(2.5 * len(panels), 3.3))
    for ax, (name, field, kind) in zip(axes, panels, strict=True):
        kw = {"x": {"vmin": vmin, "vmax": vmax, "cmap": "viridis"},
              "s": {"vmin": 0, "vmax": s_max, "cmap": "magma"},
              "r": {"vmin": -r_max, "vmax": r_max, "cmap": "coolwarm"}}.get(kind,
                                                                          {"cmap": "coolwarm"})
        im = ax.imshow(field.detach().cpu().float().numpy(), **kw)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
        cbar.set_label(units[kind], fontsize=7)
        cbar.ax.tick_params(labelsize=7)
    ref_note = REF_NOTE if ref_mean is not None or ref_std is not None else ""
    caption = f"x: {labels['x']}.   y: {labels['y']}.\n{STD_NOTE}{ref_note}."
    fig.text(0.5, 0.01, caption, ha="center", va="bottom", fontsize=8, wrap=True)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
    return Path(path)


def loss_limits(values: list[float]) -> tuple[float, float]:
    """Log-axis limits that show the trend: the first logged value (an average over the
    untrained first steps) may lie far above the rest, so the top is set by the others, with
    a margin, and the first point is allowed off the axis."""
    finite = [v for v in values if v is not None and v > 0 and v == v]
    if not finite:
        return 1e-3, 1.0
    rest = finite[1:] or finite
    return min(finite) / 1.3, max(rest) * 1.5


def loss_figure(path: str | Path, history: list[dict[str, float]], title: str = "") -> Path:
    """Training and validation loss against step (log scale), titled with the logging
    interval; a first point far above the rest is drawn off the axis and noted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    steps = [h["step"] for h in history]
    train = [h["loss"] for h in history]
    ax.plot(steps, train, "o-", ms=3, label="training loss (mean over the interval)")
    values = list(train)
    if history and history[0].get("val_loss_ema") is not None:
        val = [h["val_loss_ema"] for h in history]
        ax.plot(steps, val, "s-", ms=3, label="validation loss, EMA weights")
        values += val
    ax.set_xlabel("training step")
    ax.set_ylabel("denoising score-matching loss")
    ax.set_yscale("log")
    lo, hi = loss_limits(train)
    if history and history[0].get("val_loss_ema") is not None:
        lo = min(lo, loss_limits(val)[0])
        hi = max(hi, loss_limits(val)[1])
    ax.set_ylim(lo, hi)
    if train and train[0] > hi:
        ax.annotate(f"step {steps[0]}: {train[0]:.3g} (off scale)", xy=(steps[0], hi),
                    xytext=(5, -12), textcoords="offset points", fontsize=7)
    every = steps[1] - steps[0] if len(steps) > 1 else (steps[0] if steps else 0)
    ax.set_title((f"{title}: " if title else "") + f"loss logged every {every} steps "
                 f"({len(steps)} points)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
    return Path(path)
