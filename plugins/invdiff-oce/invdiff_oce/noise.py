"""OCT phase-difference noise: speckle- and depth-dependent SNR, strain decorrelation.

For each clean wrapped phase image ``phi (B, C, H, W)`` one noisy measurement is drawn:

1. Intensity map. Fully developed speckle has an exponential intensity, S ~ Exp(1) per pixel
   (drawn as |g|^2 / 2 with g a standard complex Gaussian); it is blurred with a Gaussian of
   ``speckle_smoothing`` pixels (the speckle grain spans a few pixels; the normalised kernel
   keeps the mean 1) and attenuated with depth (Beer-Lambert, round trip), so that
   ``I = S * 10^(-snr_drop_db / 10 * z)`` with z = (row + 1/2) / H in (0, 1).
2. SNR = snr0 * I: snr0 is the mean SNR at the top, ``snr_drop_db`` the mean loss to the bottom.
3. Decorrelation. The phase ramp across the axial processing window (``window_pixels``) is
   Delta = window_pixels * |d phi / d z| (rad, from the wrap-aware gradient of the clean phase,
   :func:`invdiff_oce.phase.axial_phase_gradient`, i.e. proportional to the local axial
   strain); the two acquisitions keep a correlation rho = |sinc(Delta / 2)| = |sin(Delta / 2) /
   (Delta / 2)|, the magnitude of the mean of e^{i t Delta}, t ~ U(-1/2, 1/2).
4. Complex signals, unit amplitude before compression:
       z1 = 1 + n1,    z2 = rho + sqrt(1 - rho^2) w + n2,
   n1, n2 ~ CN(0, 1 / SNR) (additive noise), w ~ CN(0, 1) (the decorrelated speckle).
   The phase error is e = arg(z2 conj(z1)) and the measurement y = wrap(phi + e)
   (= wrap(phi_true + e) since wrap(wrap(a) + e) = wrap(a + e)).

A phasor image ``(B, 2, H, W)`` (the forward model's ``output="phasor"``) is read as its phase
and the noisy measurement returned as a phasor again; the random draws are the same, so the
two encodings of one seed carry the same measurement.

The error is symmetric, non-Gaussian (uniform-like where the SNR is low, von-Mises-like where it
is high) and non-additive (it depends on phi through rho). Its mean resultant length is, in
closed form (:mod:`invdiff_oce.circular`), R = R1(SNR) R1(rho^2 / (1 - rho^2 + 1 / SNR)), which
tends to a circular std of 1 / sqrt(SNR) at a high SNR without decorrelation.
"""

from __future__ import annotations

import math

import torch

from invdiff.checks import check_finite, randn
from invdiff.errors import ConfigError, DataError
from invdiff.interfaces import NoiseModel
from invdiff_oce.phase import axial_phase_gradient, gaussian_smooth, to_phase, to_phasor, wrap


