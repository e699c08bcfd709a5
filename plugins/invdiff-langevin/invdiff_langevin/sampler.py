r"""Annealed Langevin dynamics (Song & Ermon 2019; NCSNv2, Song & Ermon 2020; cSDM Alg. 1).

For each level :math:`\sigma_i` of the ladder, T Langevin steps

.. math:: x \leftarrow x + a_i\, s(x, y, \sigma_i) + \sqrt{2 a_i}\, z,\qquad
          a_i = \epsilon\, \sigma_i^2 / \sigma_L^2,\quad z \sim \mathcal N(0, I),

then (optionally) the denoising step :math:`x \leftarrow x + \sigma_L^2 s(x, y, \sigma_L)`.
The default :math:`\epsilon` is NCSNv2's technique 4 for the given ladder and T
(:func:`invdiff.sampling.sigmas.langevin_step_size`). Cost: L T (+1) score evaluations per chain.
"""

from __future__ import annotations

from typing import Any

import torch

from invdiff.errors import ConfigError
from invdiff.params import DEFAULT_STEPS_PER_LEVEL
from invdiff.sampling import Chains, LadderSampler
from invdiff.sampling.sigmas import langevin_step_size


class AnnealedLangevin(LadderSampler):
    """Annealed Langevin dynamics; see the module docstring for the maths.

    steps_per_level: T; eps: the step at sigma_L (None: NCSNv2 rule). Other parameters: see
    :class:`invdiff.sampling.LadderSampler`.
    """

    name = "annealed-langevin"

    def __init__(self, steps_per_level: int = DEFAULT_STEPS_PER_LEVEL, eps: float | None = None,
                 **ladder: Any) -> None:
        super().__init__(**ladder)
        if steps_per_level < 1:
            raise ConfigError(f"steps_per_level must be >= 1, got {steps_per_level}")
        if eps is not None and not eps > 0:
            raise ConfigError(f"eps must be > 0, got {eps}")
        self.steps_per_level, self.eps = steps_per_level, eps

    def prepare(self, sigmas: torch.Tensor) -> dict[str, Any]:
        eps = self.eps if self.eps is not None else langevin_step_size(sigmas,
                                                                       self.steps_per_level)
        return {"eps": eps, "steps_per_level": self.steps_per_level}

    def nfe_per_chain(self, n_levels: int) -> int:
        return n_levels * self.steps_per_level + int(self.final_denoise)

    def level(self, chains: Chains, i: int) -> None:
        """T steps of x <- x + a s(x, y, sigma_i) + sqrt(2 a) z, a = eps (sigma_i / sigma_L)^2."""
        sigma = chains.sigma(i)
        a = chains.settings["eps"] * (sigma / chains.sigmas[-1]) ** 2
        for _ in range(self.steps_per_level):
            chains.langevin(sigma, a)
