"""Wrapped phases: the wrap operator, separable Gaussian smoothing and the wrap-aware axial
phase gradient shared by the noise model and the algebraic estimate.

Images are ``(B, C, H, W)`` with row 0 at the top: depth z (along the OCT beam) grows with the
row index.
"""

from __future__ import annotations

import math

import torch

TWO_PI = 2.0 * math.pi


def wrap(a: torch.Tensor) -> torch.Tensor:
    """The principal value of a phase, in (-pi, pi]: ``wrap(a) = a - 2 pi k`` with integer k.

    ``pi - ((pi - a) mod 2 pi)`` lies in (-pi, pi] exactly; the ``where`` catches the one case
    rounding breaks (``mod`` returning 2 pi for a tiny negative argument).
    """
    r = math.pi - torch.remainder(math.pi - a, TWO_PI)
    return torch.where(r <= -math.pi, r + TWO_PI, r)


def to_phasor(phi: torch.Tensor) -> torch.Tensor:
    """Phase images ``(B, 1, H, W)`` -> their phasors ``(B, 2, H, W)`` = (cos phi, sin phi):
    the encoding without the 2 pi jumps of a wrapped phase (``output="phasor"``)."""
    return torch.cat([torch.cos(phi), torch.sin(phi)], dim=1)


def to_phase(y: torch.Tensor) -> torch.Tensor:
    """A measurement as wrapped phase ``(B, 1, H, W)``: a phase image is returned as is, a
    phasor image (2 channels, cos and sin) is turned back by atan2 (its length is ignored)."""
    if y.shape[-3] == 1:
        return y
    if y.shape[-3] == 2:
        return torch.atan2(y[..., 1:2, :, :], y[..., 0:1, :, :])
    raise ValueError(f"expected a phase (1 channel) or phasor (2 channels) image, got shape "
                     f"{tuple(y.shape)}")


def gaussian_smooth(t: torch.Tensor, std: float) -> torch.Tensor:
    """Separable Gaussian blur of ``t (B, C, H, W)`` with std ``std`` pixels (0: unchanged).

    The kernel (radius ceil(3 std)) is normalised to sum 1, and the borders are replicated, so a
    constant image stays constant and a field of mean m keeps mean m in the interior.
    """
    if std <= 0:
        return t
    radius = max(1, math.ceil(3 * std))
    k = torch.arange(-radius, radius + 1, dtype=t.dtype, device=t.device)
    k = torch.exp(-0.5 * (k / std) ** 2)
    k = k / k.sum()
    b, c, h, w = t.shape
    out = t.reshape(b * c, 1, h, w)
    out = torch.nn.functional.pad(out, (radius, radius, radius, radius), mode="replicate")
    out = torch.nn.functional.conv2d(out, k.view(1, 1, -1, 1))
    out = torch.nn.functional.conv2d(out, k.view(1, 1, 1, -1))
    return out.reshape(b, c, h, w)


def axial_increment_phasors(phi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit phasors of the row-to-row phase increments, ``exp(i (phi[k+1] - phi[k]))``, as
    (cos, sin) pairs ``(B, C, H-1, W)``. A phasor does not see the 2 pi jumps of a wrapped
    phase, so every later average is wrap-aware."""
    d = phi[..., 1:, :] - phi[..., :-1, :]
    return torch.cos(d), torch.sin(d)


def axial_phase_gradient(phi: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Wrap-aware d phi / d z in rad per pixel at the pixel centres: ``(B, C, H, W)``.

    Pixel i takes the phasor mean of the increments on either side (i-1 -> i and i -> i+1;
    one-sided on the first and last rows), optionally smoothed with a Gaussian of std
    ``smoothing`` pixels (vector averaging), and returns its angle. For a wrapped phase whose
    true increments stay below pi per pixel this equals the central difference of the unwrapped
    phase, whatever the wraps; larger increments alias (Nyquist limit of the phase gradient).
    """
    if phi.shape[-2] < 2:
        raise ValueError(f"need at least 2 rows for a gradient, got shape {tuple(phi.shape)}")
    c, s = axial_increment_phasors(phi)
    c, s = _centred(c), _centred(s)
    c, s = gaussian_smooth(c, smoothing), gaussian_smooth(s, smoothing)
    return torch.atan2(s, c)


def _centred(t: torch.Tensor) -> torch.Tensor:
    """Increments (.., H-1, W) between rows -> pixel centres (.., H, W): the mean of the two
    neighbouring increments inside, the single one on the first and last rows."""
    inner = 0.5 * (t[..., :-1, :] + t[..., 1:, :])
    return torch.cat([t[..., :1, :], inner, t[..., -1:, :]], dim=-2)