class OCEPhaseNoise(NoiseModel):
    """Speckle/SNR-dependent phase noise with strain decorrelation (module docstring).

    ``draw(y_clean, generator)`` returns the noisy phase and its ingredients (snr, rho, error)
    for diagnostics; ``__call__`` returns the noisy phase only.
    """

    def __init__(
        self,
        snr0: float = 300.0,
        snr_drop_db: float = 10.0,
        speckle: bool = True,
        speckle_smoothing: float = 1.0,
        decorrelation: bool = True,
        window_pixels: float = 1.0,
        snr_floor: float = 1e-3,
    ) -> None:
        if not (snr0 > 0 and snr_floor > 0 and window_pixels > 0):
            raise ConfigError(f"snr0 ({snr0}), snr_floor ({snr_floor}) and window_pixels "
                              f"({window_pixels}) must be positive")
        if snr_drop_db < 0 or speckle_smoothing < 0:
            raise ConfigError(f"snr_drop_db ({snr_drop_db}) and speckle_smoothing "
                              f"({speckle_smoothing}) must be >= 0")
        self.snr0, self.snr_drop_db, self.snr_floor = float(snr0), float(snr_drop_db), snr_floor
        self.speckle, self.speckle_smoothing = bool(speckle), float(speckle_smoothing)
        self.decorrelation, self.window_pixels = bool(decorrelation), float(window_pixels)

    @property
    def independent_pixels(self) -> bool:
        """True when the pixels' errors are independent given the clean phase (no speckle, or
        unsmoothed speckle): the likelihood then factorises per pixel (invdiff_oce.likelihood)."""
        return not self.speckle or self.speckle_smoothing == 0

    def mean_snr(self, height: int, like: torch.Tensor) -> torch.Tensor:
        """Mean SNR per row, snr0 * 10^(-snr_drop_db / 10 * z): (height, 1)."""
        z = (torch.arange(height, dtype=like.dtype, device=like.device) + 0.5) / height
        return (self.snr0 * 10.0 ** (-self.snr_drop_db / 10.0 * z)).view(height, 1)

    def snr_map(self, normals: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """SNR (B, C, H, W) from two standard normal fields ``normals (2, B, C, H, W)``."""
        speckle = 0.5 * (normals[0] ** 2 + normals[1] ** 2) if self.speckle else 1.0
        speckle = gaussian_smooth(speckle * torch.ones_like(like), self.speckle_smoothing)
        return (speckle * self.mean_snr(like.shape[-2], like)).clamp_min(self.snr_floor)

    def phase_ramp(self, y_clean: torch.Tensor) -> torch.Tensor:
        """Delta = window_pixels * |wrap-aware d phi / d z| (rad; 0 without decorrelation):
        (B, C, H, W) for a clean phase (B, C, H, W)."""
        if not self.decorrelation:
            return torch.zeros_like(y_clean)
        return self.window_pixels * axial_phase_gradient(y_clean).abs()

    @staticmethod
    def ramp_correlation(delta: torch.Tensor) -> torch.Tensor:
        """rho = |sinc(Delta / 2)| = |sin(Delta / 2) / (Delta / 2)| for phase ramps Delta."""
        return torch.sinc(delta / (2 * math.pi)).abs()  # torch.sinc(t) = sin(pi t) / (pi t)

    def correlation(self, y_clean: torch.Tensor) -> torch.Tensor:
        """rho = |sinc(Delta / 2)| of :meth:`phase_ramp`: (B, C, H, W)."""
        return self.ramp_correlation(self.phase_ramp(y_clean))

    def draw(self, y_clean: torch.Tensor, generator: torch.Generator | None = None
             ) -> dict[str, torch.Tensor]:
        """One noisy measurement and its ingredients: ``y``, ``snr``, ``rho``, ``error``."""
        encoded = self._check(y_clean)
        y_clean = to_phase(encoded)
        z = randn((8, *y_clean.shape), generator, y_clean)  # one draw: reproducible by seed
        snr = self.snr_map(z[:2], y_clean)
        rho = self.correlation(y_clean)
        s = torch.rsqrt(2 * snr)  # std of the real and imaginary parts of CN(0, 1 / SNR)
        decor = torch.sqrt((1 - rho**2).clamp_min(0)) / math.sqrt(2)
        z1 = torch.complex(1 + s * z[2], s * z[3])
        z2 = torch.complex(rho + decor * z[4] + s * z[6], decor * z[5] + s * z[7])
        error = torch.angle(z2 * z1.conj())
        y = wrap(y_clean + error)
        return {"y": to_phasor(y) if encoded.shape[1] == 2 else y, "snr": snr, "rho": rho,
                "error": error}

    def __call__(self, y_clean: torch.Tensor, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
        return self.draw(y_clean, generator)["y"]

    @staticmethod
    def _check(y_clean: torch.Tensor) -> torch.Tensor:
        if not isinstance(y_clean, torch.Tensor) or y_clean.dim() != 4 or y_clean.shape[1] > 2:
            shape = tuple(y_clean.shape) if isinstance(y_clean, torch.Tensor) else type(y_clean)
            raise DataError(f"y_clean must be a phase (B, 1, H, W) or phasor (B, 2, H, W) image "
                            f"batch, got {shape}")
        if not y_clean.is_floating_point():
            raise DataError(f"y_clean must be floating point (radians), got {y_clean.dtype}")
        if y_clean.shape[-2] < 2:
            raise DataError(f"y_clean needs at least 2 rows (depth) for the strain decorrelation,"
                            f" got shape {tuple(y_clean.shape)}")
        return check_finite(y_clean, "y_clean (clean phase)")

    def __repr__(self) -> str:
        return (f"OCEPhaseNoise(snr0={self.snr0}, snr_drop_db={self.snr_drop_db}, "
                f"speckle={self.speckle}, decorrelation={self.decorrelation})")
