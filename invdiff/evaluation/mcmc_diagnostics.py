r"""MCMC convergence diagnostics: split R-hat and effective sample size, computed by ArviZ
(the ``arviz-stats`` package, its array interface; imported on first use).

Input ``chains`` of shape (m, n) (m chains of n draws of one scalar) or (m, n, d) (d scalars,
each diagnosed separately), m >= 2 chains of n >= 4 draws. Both statistics work on split
chains: each chain is cut into halves, so that a trend within a chain shows up as
disagreement between halves (BDA3, ch. 11.4-11.5; Vehtari et al. 2021).

* Split R-hat (ArviZ ``method="split"``): with W the mean of the within-chain variances and
  B/n the variance of the chain means, var+ = (n - 1)/n W + B/n and R-hat = sqrt(var+ / W)
  (-> 1 as the chains mix).
* Bulk ESS (ArviZ ``method="bulk"``): the draws are first rank-normalised, z = Phi^-1((r - 3/8)
  / (S + 1/4)) with r the rank among all S draws (robust to heavy tails, and unchanged for a
  Gaussian chain); then rho_t = 1 - (W - mean_chains(autocov_t)) / var+ is the combined
  autocorrelation at lag t, tau = -1 + 2 sum_k P_k with P_k = rho_2k + rho_2k+1 summed while
  positive and made monotone (Geyer's initial monotone sequence), and ESS = m n / tau.

For a stationary AR(1) chain x_t = phi x_t-1 + e_t, tau = (1 + phi) / (1 - phi), so
ESS = m n (1 - phi) / (1 + phi).
"""

from __future__ import annotations

import numpy as np


def _as_3d(chains: np.ndarray) -> tuple[np.ndarray, bool]:
    c = np.asarray(chains, dtype=np.float64)
    if c.ndim not in (2, 3):
        raise ValueError(f"chains must be (m, n) or (m, n, d), got shape {c.shape}")
    if c.shape[1] < 4:
        raise ValueError(f"need at least 4 draws per chain, got {c.shape[1]}")
    return (c[..., None], True) if c.ndim == 2 else (c, False)


def split_rhat(chains: np.ndarray) -> np.ndarray | float:
    """Split R-hat of (m, n) or (m, n, d) draws: a float, or (d,) (module docstring)."""
    from arviz_stats.base import array_stats

    c, scalar = _as_3d(chains)
    rhat = np.asarray(array_stats.rhat(c, chain_axis=0, draw_axis=1, method="split"),
                      dtype=np.float64).reshape(c.shape[2])
    return float(rhat[0]) if scalar else rhat


def effective_sample_size(chains: np.ndarray) -> np.ndarray | float:
    """Bulk effective sample size of (m, n) or (m, n, d) draws: a float, or (d,) (module
    docstring)."""
    from arviz_stats.base import array_stats

    c, scalar = _as_3d(chains)
    ess = np.asarray(array_stats.ess(c, chain_axis=0, draw_axis=1, method="bulk"),
                     dtype=np.float64).reshape(c.shape[2])
    return float(ess[0]) if scalar else ess
