"""Circular statistics of the OCT phase noise, in closed form.

A complex OCT signal ``s = A e^{i theta} + n`` with circular complex Gaussian noise n,
``E|n|^2 = A^2 / SNR``, has a phase error ``delta = arg(s) - theta`` whose mean resultant length
is (the phase of a sinusoid in Gaussian noise, e.g. Middleton 1960; Goodman, Statistical Optics)

    R1(SNR) = E[cos delta] = sqrt(pi SNR) / 2 * exp(-SNR / 2) * (I0(SNR / 2) + I1(SNR / 2)),

with I0, I1 modified Bessel functions (R1 -> 1 - 1 / (4 SNR) for a large SNR, -> 0 for SNR -> 0).
The phase *difference* of two independent measurements has resultant ``R1(SNR_1) R1(SNR_2)``
(E[e^{i(d1 - d2)}] factorises), and the circular standard deviation is ``sqrt(-2 ln R)``; at a
high SNR it tends to ``1 / sqrt(SNR)`` for two measurements of equal SNR.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import ive


def phase_resultant(snr: np.ndarray | float) -> np.ndarray:
    """R1(SNR) above, elementwise (float64). ``ive`` (exponentially scaled Bessel functions)
    absorbs exp(-SNR / 2), so large SNRs do not overflow."""
    g = np.asarray(snr, dtype=np.float64)
    return math.sqrt(math.pi) / 2 * np.sqrt(g) * (ive(0, g / 2) + ive(1, g / 2))


def difference_resultant(snr_1: np.ndarray | float, snr_2: np.ndarray | float) -> np.ndarray:
    """Mean resultant length of the phase difference of two independent measurements."""
    return phase_resultant(snr_1) * phase_resultant(snr_2)


def circular_std(errors: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sample circular standard deviation ``sqrt(-2 ln |mean(e^{i errors})|)`` (radians)."""
    c = torch.cos(errors).mean() if dim is None else torch.cos(errors).mean(dim)
    s = torch.sin(errors).mean() if dim is None else torch.sin(errors).mean(dim)
    return torch.sqrt(-2 * torch.log(torch.hypot(c, s)))
