"""The exact likelihood p(y | x) of the OCE phase noise when the speckle is not smoothed.

With ``speckle_smoothing = 0`` the noise of :class:`invdiff_oce.noise.OCEPhaseNoise` draws
every pixel independently given the clean phase phi = F(x): the speckle S ~ Exp(1), the
additive noises n1, n2 and the decorrelated speckle w are all per pixel, and the correlation rho
is a deterministic function of phi. So

    log p(y | x) = sum_pixels log p_e( wrap(y - phi) | Delta, row )

(over the measured pixels: a NaN in y marks a pixel that was not measured, left out)

where p_e is the density of the phase error e on the circle, for the pixel's phase ramp
Delta = window_pixels * |d phi / d z| and depth row. (A smoothed speckle field couples the
pixels through S; the likelihood is then a 256-dimensional integral over S, and this class
refuses it.)

**One pixel.** z1 = 1 + n1 ~ CN(1, 1 / SNR) and z2 = rho + sqrt(1 - rho^2) w + n2 ~
CN(rho, 1 - rho^2 + 1 / SNR) are independent complex Gaussians with real means, so
e = arg z2 - arg z1 is the difference of two independent phases of "a sinusoid in Gaussian
noise" with signal-to-noise ratios a1 = SNR and a2 = rho^2 / (1 - rho^2 + 1 / SNR). The phase
of CN(m, v), m > 0, has (a = m^2 / v)

    p(t; a)  = (1 / 2 pi) [ exp(-a) + sqrt(pi a) cos t exp(-a sin^2 t) erfc(-sqrt(a) cos t) ],
    c_k(a)   = E[cos k t] = sqrt(pi a) / 2 exp(-a / 2) [ I_{(k-1)/2}(a / 2) + I_{(k+1)/2}(a / 2) ]

(Middleton 1960; k = 1 is :func:`invdiff_oce.circular.phase_resultant`), and the difference has
Fourier coefficients c_k(a1) c_k(a2) (independence, symmetric densities):

    p_e(e | SNR, rho) = (1 / 2 pi) [ 1 + 2 sum_{k >= 1} c_k(a1) c_k(a2) cos(k e) ].

**The speckle.** SNR = max(snr0 * S * 10^(-snr_drop_db / 10 * z), snr_floor) with S ~ Exp(1),
so p_e(e | Delta, row) = int_0^inf exp(-S) p_e(e | SNR(S), rho(Delta)) dS, a trapezoid rule
in log S (``n_speckle`` nodes on [1e-8, 40]; exp(-40) is far below float64 relevance for the
upper end, and S < 1e-8 carries mass 1e-8 at the lower one).

**The table.** p_e is tabulated per row on a grid of Delta in [0, pi * window_pixels] (the
wrap-aware gradient is at most pi per pixel) and of e in [-pi, pi], and read by bilinear
interpolation in (Delta, e). The coefficients c_k(a) come from the closed form above via
:func:`scipy.special.ive` (exponentially scaled Bessel functions, no overflow at large a), on a
fine grid in log a, interpolated linearly. The tests check the table against histograms of
errors drawn by the noise model itself.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import torch
from scipy.special import erfc, ive

from invdiff.errors import ConfigError, DataError
from invdiff_oce.noise import OCEPhaseNoise
from invdiff_oce.phase import to_phase, wrap

LOG_A_RANGE = (-14.0, 14.0)  # ln a: a from 1e-6 (uniform phase) to 1.2e6 (std 6e-4 rad)


def phase_density(t: np.ndarray, a: float | np.ndarray) -> np.ndarray:
    """p(t; a): density on (-pi, pi] of the phase of CN(m, v), m > 0, a = m^2 / v."""
    t, a = np.asarray(t, dtype=np.float64), np.asarray(a, dtype=np.float64)
    c = np.cos(t)
    peak = np.sqrt(np.pi * a) * c * np.exp(-a * np.sin(t) ** 2) * erfc(-np.sqrt(a) * c)
    return (np.exp(-a) + peak) / (2 * np.pi)


def phase_coefficients(a: np.ndarray, k_max: int) -> np.ndarray:
    """c_k(a) = E[cos k t] for k = 0..k_max: (len(a), k_max + 1), float64 (closed form)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 1)
    k = np.arange(k_max + 1, dtype=np.float64).reshape(1, -1)
    return np.sqrt(np.pi * a) / 2 * (ive((k - 1) / 2, a / 2) + ive((k + 1) / 2, a / 2))


