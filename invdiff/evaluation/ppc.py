r"""Posterior predictive checks: does the posterior explain the measurement it came from?

For a measurement y and posterior samples :math:`x_s`, push samples through the model's own
forward model F and draw replicated measurements :math:`y^{rep} \sim` Noise(F(x)); compare a
discrepancy of the observed measurement with that of the replicates (Gelman et al., BDA3,
ch. 6). The discrepancy is the squared residual

.. math::  T(y, x) = \lVert r(y, F(x)) / w \rVert^2,

with r the noise model's residual (``noise_model.residual(y, y_clean)`` where it has one, such
as a wrapped phase difference; else ``y - F(x)``) and w the model's y scale (so that every
channel counts alike). The sum runs over the measured entries of y: a NaN entry was not
measured (:mod:`invdiff.data.masking`), and the replicates are compared on the same entries.
Works for every registered noise model: it only needs to draw noise.

Two p-values per measurement:

* ``ppc_pvalue``, the *sampled* posterior predictive p-value (Johnson 2004; Gosselin 2011):
  one posterior draw :math:`\tilde x`, R replicates, :math:`p = (1 + \#\{T(y^{rep}_r, \tilde x)
  \ge T(y, \tilde x)\}) / (R + 1)`. When the model and the posterior are right,
  :math:`(\tilde x, y)` is a draw of the joint and y is exchangeable with the replicates, so p
  is uniform on :math:`\{1/(R+1), \dots, 1\}`: a small p says the measurement is unlike what
  the posterior predicts.
* ``ppc_pvalue_classic``, the classical posterior predictive p-value over K posterior draws,
  one replicate each: :math:`\frac1K \sum_s 1[T(y^{rep}_s, x_s) \ge T(y, x_s)]`. It averages
  over the posterior, so it is conservative (concentrated around 0.5 under the model).

A draw the forward model refuses (outside its domain, e.g. a negative shear modulus from a
poorly trained net) cannot produce the measurement: its discrepancy counts as infinite, so it
gives the sampled p-value its smallest value 1 / (R + 1) and the classical one no exceedance;
``failed_draws`` counts them and ``error`` keeps the forward model's message.

Cost: K forward-model evaluations and R + K noise draws per measurement (K =
``n_draws``, default 16; R = ``replicates``, default 99). A passing check is no proof: it
only says this discrepancy finds nothing wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["PPCResult", "posterior_predictive_check"]


@dataclass
class PPCResult:
    """Per measurement ``(M,)``: the sampled and classical p-values, the observed discrepancy
    and the replicates' mean (sampled draw); ``residual`` ``(M, *y_shape)``: y - E[F(x)] over
    the K draws, the posterior predictive residual map."""

    pvalue: torch.Tensor
    pvalue_classic: torch.Tensor
    discrepancy: torch.Tensor
    replicated_discrepancy: torch.Tensor
    residual: torch.Tensor
    forward_evaluations: int
    failed_draws: torch.Tensor | None = None  # (M,) draws the forward model refused
    error: str = ""


def posterior_predictive_check(
    y: torch.Tensor,
    samples: torch.Tensor,
    forward_model: Any,
    noise_model: Any,
    scale: torch.Tensor | float = 1.0,
    n_draws: int = 16,
    replicates: int = 99,
    generator: torch.Generator | None = None,
) -> PPCResult:
    """Check posterior ``samples (M, n, *x_shape)`` against measurements ``y (M, *y_shape)``
    (physical units); ``scale``: the y scale w (broadcastable to y). Draw 0 of each posterior
    is the sampled p-value's draw; draws 0 .. K-1 give the classical p-value and the residual
    map."""
    m, n = samples.shape[:2]
    k = max(1, min(n_draws, n))
    measured = ~torch.isnan(y)  # NaN entries were not measured: T sums over the others
    if not bool(measured.all()):  # (M, 1, *y_shape): an unmeasured entry weighs 0
        scale = torch.where(measured.unsqueeze(1), torch.as_tensor(scale, dtype=y.dtype),
                            torch.inf)
    y_seen = torch.nan_to_num(y)
    x = samples[:, :k].reshape(m * k, *samples.shape[2:])
    flat, ok, error = _forward(forward_model, x)
    clean = flat.reshape(m, k, *y.shape[1:]).to(y.dtype)
    ok = ok.reshape(m, k)
    safe = torch.where(ok.reshape(m, k, *[1] * (clean.dim() - 2)), clean, y_seen.unsqueeze(1))
    weights = ok.to(y.dtype).reshape(m, k, *[1] * (clean.dim() - 2))
    mean_clean = (safe * weights).sum(1) / weights.sum(1).clamp_min(1)
    residual = torch.where(ok.any(1).reshape(m, *[1] * (y.dim() - 1)),
                           _residual(noise_model, y, mean_clean), float("nan"))
    obs = _discrepancy(noise_model, y_seen.unsqueeze(1).expand_as(safe), safe, scale)  # (M, K)
    obs = torch.where(ok, obs, torch.inf)
    # the sampled p-value: R replicates around draw 0
    base = safe[:, :1].expand(m, replicates, *safe.shape[2:])
    rep = _draw(noise_model, base, generator)
    t_rep = _discrepancy(noise_model, rep, base, scale)  # (M, R)
    p = (1 + (t_rep >= obs[:, :1]).sum(1)).double() / (replicates + 1)
    # the classical p-value: one replicate per draw
    t_cls = _discrepancy(noise_model, _draw(noise_model, safe, generator), safe, scale)
    p_cls = (t_cls >= obs).double().mean(1)
    return PPCResult(p, p_cls, obs[:, 0].double(), t_rep.double().mean(1), residual,
                     forward_evaluations=k, failed_draws=(~ok).sum(1), error=error)


def _forward(forward_model: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, str]:
    """F of every draw ``x (N, ...)``; where the forward model refuses the batch, draw by
    draw: ``(F(x) with refused draws' rows zero, accepted (N,), the first refusal)``."""
    from invdiff.errors import InvdiffError

    with torch.no_grad():
        try:
            out = forward_model(x)
            return out, torch.ones(len(x), dtype=torch.bool), ""
        except (InvdiffError, ValueError):
            pass
        rows, ok, error = [], [], ""
        for i in range(len(x)):
            try:
                rows.append(forward_model(x[i:i + 1]))
                ok.append(True)
            except (InvdiffError, ValueError) as exc:
                rows.append(None)
                ok.append(False)
                error = error or str(exc)
        good = next((r for r in rows if r is not None), None)
        if good is None:
            shape = (len(x), *forward_model.output_shape(tuple(x.shape[1:])))
            return torch.zeros(shape, dtype=x.dtype), torch.zeros(len(x), dtype=torch.bool), error
        out = torch.cat([r if r is not None else torch.zeros_like(good) for r in rows])
        return out, torch.tensor(ok), error


def _residual(noise_model: Any, y: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    fn = getattr(noise_model, "residual", None)
    return fn(y, clean) if callable(fn) else y - clean


def _discrepancy(noise_model: Any, y: torch.Tensor, clean: torch.Tensor,
                 scale: torch.Tensor | float) -> torch.Tensor:
    """T over the trailing y dimensions of ``y``, ``clean`` ``(M, K, *y_shape)``: ``(M, K)``."""
    r = _residual(noise_model, y.flatten(0, 1), clean.flatten(0, 1))
    r = r.reshape(y.shape) / scale if r.shape == y.flatten(0, 1).shape else r / scale
    return r.double().square().reshape(*y.shape[:2], -1).sum(2)


def _draw(noise_model: Any, clean: torch.Tensor, generator: torch.Generator | None
          ) -> torch.Tensor:
    """Replicated measurements Noise(clean) for ``clean (M, K, *y_shape)``."""
    with torch.no_grad():
        return noise_model(clean.flatten(0, 1), generator=generator).reshape(clean.shape)
