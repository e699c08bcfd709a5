"""What every conditional score network shares: input checks, conditioning on y, speed switches.

A concrete net subclasses :class:`ConditionalScoreNet` and implements two methods:

* ``body(h, *cond) -> F``: the trainable network on the stacked input ``h = [x_in, y_r]``
  of shape ``(B, Cx + Cy, H, W)``, returning ``(B, Cx, H, W)``; it runs under the
  ``channels_last`` / ``bf16`` switches (see :meth:`ConditionalScoreNet.run_body`);
* ``score(x, y, sigma) -> s``: the output parameterisation, i.e. how the score is formed from
  ``body``'s output, in x's dtype; :meth:`ConditionalScoreNet.parameterised_score` holds the
  two that the bundled nets offer (``"ncsn"``: ``F / sigma``; ``"edm"``: the EDM denoiser).

Nets that see the noise level use :class:`FourierEmbedding` of ``c_noise = ln(sigma) / 4``.

Conditioning on y is by concatenation on channels: y is resampled bilinearly to x's grid when
its grid differs (``y_r``), so measurements on another grid (e.g. nodal displacements on
``(N+1) x (N+1)`` for an ``N x N`` modulus field, or a subsampled image) need no extra code.
"""

from __future__ import annotations

import abc
import math

import torch
import torch.nn.functional as F
from einops import rearrange

from invdiff.errors import ConfigError, DataError
from invdiff.interfaces import ScoreNet

__all__ = ["OUTPUTS", "ConditionalScoreNet", "FourierEmbedding", "check_output", "check_shape",
           "resample_to"]

OUTPUTS = ("edm", "ncsn")


def check_output(output: str) -> str:
    """Return ``output`` if it names a parameterisation in :data:`OUTPUTS`, else raise."""
    if output not in OUTPUTS:
        raise ConfigError(f"output = {output!r}: choose one of {', '.join(map(repr, OUTPUTS))}")
    return output


def check_shape(shape: tuple[int, ...], name: str) -> tuple[int, int, int]:
    """Return ``shape`` as a ``(C, H, W)`` tuple of positive ints, or raise :class:`ConfigError`."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(
            f"{name} = {shape}: give the shape of one item as (channels, H, W), all positive"
        )
    return shape  # type: ignore[return-value]


def resample_to(y: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resampling of ``y (B, C, Hy, Wy)`` to ``(B, C, *size)``; identity if equal.

    ``align_corners=False``: pixels are treated as cells covering the same domain, which is
    the convention of the element-wise fields of this project.
    """
    if tuple(y.shape[-2:]) == tuple(size):
        return y
    return F.interpolate(y, size=size, mode="bilinear", align_corners=False)


class FourierEmbedding(torch.nn.Module):
    """Fourier features of the noise input ``c`` (``c = ln(sigma) / 4``), then an MLP.

    ``e(c) = MLP([cos(w_k c), sin(w_k c)]_k)`` with ``n_freq`` angular frequencies ``w_k``
    spaced geometrically from 1 to ``max_freq``: for sigma in [1e-3, 1e2] the input c spans
    about [-1.7, 1.2], so the lowest frequency sees the whole range (no wrap-around) and the
    highest resolves ratios of sigma of a few per cent. Shapes: ``c (B,) -> (B, dim)``.
    """

    def __init__(self, dim: int, n_freq: int = 32, max_freq: float = 100.0) -> None:
        super().__init__()
        freqs = torch.exp(torch.linspace(0.0, math.log(max_freq), n_freq))
        self.register_buffer("freqs", freqs, persistent=False)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(2 * n_freq, dim), torch.nn.SiLU(),
                                       torch.nn.Linear(dim, dim))

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        phase = c.float()[:, None] * self.freqs[None, :]
        return self.mlp(torch.cat([phase.cos(), phase.sin()], dim=1))