class _Coefficients:
    """c_k(a) on a fine grid of ln a, read by linear interpolation (much cheaper than ive)."""

    def __init__(self, k_max: int, n_grid: int = 8001) -> None:
        self.log_a = np.linspace(*LOG_A_RANGE, n_grid)
        self.table = phase_coefficients(np.exp(self.log_a), k_max)

    def __call__(self, a: np.ndarray) -> np.ndarray:
        """(…,) -> (…, k_max + 1)."""
        la = np.clip(np.log(np.maximum(a, 1e-300)), *LOG_A_RANGE)
        pos = (la - self.log_a[0]) / (self.log_a[1] - self.log_a[0])
        i = np.clip(np.floor(pos).astype(np.int64), 0, len(self.log_a) - 2)
        f = (pos - i)[..., None]
        return self.table[i] * (1 - f) + self.table[i + 1] * f


def speckle_nodes(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes S and weights w with sum_q w_q g(S_q) ~ E[g(S)], S ~ Exp(1) (trapezoid in ln S)."""
    log_s = np.linspace(math.log(1e-8), math.log(40.0), n)
    s = np.exp(log_s)
    w = np.exp(-s) * s * (log_s[1] - log_s[0])
    w[[0, -1]] *= 0.5
    return s, w / w.sum()


class PhaseErrorTable:
    """p_e(e | Delta, row) of :class:`OCEPhaseNoise` (module docstring) for an ``height``-row
    image: ``density`` (height, n_delta, n_e) on ``delta`` (n_delta,) x ``e`` (n_e,) grids."""

    def __init__(self, noise: OCEPhaseNoise, height: int, n_e: int = 1024, k_max: int = 512,
                 n_delta: int = 129, n_speckle: int = 160) -> None:
        if not noise.independent_pixels:
            raise ConfigError(
                f"the OCE likelihood is exact only for unsmoothed speckle (pixels independent "
                f"given x); got speckle_smoothing={noise.speckle_smoothing}. Set the noise "
                f"model's speckle_smoothing = 0 (or speckle = false)")
        self.noise, self.height = noise, int(height)
        dmax = math.pi * noise.window_pixels if noise.decorrelation else 0.0
        self.delta = np.linspace(0.0, dmax, n_delta if noise.decorrelation else 2)
        self.e = np.linspace(-math.pi, math.pi, n_e + 1)
        s, w = speckle_nodes(n_speckle) if noise.speckle else (np.ones(1), np.ones(1))
        rows = noise.mean_snr(self.height, torch.zeros((), dtype=torch.float64))
        coef = _Coefficients(k_max)
        rho2 = noise.ramp_correlation(torch.from_numpy(self.delta)).numpy() ** 2
        cos_ke = np.cos(np.outer(np.arange(1, k_max + 1), self.e))  # (k_max, n_e + 1)
        dens = []
        for mean_snr in rows[:, 0].numpy():
            snr = np.maximum(mean_snr * s, noise.snr_floor)  # (Q,)
            a2 = rho2[None, :] / (1 - rho2[None, :] + 1 / snr[:, None])  # (Q, n_delta)
            ck = np.einsum("q,qk,qdk->dk", w, coef(snr), coef(a2))  # (n_delta, k_max + 1)
            dens.append((1 + 2 * ck[:, 1:] @ cos_ke) / (2 * math.pi))
        # a truncated Fourier series can dip below 0 far in a tail that is ~0 anyway
        self.density = torch.from_numpy(np.maximum(np.stack(dens), 1e-300))

    @classmethod
    def lazy(cls, noise: OCEPhaseNoise, height: int) -> Callable[[], PhaseErrorTable]:
        """A function that builds the table on its first call (seconds) and returns that same
        table from then on: chains sharing a noise model share it, and a run whose chains all
        come from a cache never builds it."""
        return functools.cache(lambda: cls(noise, height))

    def log_prob(self, error: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """log p_e per pixel for errors in [-pi, pi] and ramps ``delta`` (…, height, W)."""
        table = self.density.to(error.device)
        pe = (error + math.pi) / (self.e[1] - self.e[0])
        step = self.delta[1] - self.delta[0]  # 0 without decorrelation: one column
        pd = delta / step if step > 0 else torch.zeros_like(delta)
        ie = pe.floor().long().clamp(0, len(self.e) - 2)
        id_ = pd.floor().long().clamp(0, len(self.delta) - 2)
        fe, fd = (pe - ie).clamp(0, 1), (pd - id_).clamp(0, 1)
        row = torch.arange(self.height, device=error.device).view(-1, 1).expand_as(error)

        def at(i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
            return table[row, i, j]

        # interpolate the density, not its log: the mixture is what is linear between nodes
        p = ((1 - fd) * ((1 - fe) * at(id_, ie) + fe * at(id_, ie + 1))
             + fd * ((1 - fe) * at(id_ + 1, ie) + fe * at(id_ + 1, ie + 1)))
        return torch.log(p)


class OCELikelihood:
    """log p(y | x) for one wrapped phase image ``y (1, H, W)`` or its phasor ``(2, H, W)``
    (module docstring).

    ``__call__(x (k, 1, H, W)) -> (k,)`` float64; ``forward`` is the ``oce-phase`` model (a
    black box: only its outputs are used), ``noise`` the ``oce-phase-noise`` model with
    unsmoothed speckle.
    """

    def __init__(self, y: torch.Tensor, forward, noise: OCEPhaseNoise,
                 table: PhaseErrorTable | None = None) -> None:
        y = torch.as_tensor(y, dtype=torch.float64)
        if y.dim() == 4 and y.shape[0] == 1:
            y = y[0]
        if y.dim() != 3 or y.shape[0] not in (1, 2):
            raise DataError(f"y has shape {tuple(y.shape)}; expected one phase image (1, H, W) "
                            f"or its phasor (2, H, W)")
        y = to_phase(y)
        #: the measured pixels (NaN in y: not measured, left out of the likelihood)
        self.measured = ~torch.isnan(y)
        if not bool(self.measured.any()):
            raise DataError("y is all NaN (nothing measured); give at least one measured pixel")
        seen = y[self.measured]
        if not bool(torch.isfinite(seen).all()) or bool((seen.abs() > math.pi + 1e-6).any()):
            raise DataError("y must be a finite wrapped phase in [-pi, pi] (radians), NaN where "
                            "not measured")
        self.y, self.forward, self.noise = torch.nan_to_num(y), forward, noise
        self.table = table or PhaseErrorTable(noise, y.shape[-2])
        if self.table.height != y.shape[-2]:
            raise DataError(f"the table has {self.table.height} rows; y has {y.shape[-2]}")

    def from_phase(self, phi: torch.Tensor) -> torch.Tensor:
        """log p(y | clean wrapped phase phi (k, 1, H, W), or its phasor): (k,)."""
        phi = to_phase(phi.to(torch.float64))
        delta = self.noise.phase_ramp(phi)
        error = wrap(self.y - phi)
        lp = self.table.log_prob(error[:, 0], delta[:, 0])
        return torch.where(self.measured[0], lp, 0.0).flatten(1).sum(1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_phase(self.forward(torch.as_tensor(x, dtype=torch.float64)))
