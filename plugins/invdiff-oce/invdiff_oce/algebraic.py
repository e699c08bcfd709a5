"""The conventional (algebraic) compression-OCE estimate: modulus = stress / strain.

This is quantitative micro-elastography's recipe (Kennedy et al., Biomed. Opt. Express 5,
2113, 2014) on a phase image ``y (B, 1, N, N)`` (row 0 at the top, where the compliant layer of
known modulus sits):

1. local axial strain from the wrap-aware phase gradient (no unwrapping needed):
   eps = (d phi / d z) / (K dz) with K = 4 pi n / lambda_0 and dz the pixel depth,
   the gradient vector-averaged over a Gaussian window of ``smoothing`` pixels
   (:func:`invdiff_oce.phase.axial_phase_gradient`);
2. stress in each column from the layer: sigma(x) = M_layer eps_layer(x), with eps_layer the
   (phasor) mean strain over the increments inside the layer, assumed uniform with depth;
3. modulus = sigma / eps in each pixel. Both are uniaxial: in plane strain, sigma = M eps with
   M = 2 mu (1 + nu) / (1 - nu^2) proportional to the shear modulus mu, so
       mu_hat = mu_layer * eps_layer / eps = mu_layer * g_layer / g,
   a ratio of phase gradients g: K and dz cancel, and only the layer's modulus is needed.
   Regularisation: strains of the wrong sign (tension) or below ``strain_floor`` times the
   layer's are raised to that floor, and mu_hat is clipped to ``clip`` (kPa).

Assumptions the method makes (and where it errs): uniaxial, depth-uniform stress (stress
concentrates around stiff inclusions and is lost to friction-free lateral expansion at the
sides), a bonded layer that deforms like an unconfined sample, and a noise-free gradient.
"""

from __future__ import annotations

import torch

from invdiff.checks import check_finite
from invdiff.errors import ConfigError, DataError
from invdiff_oce.phase import (
    axial_increment_phasors,
    axial_phase_gradient,
    gaussian_smooth,
    to_phase,
)


def layer_rows(grid: int, layer_thickness: float) -> int:
    """Pixel rows fully inside a top layer of ``layer_thickness`` (unit-square depth)."""
    return int(layer_thickness * grid + 1e-9)


def layer_gradient(y: torch.Tensor, rows: int, smoothing: float = 0.0) -> torch.Tensor:
    """Mean phase gradient (rad / pixel) of the layer in each column: (B, 1, 1, W).

    Uses only the increments between rows inside the layer (rows 0..rows-1), averaged as
    phasors (wrap-aware), then smoothed laterally with the same Gaussian as the strain.
    """
    if rows < 2:
        raise ConfigError(
            f"the compliant layer spans {rows} full pixel row(s); at least 2 are needed to "
            f"measure its strain: increase layer_thickness or the grid"
        )
    c, s = axial_increment_phasors(y[..., :rows, :])
    c, s = c.mean(dim=-2, keepdim=True), s.mean(dim=-2, keepdim=True)
    return torch.atan2(gaussian_smooth(s, smoothing), gaussian_smooth(c, smoothing))


def algebraic_estimate(
    y: torch.Tensor,
    layer_modulus: float = 1.0,
    layer_thickness: float = 0.125,
    smoothing: float = 1.0,
    strain_floor: float = 0.05,
    clip: tuple[float, float] = (0.1, 50.0),
) -> torch.Tensor:
    """Shear modulus estimate (kPa) ``(B, 1, N, N)`` from wrapped phases ``y (B, 1, N, N)``
    (or their phasors ``(B, 2, N, N)``).

    Args: ``layer_modulus`` (kPa) and ``layer_thickness`` (unit-square depth) of the compliant
    layer; ``smoothing`` std (pixels) of the Gaussian vector averaging of the gradient (0: none);
    ``strain_floor``: |strain| is at least this fraction of the layer's; ``clip`` (kPa).
    """
    if y.dim() == 3:
        y = y.unsqueeze(0)
    if y.dim() != 4 or y.shape[1] not in (1, 2):
        raise DataError(f"y has shape {tuple(y.shape)}; expected a phase image (B, 1, N, N) or "
                        f"a phasor image (B, 2, N, N)")
    y = to_phase(check_finite(y, "y (phase image)"))
    if not (layer_modulus > 0 and strain_floor > 0 and 0 < clip[0] < clip[1]):
        raise ConfigError(f"need layer_modulus > 0, strain_floor > 0 and 0 < clip[0] < clip[1];"
                          f" got {layer_modulus}, {strain_floor}, {clip}")
    rows = layer_rows(y.shape[-2], layer_thickness)
    g_layer = layer_gradient(y, rows, smoothing)
    g = axial_phase_gradient(y, smoothing)
    # compression makes u_z fall with depth: g and g_layer < 0; a gradient of the other sign or
    # smaller than the floor is noise, where the modulus is not measurable.
    floor = strain_floor * g_layer.abs().clamp_min(1e-12)
    g_eff = torch.maximum(-g, floor)
    mu = layer_modulus * (-g_layer).clamp_min(0) / g_eff
    return mu.clamp(*clip)
