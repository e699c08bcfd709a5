"""A trained score model: a score network with its data normalisation and noise ladder.

:class:`ScoreModel` is what training returns and checkpoints load. Its ``forward`` has the
ScoreNet signature in *normalised* units (x_n, y_n, sigma); :func:`invdiff.sample_posterior`
normalises y before sampling and maps the samples back to physical units.
"""

from __future__ import annotations

import torch

from invdiff.data import Normalization


class ScoreModel(torch.nn.Module):
    """``net`` plus ``normalization`` (:class:`Normalization`) and default ``sigmas``.

    x_shape, y_shape: shapes of one x and one y, channels first. experiment: the validated
    experiment config it was trained with (JSON, as its checkpoint records it), or None: what
    :func:`invdiff.infer` rebuilds the problem (prior, forward and noise model) from.
    """

    def __init__(
        self,
        net: torch.nn.Module,
        normalization: Normalization,
        sigmas: torch.Tensor,
        experiment: dict | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.normalization = normalization
        self.register_buffer("sigmas", torch.as_tensor(sigmas, dtype=torch.float32).clone())
        self.x_shape = tuple(net.x_shape)
        self.y_shape = tuple(net.y_shape)
        self.experiment = experiment

    def forward(self, x: torch.Tensor, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.net(x, y, sigma)
