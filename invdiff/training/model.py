"""A trained score model: a score network with its data normalisation and noise ladder.

:class:`ScoreModel` is what training returns and checkpoints load. Its ``forward`` has the
ScoreNet signature in *normalised* units (x_n, y_n, sigma); :func:`invdiff.sample_posterior`
normalises y before sampling and maps the samples back to physical units.

A model trained with ``training.masking`` (:mod:`invdiff.data.masking`) takes measurements with
gaps: NaN entries of y mean "not measured". Its net was built for ``(C + 1, H, W)`` (y and its
mask); the model's own ``y_shape`` is the measurement's ``(C, H, W)``, and its ``forward``
turns a y with NaN into the net's input (:func:`~invdiff.data.masking.masked_input`).
"""

from __future__ import annotations

import torch

from invdiff.data import Normalization
from invdiff.data.masking import masked_input
from invdiff.errors import ConfigError


class ScoreModel(torch.nn.Module):
    """``net`` plus ``normalization`` (:class:`Normalization`) and default ``sigmas``.

    x_shape, y_shape: shapes of one x and one y, channels first. experiment: the validated
    experiment config it was trained with (JSON, as its checkpoint records it), or None: what
    :func:`invdiff.infer` rebuilds the problem (prior, forward and noise model) from.
    masking: whether the net was trained for measurements with gaps (its y carries one mask
    channel more than the measurement); None: as the experiment's ``training.masking`` says.
    """

    def __init__(
        self,
        net: torch.nn.Module,
        normalization: Normalization,
        sigmas: torch.Tensor,
        experiment: dict | None = None,
        masking: bool | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.normalization = normalization
        self.register_buffer("sigmas", torch.as_tensor(sigmas, dtype=torch.float32).clone())
        self.x_shape = tuple(net.x_shape)
        self.experiment = experiment
        if masking is None:
            masking = bool(((experiment or {}).get("training") or {}).get("masking", False))
        #: trained for measurements with gaps: NaN entries of y are "not measured"
        self.masking = bool(masking)
        y_shape = tuple(net.y_shape)
        if self.masking:
            if y_shape[0] < 2:
                raise ConfigError(f"a model trained with training.masking needs a net built for "
                                  f"y_shape (C + 1, H, W) (the measurement and its mask); this "
                                  f"net takes y of shape {y_shape}")
            y_shape = (y_shape[0] - 1, *y_shape[1:])
        self.y_shape = y_shape

    def forward(self, x: torch.Tensor, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The net's score for ``x_n``, ``y_n (B, *y_shape)``, ``sigma``; for a masked model
        y may hold NaN (not measured), refused where a measurement has no entry left."""
        if self.masking:
            y = masked_input(y)
        return self.net(x, y, sigma)
