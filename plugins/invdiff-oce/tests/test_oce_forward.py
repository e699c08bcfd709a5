"""The OCE forward model: phase from the FEM, the closed form of a homogeneous sample, wrapping,
black-box use, the contract kit and the errors."""

import math

import numpy as np
import pytest
import torch
from invdiff_elasticity import ElasticityFEM
from invdiff_oce.forward import OCEPhaseForward
from invdiff_oce.phase import wrap
from invdiff_oce.spheroid import TumourSpheroidPrior

import invdiff
from invdiff.errors import ConfigError, DataError
from invdiff.testing import check_forward_model

N = 12


@pytest.fixture(scope="module")
def fields():
    return TumourSpheroidPrior(n=N, layer_thickness=0.25, centre_y_range=(0.35, 0.45),
                               semi_major_range=(0.1, 0.25)).sample(
        6, generator=torch.Generator().manual_seed(3))


def test_unwrapped_phase_is_4_pi_n_uz_over_lambda_from_the_fem(fields):
    """Independent route: the elasticity FEM's nodal u_y, mean of the 4 nodes by hand, u_z = -u_y
    scaled to micrometres, then 4 pi n u_z / lambda_0."""
    n_ref, lam, size, p = 1.33, 0.84, 750.0, 0.004
    fwd = OCEPhaseForward(grid=N, domain_um=size, pressure_kpa=p, refractive_index=n_ref,
                          wavelength_um=lam, wrap=False)
    fem = ElasticityFEM(grid=N, loading="traction", pressure=p, model="plane_strain",
                        poisson=0.49, measurement="nodal")
    uy = fem.displacement(fields.double())[:, 1].numpy()  # (B, N+1, N+1) nodal u_y
    centres = (uy[:, :-1, :-1] + uy[:, :-1, 1:] + uy[:, 1:, :-1] + uy[:, 1:, 1:]) / 4
    expected = 4 * np.pi * n_ref * (-centres * size) / lam
    got = fwd(fields.double())[:, 0].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    assert got.max() > 0  # compression moves everything down: u_z > 0, phase > 0


@pytest.mark.parametrize("loading", ["traction", "displacement"])
def test_homogeneous_sample_matches_the_uniaxial_closed_form(loading):
    """Uniform mu under a uniform top load is in uniaxial plane-strain stress: eps_yy =
    -sigma (1 - nu) / (2 mu), linear u_y = eps_yy y (bottom fixed), which Q1 reproduces exactly;
    under displacement loading eps_yy = -compression."""
    mu, nu, p, c, size = 2.5, 0.49, 0.003, 2e-4, 1000.0
    fwd = OCEPhaseForward(grid=N, loading=loading, pressure_kpa=p, compression=c,
                          domain_um=size, poisson=nu, wrap=False)
    x = torch.full((1, 1, N, N), mu, dtype=torch.float64)
    eps = -p * (1 - nu) / (2 * mu) if loading == "traction" else -c
    y_centre = 1 - (np.arange(N) + 0.5) / N  # unit-square height of each row's centre
    uz_um = -eps * y_centre * size
    expected = 4 * np.pi * 1.4 / 1.3 * uz_um
    got = fwd(x)[0, 0].numpy()
    np.testing.assert_allclose(got, np.broadcast_to(expected[:, None], (N, N)), rtol=1e-8)


def test_phase_constant_and_pixel_size():
    fwd = OCEPhaseForward(grid=16, domain_um=800.0, refractive_index=1.4, wavelength_um=1.3)
    assert fwd.phase_per_um == pytest.approx(4 * math.pi * 1.4 / 1.3)
    assert fwd.pixel_um == pytest.approx(50.0)


