r"""Predictor-corrector sampling of the variance-exploding SDE (Song et al. 2021, Alg. 2-4).

At each level :math:`\sigma_i` (with :math:`\sigma_{L+1} = 0`):

* corrector, K times: a Langevin step whose size follows a target signal-to-noise ratio r,

  .. math:: x \leftarrow x + a\, s(x, y, \sigma_i) + \sqrt{2a}\, z,\qquad
            a = 2 \bigl(r \lVert z \rVert / \lVert s \rVert\bigr)^2 \ \text{(per chain)};

* predictor, the reverse-diffusion step from :math:`\sigma_i` to :math:`\sigma_{i+1}`,

  .. math:: x \leftarrow x + (\sigma_i^2 - \sigma_{i+1}^2)\, s(x, y, \sigma_i)
            + \sqrt{\sigma_i^2 - \sigma_{i+1}^2}\, z.

With final denoising the last predictor (from :math:`\sigma_L` to 0) drops its noise term, which
is the shared Tweedie step :math:`x + \sigma_L^2 s(x, y, \sigma_L)` (Song et al.'s
``noise_removal``). Cost: L (K + 1) score evaluations per chain either way.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch

from invdiff.errors import ConfigError
from invdiff.sampling import Chains, LadderSampler, snr_step_size


class PredictorCorrector(LadderSampler):
    """Reverse-diffusion predictor + Langevin corrector; see the module docstring.

    snr: the corrector's target signal-to-noise ratio r; corrector_steps: K (0: predictor
    only). Other parameters: see :class:`invdiff.sampling.LadderSampler`.
    """

    name = "predictor-corrector"

    def __init__(self, snr: float = 0.16, corrector_steps: int = 1, **ladder: Any) -> None:
        super().__init__(**ladder)
        if not snr > 0:
            raise ConfigError(f"snr must be > 0, got {snr}")
        if corrector_steps < 0:
            raise ConfigError(f"corrector_steps must be >= 0, got {corrector_steps}")
        self.snr, self.corrector_steps = snr, corrector_steps

    def prepare(self, sigmas: torch.Tensor) -> dict[str, Any]:
        return {"snr": self.snr, "corrector_steps": self.corrector_steps}

    def nfe_per_chain(self, n_levels: int) -> int:
        return n_levels * (self.corrector_steps + 1)

    def level(self, chains: Chains, i: int) -> None:
        """K corrector steps at sigma_i, then x <- x + d s + sqrt(d) z, d = sigma_i^2 -
        sigma_{i+1}^2 (skipped at the last level when final denoising replaces it)."""
        sigma, sigma_next = chains.sigma(i), chains.sigma(i + 1)
        for _ in range(self.corrector_steps):
            chains.langevin(sigma, partial(snr_step_size, snr=self.snr))
        if sigma_next == 0.0 and self.final_denoise:
            return
        d = sigma**2 - sigma_next**2
        chains.move(chains.x + d * chains.score(sigma) + d**0.5 * chains.noise(), "predictor")
