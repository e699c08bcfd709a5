"""The ``bayesflow-fm`` peer: BayesFlow 2's flow matching (Lipman et al. 2023; Wildberger et al.
2023 for simulation-based inference) on the study's simulated pairs.

BayesFlow runs on Keras 3, here with its torch backend (``KERAS_BACKEND=torch`` is set while
keras is imported, and only then). The inference network is ``bayesflow.networks.FlowMatching``
with, by default, BayesFlow's own convolutional ``UNet`` subnet on the image-shaped x: the
measurement y is concatenated to x channel-wise (both are channels-last ``(H, W, C)`` fields on
the same grid), the time enters through the U-Net's Fourier embedding. ``subnet = "mlp"``
uses BayesFlow's default time-MLP on the flattened x given the flattened y instead. Both x and
y are z-scored per pixel with the training pairs' mean and std (sbi does the same for NPSE).

Training follows BayesFlow's offline-training default: AdamW (weight decay 5e-3, gradient
norm clipped at 1.5), cosine learning-rate decay to 0 after a 5% warm-up from a tenth of
``lr``; ``steps`` optimizer steps rounded up to whole epochs over the pairs. Sampling integrates
the flow's ODE from the Gaussian base with ``sample_steps`` fixed steps of ``sampler``
(``euler``: 1 network evaluation per step, ``rk45``: 6, counted exactly).

Importing BayesFlow switches torch's autograd off and configures the root logger; both are put
back as they were, so the rest of the study is unaffected.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class FlowParams(BaseModel):
    """Settings of the ``bayesflow-fm`` peer (``[peer.bayesflow-fm]`` in a preset)."""

    model_config = ConfigDict(extra="forbid")

    subnet: Literal["unet", "mlp"] = Field(
        "unet", description="BayesFlow's convolutional U-Net on the (H, W, C) fields, or its "
        "time-MLP on the flattened x and y")
    widths: list[int] = Field(default_factory=lambda: [16, 32, 32], min_length=1,
                              description="U-Net channels per resolution (MLP: hidden widths)")
    res_blocks: int = Field(1, ge=1, description="U-Net residual blocks per resolution")
    steps: int = Field(3000, ge=1, description="optimizer steps (rounded up to whole epochs)")
    batch_size: int = Field(64, ge=1)
    lr: float = Field(5e-4, gt=0, description="peak learning rate (BayesFlow's default)")
    weight_decay: float = Field(5e-3, ge=0)
    sampler: Literal["euler", "rk45"] = Field("rk45", description="fixed-step ODE method")
    sample_steps: int = Field(10, ge=1, description="ODE steps per sample")


NFE_PER_STEP = {"euler": 1, "rk45": 6}


def _import() -> tuple[Any, Any]:
    """``(keras, bayesflow)`` on keras' torch backend, leaving the process as it was."""
    import torch

    grad = torch.is_grad_enabled()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    before = os.environ.get("KERAS_BACKEND")
    os.environ["KERAS_BACKEND"] = "torch"
    root.addHandler(logging.NullHandler())  # so that bayesflow's logging.basicConfig is a no-op
    try:
        import bayesflow
        import keras
    finally:
        if before is None:
            os.environ.pop("KERAS_BACKEND", None)
        else:
            os.environ["KERAS_BACKEND"] = before
        torch.set_grad_enabled(grad)
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.getLogger("bayesflow").setLevel(logging.WARNING)
    if keras.backend.backend() != "torch":
        raise ImportError(f"keras was imported with the {keras.backend.backend()!r} backend "
                          f"before the peer could choose torch")
    return keras, bayesflow


def available() -> str | None:
    """None if BayesFlow (with keras on torch) can be imported, else why not."""
    try:
        _import()
    except Exception as exc:  # ImportError, or a keras/backend problem at import time
        return (f"BayesFlow flow matching skipped: bayesflow is not importable "
                f"({type(exc).__name__}: {exc}). It is optional: `pip install invdiff[peers]` "
                f"or `pip install bayesflow` (check first with `pip install --dry-run "
                f"bayesflow` that it keeps your torch).")
    return None


def version() -> str:
    keras, bf = _import()
    return f"BayesFlow {bf.__version__}, Keras {keras.__version__}"


