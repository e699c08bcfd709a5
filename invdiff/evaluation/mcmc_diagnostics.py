"""MCMC convergence diagnostics: split R-hat and effective sample size (BDA3, ch. 11.4-11.5).

Input ``chains`` of shape (m, n) (m chains of n draws of one scalar) or (m, n, d) (d scalars,
each diagnosed separately). Both statistics work on split chains: each chain is cut into halves,
so that a trend within a chain shows up as disagreement between halves.

* W = mean of the within-chain variances, B/n = variance of the chain means,
  var+ = (n - 1)/n W + B/n, and R-hat = sqrt(var+ / W) (-> 1 as the chains mix).
* rho_t = 1 - (W - mean_chains(autocov_t)) / var+ is the combined autocorrelation at lag t;
  tau = -1 + 2 sum_k P_k with P_k = rho_2k + rho_2k+1 summed while positive and made
  monotone (Geyer's initial monotone sequence), and ESS = m n / tau.
For an AR(1) chain x_t = phi x_t-1 + e_t, tau = (1 + phi) / (1 - phi).
"""

from __future__ import annotations

import numpy as np


def _split(chains: np.ndarray) -> np.ndarray:
    """(m, n, d) -> (2m, n // 2, d): first and second halves as separate chains."""
    half = chains.shape[1] // 2
    if half < 2:
        raise ValueError(f"need at least 4 draws per chain, got {chains.shape[1]}")
    return np.concatenate([chains[:, :half], chains[:, -half:]], axis=0)


def _as_3d(chains: np.ndarray) -> tuple[np.ndarray, bool]:
    c = np.asarray(chains, dtype=np.float64)
    if c.ndim == 2:
        return c[..., None], True
    if c.ndim != 3:
        raise ValueError(f"chains must be (m, n) or (m, n, d), got shape {c.shape}")
    return c, False


def _variances(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """W (d,) and var+ (d,) of split chains c (m, n, d)."""
    n = c.shape[1]
    w = c.var(axis=1, ddof=1).mean(axis=0)
    b_over_n = c.mean(axis=1).var(axis=0, ddof=1)
    return w, (n - 1) / n * w + b_over_n


def split_rhat(chains: np.ndarray) -> np.ndarray | float:
    """Split R-hat of (m, n) or (m, n, d) draws: a float, or (d,)."""
    c, scalar = _as_3d(chains)
    w, var_plus = _variances(_split(c))
    rhat = np.sqrt(var_plus / w)
    return float(rhat[0]) if scalar else rhat


def _autocovariance(c: np.ndarray) -> np.ndarray:
    """Biased autocovariance of each chain along axis 1 via FFT: (m, n, d) -> (m, n, d)."""
    n = c.shape[1]
    x = c - c.mean(axis=1, keepdims=True)
    f = np.fft.rfft(x, n=2 * n, axis=1)
    return np.fft.irfft(f * np.conj(f), n=2 * n, axis=1)[:, :n] / n


def effective_sample_size(chains: np.ndarray) -> np.ndarray | float:
    """Bulk effective sample size of (m, n) or (m, n, d) draws: a float, or (d,)."""
    c, scalar = _as_3d(chains)
    c = _split(c)
    m, n, d = c.shape
    w, var_plus = _variances(c)
    acov = _autocovariance(c).mean(axis=0) * n / (n - 1)  # (n, d), unbiased at lag 0
    rho = 1.0 - (w - acov) / var_plus
    ess = np.empty(d)
    for k in range(d):
        pairs = rho[: 2 * (n // 2), k].reshape(-1, 2).sum(axis=1)
        positive = np.flatnonzero(pairs <= 0)
        pairs = pairs[: positive[0]] if positive.size else pairs
        pairs = np.minimum.accumulate(pairs)
        tau = -1.0 + 2.0 * pairs.sum()
        ess[k] = m * n / max(tau, 1.0 / np.log10(m * n))  # Stan's cap on antithetic chains
    return float(ess[0]) if scalar else ess