def test_wrap_range_and_identity():
    a = torch.tensor([-7 * math.pi, -3 * math.pi, -math.pi, -1e-9, 0.0, math.pi, 3 * math.pi,
                      2.5, -2.5, 100.0], dtype=torch.float64)
    w = wrap(a)
    assert bool((w > -math.pi).all() and (w <= math.pi).all())
    k = (a - w) / (2 * math.pi)
    np.testing.assert_allclose(k.numpy(), np.round(k.numpy()), atol=1e-9)  # a - w = 2 pi k
    assert w[2] == pytest.approx(math.pi) and w[5] == pytest.approx(math.pi)  # -pi -> pi
    f32 = wrap(torch.linspace(-20, 20, 100_001, dtype=torch.float32))
    pi32 = torch.tensor(math.pi, dtype=torch.float32)
    assert bool((f32 > -pi32).all() and (f32 <= pi32).all())


def test_wrapped_output_is_the_wrapped_unwrapped_phase_and_wraps_in_a_fair_share():
    prior = TumourSpheroidPrior(n=N)
    x = prior.sample(64, generator=torch.Generator().manual_seed(0)).double()
    raw = OCEPhaseForward(grid=N, wrap=False)(x)
    y = OCEPhaseForward(grid=N)(x)
    torch.testing.assert_close(y, wrap(raw), rtol=0, atol=1e-12)
    assert bool((y > -math.pi).all() and (y <= math.pi).all())
    wraps = (raw.abs().amax(dim=(1, 2, 3)) > math.pi).double().mean().item()
    assert 0.3 < wraps < 0.85, f"default settings wrap in {wraps:.0%} of samples"


def test_black_box_outputs_carry_no_gradient(fields):
    x = fields.clone().requires_grad_(True)
    y = OCEPhaseForward(grid=N)(x)
    assert not y.requires_grad and y.grad_fn is None
    assert y.dtype == x.dtype


def test_contract_kit(fields):
    check_forward_model(OCEPhaseForward(grid=N), fields, atol=1e-5)
    check_forward_model(invdiff.create("forward_model", "oce-phase", grid=N, wrap=False), fields)


def test_bad_inputs_raise_clear_errors(fields):
    fwd = OCEPhaseForward(grid=N)
    with pytest.raises(DataError, match="expected \\(B, 1, 12, 12\\)"):
        fwd(torch.ones(2, 1, N + 1, N))
    with pytest.raises(DataError, match="positive everywhere"):
        fwd(-fields)
    with pytest.raises(DataError, match="non-finite"):
        fwd(torch.full((1, 1, N, N), float("nan")))
    with pytest.raises(DataError, match="x_shape"):
        fwd.output_shape((1, N, N + 1))
    with pytest.raises(ConfigError, match="wavelength_um"):
        OCEPhaseForward(wavelength_um=0.0)
    with pytest.raises(ConfigError, match="pressure_kpa"):
        invdiff.create("forward_model", "oce-phase", pressure_kpa=-1.0)
    with pytest.raises(ConfigError, match="loading"):
        OCEPhaseForward(loading="shear")


def test_torch_backend_matches_scipy(torch_device):
    """The torch backend (solves on x's device, e.g. CUDA) gives the same phase."""
    x = 1 + torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = OCEPhaseForward(grid=6, backend="torch", wrap=False)(x.to(torch_device))
    b = OCEPhaseForward(grid=6, backend="scipy", wrap=False)(x)
    assert a.device.type == torch_device.type
    torch.testing.assert_close(a.cpu(), b, rtol=1e-8, atol=1e-10)


def test_phasor_output_is_cos_sin_of_the_phase(fields):
    """output="phasor": (cos, sin) of the unwrapped phase, two channels, unit length; the
    contract kit; an unknown output is named."""
    fwd = OCEPhaseForward(grid=N, output="phasor")
    x = fields.double()
    phase = OCEPhaseForward(grid=N, wrap=False)(x)
    out = fwd(x)
    assert fwd.output_shape((1, N, N)) == (2, N, N) and out.shape == (len(x), 2, N, N)
    torch.testing.assert_close(out, torch.cat([phase.cos(), phase.sin()], 1), rtol=0,
                               atol=1e-12)
    check_forward_model(invdiff.create("forward_model", "oce-phase", grid=N, output="phasor"),
                        fields, atol=1e-5)
    with pytest.raises(ConfigError, match="output='complex' must be 'phase' or 'phasor'"):
        OCEPhaseForward(grid=N, output="complex")