class ConditionalScoreNet(ScoreNet, abc.ABC):
    """Base of the conditional score networks ``s(x, y, sigma) ~ grad_x log p_sigma(x | y)``.

    Shapes: ``x (B, *x_shape)``, ``y (B, *y_shape)``, ``sigma (B,)`` (a scalar or a
    one-element tensor is broadcast over the batch); the output is shaped like x, in x's dtype
    and on x's device.

    channels_last: convert the network input to the channels_last memory format (faster
        convolutions on recent GPUs and on CPUs with oneDNN); the output is returned in the
        default contiguous format.
    bf16: run :meth:`body` under ``torch.autocast(dtype=torch.bfloat16)`` on the input's
        device; the parameterisation (division by sigma, EDM scalings) stays in x's dtype.
    """

    def __init__(
        self,
        x_shape: tuple[int, int, int],
        y_shape: tuple[int, int, int],
        channels_last: bool = False,
        bf16: bool = False,
    ) -> None:
        super().__init__()
        self.x_shape = check_shape(x_shape, "x_shape")
        self.y_shape = check_shape(y_shape, "y_shape")
        self.channels_last = bool(channels_last)
        self.bf16 = bool(bf16)

    @property
    def in_channels(self) -> int:
        """Channels of the stacked input ``[x, y]``."""
        return self.x_shape[0] + self.y_shape[0]

    @property
    def out_channels(self) -> int:
        return self.x_shape[0]

    # -- the public call ---------------------------------------------------------------------
    def forward(self, x: torch.Tensor, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Check the inputs, then return :meth:`score` (shaped like x)."""
        sigma = self.check_inputs(x, y, sigma)
        return self.score(x, y.to(x.dtype), sigma)

    def check_inputs(self, x: torch.Tensor, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Raise :class:`DataError` on wrong shapes; return sigma as ``(B, 1, 1, 1)`` in x's
        dtype and device (so it broadcasts against x)."""
        for t, name, shape in ((x, "x", self.x_shape), (y, "y", self.y_shape)):
            if not isinstance(t, torch.Tensor):
                raise DataError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
            if t.dim() != 4 or tuple(t.shape[1:]) != shape:
                raise DataError(
                    f"{name} has shape {tuple(t.shape)}; this net was built for "
                    f"{name} of shape (B, {', '.join(map(str, shape))}). Pass a batch, or build "
                    f"the net with {name}_shape={tuple(t.shape[1:])}"
                )
        if y.shape[0] != x.shape[0]:
            raise DataError(
                f"x has batch size {x.shape[0]} but y has {y.shape[0]}: give one y per x "
                f"(repeat y with y.expand(B, ...) to condition every x on the same y)"
            )
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if sigma.numel() == 1:
            sigma = sigma.reshape(1).expand(x.shape[0])
        if sigma.dim() != 1 or sigma.shape[0] != x.shape[0]:
            raise DataError(
                f"sigma has shape {tuple(sigma.shape)}; give one noise level per x, shape "
                f"({x.shape[0]},), or a scalar"
            )
        return rearrange(sigma, "b -> b 1 1 1")

    # -- what subclasses provide -------------------------------------------------------------
    @abc.abstractmethod
    def score(self, x: torch.Tensor, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The score from checked inputs; ``sigma`` is ``(B, 1, 1, 1)``."""

    @abc.abstractmethod
    def body(self, h: torch.Tensor, *cond: torch.Tensor) -> torch.Tensor:
        """The network proper: ``h (B, Cx + Cy, H, W)`` (plus optional conditioning tensors,
        e.g. a noise embedding) to ``(B, Cx, H, W)``."""

    # -- shared mechanics --------------------------------------------------------------------
    def run_body(self, x_in: torch.Tensor, y: torch.Tensor, *cond: torch.Tensor) -> torch.Tensor:
        """``body([x_in, resample(y)], *cond)`` under the speed switches, in ``x_in``'s dtype.

        ``x_in`` is x as the network sees it (x itself, or ``c_in x`` for EDM).
        """
        h = torch.cat([x_in, resample_to(y, tuple(x_in.shape[-2:]))], dim=1)
        if self.channels_last:
            h = h.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=h.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.body(h, *cond)
        return out.to(x_in.dtype).contiguous()

    def parameterised_score(self, x: torch.Tensor, y: torch.Tensor, sigma: torch.Tensor,
                            output: str, *cond: torch.Tensor) -> torch.Tensor:
        r"""The score from ``F = body`` under the parameterisation ``output``; ``sigma (B,1,1,1)``.

        * ``"ncsn"`` (Song & Ermon): ``s = F(x, y, *cond) / sigma``.
        * ``"edm"`` (Karras et al. 2022, sigma_data = 1 since the data are normalised)::

              c_in = 1 / sqrt(1 + sigma^2),  c_skip = 1 / (1 + sigma^2),
              c_out = sigma / sqrt(1 + sigma^2),
              D(x) = c_skip x + c_out F(c_in x, y, *cond),  s = (D(x) - x) / sigma^2
                   = (F / sigma - x / sqrt(1 + sigma^2)) / sqrt(1 + sigma^2).

          The last form is what is computed (no cancellation of ``D - x`` at small sigma). The
          network's input and its regression target ``(x0 - c_skip x) / c_out`` then have unit
          variance at every sigma, and ``F = 0`` gives the score of N(0, I), ``-x / (1 +
          sigma^2)``: a net starts at the right answer for normalised data and learns the
          correction.

        Either way the DSM loss ``sigma^2 ||s + z / sigma||^2`` is a regression on F: with unit
        weight under "ncsn"; under "edm" ``||D - x||^2 / sigma^2 = ||F - target||^2 / (1 +
        sigma^2)``, so the large levels count little unless the trainer's
        ``loss_weighting = "edm"`` multiplies them back by ``1 + sigma^2``.
        """
        if output == "ncsn":
            return self.run_body(x, y, *cond) / sigma
        root = torch.sqrt(1 + sigma.square())
        return (self.run_body(x / root, y, *cond) / sigma - x / root) / root

    def extra_repr(self) -> str:
        return (f"x_shape={self.x_shape}, y_shape={self.y_shape}, "
                f"channels_last={self.channels_last}, bf16={self.bf16}")
