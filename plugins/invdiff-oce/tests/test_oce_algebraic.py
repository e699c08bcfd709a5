"""The algebraic estimate modulus = stress / strain: exact on a homogeneous FEM sample and on a
1-D layered column (closed form), blind to phase wraps, and its errors."""

import math

import numpy as np
import pytest
import torch
from invdiff_oce.algebraic import algebraic_estimate, layer_rows
from invdiff_oce.forward import OCEPhaseForward
from invdiff_oce.phase import wrap

from invdiff.errors import ConfigError, DataError

N = 16


@pytest.mark.parametrize("pressure", [0.003, 0.02])  # max phase 1.2 pi and 7.9 pi
def test_homogeneous_fem_sample_recovers_its_modulus(pressure):
    """A uniform sample (layer included) compressed by the FEM: every pixel gets mu back."""
    mu = 2.7
    fwd = OCEPhaseForward(grid=N, pressure_kpa=pressure)
    x = torch.full((2, 1, N, N), mu, dtype=torch.float64)
    y = fwd(x)
    assert (OCEPhaseForward(grid=N, pressure_kpa=pressure, wrap=False)(x).max() > math.pi)
    for smoothing in (0.0, 1.5):
        est = algebraic_estimate(y, layer_modulus=mu, layer_thickness=0.125, smoothing=smoothing)
        torch.testing.assert_close(est, x, rtol=1e-9, atol=0)


def _layered_phase(moduli: np.ndarray, stress: float, k_dz: float) -> torch.Tensor:
    """Closed form of a 1-D column in uniaxial stress: strain_i = -stress / M_i in row i, u_z
    piecewise linear, sampled at the row centres; the phase is K u_z (bottom fixed)."""
    strain = -stress / moduli  # per row, top to bottom
    # u_z at the bottom of row i: sum of the (compressive) strains of the rows below it
    below = np.concatenate([np.cumsum(-strain[::-1])[::-1][1:], [0.0]])
    uz_centre = below + 0.5 * (-strain)
    return torch.from_numpy(k_dz * uz_centre).view(1, 1, -1, 1).expand(1, 1, -1, 5)


# total phase 3.1 rad, or 26 rad (4 wraps; increments up to 3.1 rad/pixel, just below Nyquist)
@pytest.mark.parametrize("k_dz", [0.3, 2.5])
def test_layered_column_closed_form(k_dz):
    """Layer (2 rows, mu = 1) over a gel (mu = 3) with a soft band (mu = 0.8): with uniform
    stress, mu_hat = mu exactly wherever a pixel and both its neighbours share a modulus."""
    mu = np.array([1.0, 1.0] + [3.0] * 6 + [0.8] * 4 + [3.0] * 4)
    phi = _layered_phase(mu, stress=1.0, k_dz=k_dz)
    est = algebraic_estimate(wrap(phi), layer_modulus=1.0, layer_thickness=2 / N, smoothing=0,
                             clip=(0.01, 100.0))
    same = np.r_[False, (mu[1:-1] == mu[:-2]) & (mu[1:-1] == mu[2:]), False]
    np.testing.assert_allclose(est[0, 0, same, 2].numpy(), mu[same], rtol=1e-9)
    unwrapped = algebraic_estimate(phi, layer_modulus=1.0, layer_thickness=2 / N, smoothing=0,
                                   clip=(0.01, 100.0))
    torch.testing.assert_close(est, unwrapped, rtol=1e-9, atol=1e-12)


def test_regularisation_floor_and_clip():
    """Tension (a positive gradient) is noise for a compressed sample: the strain floor caps the
    modulus at layer_modulus / strain_floor, then the clip applies."""
    phi = torch.zeros(1, 1, N, 4, dtype=torch.float64)
    phi[..., :2, :] = torch.tensor([0.2, 0.0], dtype=torch.float64).view(2, 1)  # layer
    phi[..., 2:, :] = 0.01 * torch.arange(N - 2, dtype=torch.float64).view(-1, 1)  # tension
    est = algebraic_estimate(phi, layer_modulus=1.0, smoothing=0, strain_floor=0.1,
                             clip=(0.1, 1e6))
    assert est[0, 0, 5:].max().item() == pytest.approx(10.0)
    est = algebraic_estimate(phi, layer_modulus=1.0, smoothing=0, strain_floor=0.1,
                             clip=(0.1, 4.0))
    assert est.max().item() == pytest.approx(4.0)


def test_layer_rows():
    assert layer_rows(16, 0.125) == 2 and layer_rows(24, 0.125) == 3 and layer_rows(16, 0.1) == 1


def test_bad_inputs_raise_clear_errors():
    y = torch.zeros(2, 1, N, N)
    with pytest.raises(ConfigError, match="at least 2 are needed"):
        algebraic_estimate(y, layer_thickness=0.1)
    with pytest.raises(DataError, match="\\(B, 1, N, N\\)"):
        algebraic_estimate(torch.zeros(2, 3, N, N))
    with pytest.raises(DataError, match="non-finite"):
        algebraic_estimate(torch.full((1, 1, N, N), float("nan")))
    with pytest.raises(ConfigError, match="layer_modulus"):
        algebraic_estimate(y, layer_modulus=0.0)


def test_phasor_input_gives_the_same_estimate():
    from invdiff_oce.phase import to_phasor

    y = wrap(-0.4 * torch.arange(16, dtype=torch.float64).view(1, 1, 16, 1).expand(2, 1, 16, 16))
    torch.testing.assert_close(algebraic_estimate(to_phasor(y)), algebraic_estimate(y))
