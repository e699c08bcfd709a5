r"""Probability-flow ODE samplers on their own noise schedule.

The variance-exploding diffusion has a deterministic twin, the probability-flow ODE (Song et al.
2021; Karras et al. 2022, Eq. 4 with :math:`s(t) = 1,\ \sigma(t) = t`)

.. math:: \frac{dx}{d\sigma} = -\sigma\, s(x, y, \sigma) = \frac{x - D(x, \sigma)}{\sigma},
          \qquad D(x, \sigma) = x + \sigma^2 s(x, y, \sigma) = \mathbb E[x_0 \mid x_\sigma = x],

which carries a draw of :math:`p_{\sigma_{max}}(\cdot \mid y)` to a draw of
:math:`p_\sigma(\cdot \mid y)` for every smaller sigma. Its trajectories are smooth, so a
high-order solver needs few score evaluations (nfe). The samplers here:

1. choose their own levels, Karras et al.'s rho-schedule (Eq. 5), ``N = steps`` levels

   .. math:: \sigma_i = \bigl(\sigma_{max}^{1/\rho} + \tfrac{i}{N-1}
             (\sigma_{min}^{1/\rho} - \sigma_{max}^{1/\rho})\bigr)^\rho,\quad i = 0 \dots N-1,

   or the geometric schedule (``rho=None`` or ``inf``, the limit :math:`\rho \to \infty`: uniform in
   :math:`\log\sigma`). The ladder passed to ``sample`` only supplies the defaults
   :math:`\sigma_{max} = \sigma_1,\ \sigma_{min} = \sigma_L` (``sigmas=None``: the score's
   own ladder ``score.sigmas``, else EDM's 80 and 0.002); a score that carries the ladder it
   was trained on (``score.sigmas``, e.g. a :class:`invdiff.training.model.ScoreModel`) is never
   asked
   outside that range (:func:`check_trained_range`), and by default (``on_ladder``) only at its
   levels: each level of the schedule moves to the nearest trained one, repeats dropped;
2. start from :math:`x \sim \mathcal N(0, \sigma_{max}^2 I)` and, with ``shift_start`` (one
   score evaluation), move it to :math:`x + D(x, \sigma_{max})`: the ODE keeps the relative
   offset of its start, so a start centred at 0 instead of the posterior mean m would leave a
   bias of about :math:`|m| / \sigma_{max}` posterior stds in the well-measured directions;
   :math:`D(x, \sigma_{max}) \approx m` removes it;
3. step from :math:`\sigma_i` to :math:`\sigma_{i+1}` with their solver (:meth:`ODESampler.step`);
4. with ``final_denoise``, leave :math:`\sigma_{min}` for 0 in one step (one evaluation):

   * ``final_step="ode"`` (default): :math:`x + \tfrac12 \sigma_{min}^2 s(x, y, \sigma_{min})`,
     the Euler step of the ODE written in :math:`t = \sigma^2` (:math:`dx/dt = -s/2`);
   * ``final_step="tweedie"``: :math:`x + \sigma_{min}^2 s = D(x, \sigma_{min})`, the Euler step
     in sigma (EDM's last step; the posterior mean given :math:`x_{\sigma_{min}}`).

   For a Gaussian direction of variance :math:`\lambda` the exact flow to 0 scales
   :math:`x - m` by :math:`\sqrt{1 - a},\ a = \sigma_{min}^2 / (\lambda + \sigma_{min}^2)`:
   "ode" gives :math:`1 - a/2` (error :math:`a^2/8`), "tweedie" :math:`1 - a` (too narrow by
   about :math:`a/2`), so "ode" is the one that stays right when :math:`\sigma_{min}` is not
   small against the posterior's smallest std.

Cost per chain: (N - 1) steps x the solver's evaluations per step, + 1 for the final step,
+ 1 for the shifted start. The loop (chunking, seeding, progress, divergence check, nfe count)
is the shared :class:`invdiff.sampling.LadderSampler`, run over the schedule.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from invdiff.errors import ConfigError
from invdiff.interfaces import SampleResult, ScoreFn
from invdiff.sampling import Chains, LadderSampler
from invdiff.sampling.sigmas import check_ladder

__all__ = ["DPMSolver2M", "Heun", "ODESampler", "check_trained_range", "karras_sigmas"]

FINAL_STEPS = ("ode", "tweedie")

#: Karras et al. (2022)'s sigma_max and sigma_min, the ends when neither the call nor the score
#: gives a ladder (data of unit scale, as invdiff's normalised units are)
EDM_RANGE = (80.0, 0.002)

#: relative slack when comparing a schedule with a trained ladder stored in float32
_RANGE_RTOL = 1e-5


def karras_sigmas(sigma_max: float, sigma_min: float, steps: int,
                  rho: float | None = 7.0) -> torch.Tensor:
    r"""Karras et al. (2022, Eq. 5)'s schedule ``(steps,)`` in float64, from ``sigma_max`` down
    to ``sigma_min`` (both exact); ``rho=None`` or ``inf`` (what a TOML config can write):
    geometric (uniform in :math:`\log\sigma`, the limit :math:`\rho \to \infty`)."""
    if not sigma_max > sigma_min > 0:
        raise ConfigError(f"need sigma_max > sigma_min > 0, got {sigma_max} and {sigma_min}")
    if steps < 2:
        raise ConfigError(f"steps must be >= 2 (both ends of the schedule), got {steps}")
    u = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)
    if rho is None or math.isinf(rho):
        out = torch.exp(math.log(sigma_max) + u * (math.log(sigma_min) - math.log(sigma_max)))
    else:
        if not rho > 0:
            raise ConfigError(f"rho must be > 0 (or None for a geometric schedule), got {rho}")
        hi, lo = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
        out = (hi + u * (lo - hi)) ** rho
    out[0], out[-1] = sigma_max, sigma_min  # no round-off at the ends (range checks use them)
    return out


def check_trained_range(score: ScoreFn, sigma_max: float, sigma_min: float) -> None:
    """Refuse a schedule outside the noise range a score model was trained on.

    A score that carries its training ladder (``score.sigmas``, e.g.
    :class:`invdiff.training.model.ScoreModel`) was fitted at noise levels in
    ``[min(sigmas), max(sigmas)]``. Both bundled nets take sigma as a continuous number (the
    U-Net and the noise-conditional RefineNet through a Fourier embedding of ln(sigma) / 4, the
    plain RefineNet as F / sigma), so any sigma in that range gives an interpolated answer, but
    outside it the output is an untrained extrapolation. A plain callable (e.g. an exact score)
    has no such range and is not checked.
    """
    trained = getattr(score, "sigmas", None)
    if trained is None:
        return
    trained = torch.as_tensor(trained).detach().double().cpu()
    lo, hi = float(trained.min()), float(trained.max())
    if sigma_max > hi * (1 + _RANGE_RTOL) or sigma_min < lo * (1 - _RANGE_RTOL):
        raise ConfigError(
            f"the schedule spans sigma in [{sigma_min:.4g}, {sigma_max:.4g}] but the score "
            f"model was trained on [{lo:.4g}, {hi:.4g}]; outside that range its output is an "
            f"untrained extrapolation. Pass sigma_max <= {hi:.4g} and sigma_min >= {lo:.4g} "
            f"(or leave them unset to use the model's ladder)"
        )


class ODESampler(LadderSampler):
    """A probability-flow ODE solver on its own schedule; subclasses implement :meth:`step`.

    steps: N levels of the schedule; sigma_max / sigma_min: its ends (None: the ladder's
    sigma_1 / sigma_L); rho: the schedule's rho (None: geometric); final_step: "ode" or
    "tweedie" (module docstring); shift_start: start at x + D(x, sigma_max); on_ladder: move
    every level to the nearest level of the training ladder (None: when the score carries
    one, ``score.sigmas``), so that a net is asked only where it was trained. Other parameters:
    see :class:`invdiff.sampling.LadderSampler` (``final_denoise=False`` stops at sigma_min,
    leaving noise of that scale).
    """

    name = "ode"
    #: score evaluations of one step sigma_i -> sigma_{i+1}
    evals_per_step = 1

    def __init__(
        self,
        steps: int = 25,
        sigma_max: float | None = None,
        sigma_min: float | None = None,
        rho: float | None = 7.0,
        final_step: str = "ode",
        shift_start: bool = True,
        on_ladder: bool | None = None,
        **ladder: Any,
    ) -> None:
        super().__init__(**ladder)
        if steps < 2:
            raise ConfigError(f"steps must be >= 2 (both ends of the schedule), got {steps}")
        for name, value in (("sigma_max", sigma_max), ("sigma_min", sigma_min)):
            if value is not None and not value > 0:
                raise ConfigError(f"{name} must be > 0, got {value}")
        if rho is not None and not rho > 0:
            raise ConfigError(f"rho must be > 0 (or None for a geometric schedule), got {rho}")
        if final_step not in FINAL_STEPS:
            raise ConfigError(f"final_step must be one of {FINAL_STEPS}, got {final_step!r}")
        self.steps, self.sigma_max, self.sigma_min, self.rho = steps, sigma_max, sigma_min, rho
        self.final_step, self.shift_start = final_step, bool(shift_start)
        self.on_ladder = None if on_ladder is None else bool(on_ladder)

    # -- the schedule ------------------------------------------------------------------------
    def schedule(self, score: ScoreFn, sigmas: torch.Tensor | None) -> torch.Tensor:
        """The levels this sampler runs on, checked against a trained score's range.

        Ends that are not set come from ``sigmas``, else from the score's training ladder
        (``score.sigmas``), else from EDM's defaults :data:`EDM_RANGE`. On the ladder
        (``on_ladder``; by default when the score carries a training ladder) every level is
        moved to the nearest level, in log sigma, of the training ladder (else of ``sigmas``),
        repeats dropped, so there may be fewer than ``steps``.
        """
        trained = _ladder(getattr(score, "sigmas", None))
        given = _ladder(sigmas)
        on_ladder = self.uses_ladder(trained is not None)
        target = trained if trained is not None else given
        if on_ladder and target is None:
            raise ConfigError(
                f"{self.name}: on_ladder needs the ladder the net was trained on: pass sigmas, "
                f"or a score model that carries .sigmas"
            )
        default = next((t for t in (given, trained) if t is not None),
                       torch.tensor(EDM_RANGE, dtype=torch.float64))
        hi = float(default[0]) if self.sigma_max is None else self.sigma_max
        lo = float(default[-1]) if self.sigma_min is None else self.sigma_min
        if not hi > lo:
            raise ConfigError(f"{self.name}: sigma_max = {hi:.4g} must exceed sigma_min = {lo:.4g}")
        check_trained_range(score, hi, lo)
        levels = karras_sigmas(hi, lo, self.steps, self.rho)
        if not on_ladder:
            return levels
        nearest = (levels.log()[:, None] - target.log()[None, :]).abs().argmin(dim=1)
        levels = target[torch.unique_consecutive(nearest)]
        if levels.numel() < 2:
            raise ConfigError(
                f"{self.name}: on the ladder a single level ({float(levels[0]):.4g}) is left in "
                f"[{lo:.4g}, {hi:.4g}]; widen the range, use a finer ladder or on_ladder=False"
            )
        return levels

    def sample(
        self,
        score: ScoreFn,
        y: torch.Tensor,
        sigmas: torch.Tensor | None,
        n_samples: int,
        generator: torch.Generator | None = None,
    ) -> SampleResult:
        """Samples ``(M, n_samples, *x_shape)``; ``sigmas`` only supplies the schedule's default
        ends and may be None (:meth:`schedule`). ``info["sigmas"]`` is the schedule that was
        run."""
        res = super().sample(score, y, self.schedule(score, sigmas), n_samples, generator)
        res.info["on_ladder"] = self.uses_ladder(getattr(score, "sigmas", None) is not None)
        return res

    def uses_ladder(self, trained: bool) -> bool:
        """Whether the levels move to the ladder's: ``on_ladder``, or (None) whether the score
        carries its training ladder."""
        return self.on_ladder if self.on_ladder is not None else trained

    def prepare(self, sigmas: torch.Tensor) -> dict[str, Any]:
        return {"steps": self.steps, "sigma_max": float(sigmas[0]),
                "sigma_min": float(sigmas[-1]), "rho": self.rho, "final_step": self.final_step,
                "shift_start": self.shift_start}

    def nfe_per_chain(self, n_levels: int) -> int:
        return ((n_levels - 1) * self.evals_per_step + int(self.final_denoise)
                + int(self.shift_start))

    # -- the loop's levels -------------------------------------------------------------------
    def level(self, chains: Chains, i: int) -> None:
        """Level i: (at i = 0, the shifted start, then) one step sigma_i -> sigma_{i+1}; the
        last level has no step (the final step is :meth:`finish`)."""
        if i == 0 and self.shift_start:
            sigma = chains.sigma(0)
            chains.move(chains.x + denoised(chains, sigma), "shifted start")
        if i + 1 < chains.n_levels:
            self.step(chains, i, chains.sigma(i), chains.sigma(i + 1))

    def step(self, chains: Chains, i: int, sigma: float, sigma_next: float) -> None:
        """Move the chains from ``sigma`` to ``sigma_next`` (with ``evals_per_step`` scores)."""
        raise NotImplementedError

    def finish(self, chains: Chains) -> None:
        """sigma_min -> 0: x + w sigma_min^2 s, w = 1/2 ("ode") or 1 ("tweedie")."""
        sigma = chains.sigmas[-1]
        w = 0.5 if self.final_step == "ode" else 1.0
        chains.move(chains.x + w * sigma**2 * chains.score(sigma), "denoise")


def _ladder(sigmas: Any) -> torch.Tensor | None:
    """A checked ladder as float64 on the CPU, or None."""
    if sigmas is None:
        return None
    return check_ladder(torch.as_tensor(sigmas).detach()).double().cpu()


def denoised(chains: Chains, sigma: float) -> torch.Tensor:
    """The denoiser ``D(x, sigma) = x + sigma^2 s(x, y, sigma)`` of every chain; +1 nfe."""
    return chains.x + sigma**2 * chains.score(sigma)


class Heun(ODESampler):
    r"""EDM's sampler (Karras et al. 2022, Algorithms 1 and 2): Heun's step in sigma.

    From :math:`\sigma_i` to :math:`\sigma_{i+1}`, with :math:`d(x, \sigma) = (x - D(x,
    \sigma)) / \sigma` and :math:`h = \sigma_{i+1} - \hat\sigma`:

    .. math:: \tilde x = \hat x + h\, d(\hat x, \hat\sigma), \qquad
              x_{i+1} = \hat x + \tfrac h2 \bigl(d(\hat x, \hat\sigma)
              + d(\tilde x, \sigma_{i+1})\bigr),

    2 evaluations per step. Without churn :math:`\hat\sigma = \sigma_i,\ \hat x = x_i` (the
    ODE). With churn (Algorithm 2) the level is first raised to :math:`\hat\sigma = \sigma_i (1 +
    \gamma_i)`, :math:`\gamma_i = \min(S_{churn} / N, \sqrt2 - 1)` for
    :math:`S_{tmin} \le \sigma_i \le S_{tmax}` (else 0), by fresh noise
    :math:`\hat x = x_i + \sqrt{\hat\sigma^2 - \sigma_i^2}\, S_{noise}\, z`; :math:`\hat\sigma`
    is capped at :math:`\sigma_{max}`, so the score is never asked above the schedule (and a
    trained model's range), and the first level gets no churn.
    """

    name = "heun"
    evals_per_step = 2

    def __init__(self, s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float | None = None,
                 s_noise: float = 1.0, **ode: Any) -> None:
        super().__init__(**ode)
        if s_churn < 0 or s_tmin < 0 or not s_noise > 0 or (s_tmax is not None and s_tmax <= 0):
            raise ConfigError(
                f"churn parameters must satisfy s_churn >= 0, s_tmin >= 0, s_tmax > 0, "
                f"s_noise > 0; got {s_churn}, {s_tmin}, {s_tmax}, {s_noise}"
            )
        if s_churn > 0 and self.on_ladder:
            raise ConfigError(
                "s_churn > 0 with on_ladder=True: churn raises sigma between the ladder's "
                "levels; use one or the other"
            )
        self.s_churn, self.s_tmin, self.s_tmax, self.s_noise = s_churn, s_tmin, s_tmax, s_noise

    def uses_ladder(self, trained: bool) -> bool:
        """As for every ODE sampler, except that churn (which leaves the ladder) keeps the
        default (None) off the ladder."""
        if self.on_ladder is None and self.s_churn > 0:
            return False
        return super().uses_ladder(trained)

    def prepare(self, sigmas: torch.Tensor) -> dict[str, Any]:
        return {**super().prepare(sigmas), "s_churn": self.s_churn, "s_tmin": self.s_tmin,
                "s_tmax": self.s_tmax, "s_noise": self.s_noise}

    def churn(self, chains: Chains, sigma: float) -> float:
        """Add the churn noise at level sigma (if any); return the raised level sigma-hat."""
        s_tmax = math.inf if self.s_tmax is None else self.s_tmax
        if self.s_churn == 0 or not self.s_tmin <= sigma <= s_tmax:
            return sigma
        gamma = min(self.s_churn / chains.n_levels, math.sqrt(2) - 1)
        sigma_hat = min(sigma * (1 + gamma), chains.sigmas[0])
        if sigma_hat > sigma:
            noise = (sigma_hat**2 - sigma**2) ** 0.5 * self.s_noise * chains.noise()
            chains.move(chains.x + noise, "churn")
        return sigma_hat

    def step(self, chains: Chains, i: int, sigma: float, sigma_next: float) -> None:
        sigma = self.churn(chains, sigma)
        x = chains.x
        d = (x - denoised(chains, sigma)) / sigma
        h = sigma_next - sigma
        chains.move(x + h * d, "Heun predictor")
        d_next = (chains.x - denoised(chains, sigma_next)) / sigma_next
        chains.move(x + 0.5 * h * (d + d_next), "Heun corrector")


class DPMSolver2M(ODESampler):
    r"""DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2) for the VE ODE.

    In :math:`\lambda = -\log\sigma` the ODE is linear in x with a data-prediction forcing, and
    its exact solution from :math:`\sigma_i` to :math:`\sigma_{i+1}`, if D were constant, is
    :math:`x_{i+1} = r x_i + (1 - r) D`, :math:`r = \sigma_{i+1} / \sigma_i`. The 2M step
    replaces D by a linear extrapolation from the two latest evaluations,

    .. math:: \hat D = \Bigl(1 + \frac{1}{2 q}\Bigr) D_i - \frac{1}{2 q} D_{i-1},\qquad
              q = \frac{h_{i-1}}{h_i},\quad h_i = \log\frac{\sigma_i}{\sigma_{i+1}},

    (first order, :math:`\hat D = D_i`, at the first step): second order with one evaluation
    per step, :math:`D_i = D(x_i, \sigma_i)`. The default schedule is geometric (uniform in
    :math:`\lambda`, the paper's spacing).
    """

    name = "dpm-2m"
    evals_per_step = 1

    def __init__(self, steps: int = 24, rho: float | None = None, **ode: Any) -> None:
        super().__init__(steps=steps, rho=rho, **ode)

    def step(self, chains: Chains, i: int, sigma: float, sigma_next: float) -> None:
        d_now = denoised(chains, sigma)
        h = math.log(sigma / sigma_next)
        prev = chains.state.get("dpm_previous")
        if prev is None:
            d_hat = d_now
        else:
            d_prev, h_prev = prev
            c = h / (2 * h_prev)  # 1 / (2 q)
            d_hat = (1 + c) * d_now - c * d_prev
        chains.state["dpm_previous"] = (d_now, h)
        r = sigma_next / sigma
        chains.move(r * chains.x + (1 - r) * d_hat, "DPM-Solver++(2M) step")