def _zscore(t: Any) -> tuple[Any, Any]:
    """Per-entry mean and std over the first axis (std 1 where an entry never varies)."""
    mean, std = t.mean(0), t.std(0)
    return mean, std.where(std > 1e-8 * (1 + mean.abs()), std.new_ones(()))


def run(task: Any) -> Any:
    """Train flow matching on the task's pairs, sample its held-out measurements."""
    import torch

    from .base import PeerOutput

    keras, bf = _import()
    p: FlowParams = task.params
    x_shape = tuple(task.train_x.shape[1:])
    mx, sx = _zscore(task.train_x)
    my, sy = _zscore(task.train_y)
    image = p.subnet == "unet"

    def layout(t: Any) -> Any:  # (N, C, H, W) -> channels-last fields or flat vectors
        return t.permute(0, 2, 3, 1).contiguous() if image else t.flatten(1)

    x = layout((task.train_x - mx) / sx).numpy()
    y = layout((task.train_y - my) / sy).numpy()
    y_new = layout((task.y - my) / sy)
    if image:
        subnet: Any = bf.networks.UNet
        kwargs = {"widths": tuple(p.widths), "res_blocks": p.res_blocks,
                  "attn_stage": (False,) * len(p.widths), "groups": min(8, p.widths[0])}
    else:
        subnet, kwargs = "time_mlp", {"widths": tuple(p.widths)}
    keras.utils.set_random_seed(task.seed)
    t0 = time.perf_counter()
    with keras.device(task.device):
        net = bf.networks.FlowMatching(
            subnet=subnet, subnet_kwargs=kwargs,
            integrate_kwargs={"method": p.sampler, "steps": p.sample_steps})
        approx = bf.ContinuousApproximator(inference_network=net, standardize=None)
        data = bf.datasets.OfflineDataset(
            {"inference_variables": x, "inference_conditions": y}, batch_size=p.batch_size,
            adapter=None)
        epochs = max(1, math.ceil(p.steps / data.num_batches))
        total = epochs * data.num_batches
        warmup = int(0.05 * total)
        schedule = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.1 * p.lr, warmup_target=p.lr, warmup_steps=warmup,
            decay_steps=max(1, total - warmup), alpha=0.0)
        approx.compile(optimizer=keras.optimizers.AdamW(
            schedule, weight_decay=p.weight_decay, clipnorm=1.5))
        approx.fit(dataset=data, epochs=epochs, verbose=0)
        train_s = time.perf_counter() - t0

        calls = [0]
        velocity = net.velocity

        def counted(*args: Any, **kw: Any) -> Any:
            calls[0] += 1
            return velocity(*args, **kw)

        object.__setattr__(net, "velocity", counted)  # count network evaluations exactly
        t0 = time.perf_counter()
        out = []
        with torch.no_grad():
            for m in range(len(y_new)):
                cond = keras.ops.convert_to_tensor(
                    y_new[m:m + 1].expand(task.n_samples, *y_new.shape[1:]).numpy())
                s = net.sample((task.n_samples, *y_new.shape[1:-1]) if image
                               else (task.n_samples,), conditions=cond,
                               seed=task.seed * 100_003 + m)
                s = torch.as_tensor(keras.ops.convert_to_numpy(s))
                s = s.permute(0, 3, 1, 2) if image else s.reshape(task.n_samples, *x_shape)
                out.append(s * sx + mx)
        seconds = time.perf_counter() - t0
    nfe = calls[0] // max(1, len(y_new))
    arch = (f"U-Net subnet (widths {list(p.widths)}, {p.res_blocks} residual block(s) per "
            f"resolution) on the fields, y concatenated channel-wise" if image else
            f"time-MLP subnet (widths {list(p.widths)}) on the flattened x and y")
    return PeerOutput(
        samples=torch.stack(out), nfe=nfe, train_seconds=train_s, seconds=seconds,
        net=f"bayesflow-fm-{p.subnet}", sampler=f"bayesflow-{p.sampler}", train_steps=total,
        description=(f"{version()} flow matching, {arch}, x and y z-scored per pixel; "
                     f"AdamW (batch {p.batch_size}, cosine lr peak {p.lr:g}, weight decay "
                     f"{p.weight_decay:g}), {p.steps} steps rounded up to whole epochs; "
                     f"{p.sampler} ODE, {p.sample_steps} steps ({nfe} network evaluations "
                     f"per sample)"),
        detail=f"{len(task.train_x)} pairs, {total} steps ({epochs} epochs)")
