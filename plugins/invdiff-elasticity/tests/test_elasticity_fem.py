"""Physics checks of ElasticityFEM against closed forms, refinement and symmetry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from invdiff_elasticity import ElasticityFEM, LognormalFieldPrior, assembly
from invdiff_elasticity import element as E
from invdiff_elasticity.element import constitutive_matrix

import invdiff
from invdiff.errors import ConfigError, DataError
from invdiff.testing import check_forward_model

C = 0.01


def node_xy(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Node coordinates (n+1, n+1) in array layout: row 0 = top (y = 1), column 0 = left."""
    s = np.arange(n + 1) / n
    return np.broadcast_to(s[None, :], (n + 1, n + 1)), np.broadcast_to(1 - s[:, None],
                                                                        (n + 1, n + 1))


def const(n: int, value: float) -> torch.Tensor:
    return torch.full((n, n), value, dtype=torch.float64)


def random_mu(n: int, count: int = 1, seed: int = 0) -> torch.Tensor:
    prior = LognormalFieldPrior(n=n, log_std=0.7, length_scale=0.15, dtype="float64")
    return prior.sample(count, generator=torch.Generator().manual_seed(seed))[:, 0]


@pytest.mark.parametrize(
    "kwargs, ux_slope, uy_slope",
    [
        ({}, C / 2, -C),  # sigma_xx = 0 with eps_yy = -c: eps_xx = c / 2 (incompressible)
        ({"model": "plane_strain", "poisson": 0.3}, 0.3 / 0.7 * C, -C),  # nu / (1 - nu)
        ({"loading": "traction", "pressure": 0.06}, 0.06 / (6 * 2.5), -0.06 / (3 * 2.5)),
    ],
)
def test_homogeneous_solution_is_exact(kwargs, ux_slope, uy_slope):
    # uniaxial stress: u linear in x, y, reproduced exactly by bilinear elements
    n, mu0 = 7, 2.5
    u = ElasticityFEM(grid=n, compression=C, **kwargs).displacement(const(n, mu0))
    x, y = node_xy(n)
    assert u.shape == (1, 2, n + 1, n + 1) and u.dtype == torch.float64
    np.testing.assert_allclose(u[0, 0].numpy(), ux_slope * x, rtol=0, atol=1e-14)
    np.testing.assert_allclose(u[0, 1].numpy(), uy_slope * y, rtol=0, atol=1e-14)


@pytest.mark.parametrize("model", ["plane_stress_incompressible", "plane_strain"])
def test_patch_test_linear_field_gives_constant_stress_forces(model):
    # K u_lin must vanish at interior nodes and equal the consistent nodal forces of the constant
    # stress sigma = D eps on the boundary, for any linear u (stretch, shear, rotation).
    n, mu0 = 5, 1.7
    fem = ElasticityFEM(grid=n, model=model, poisson=0.45)
    x, y = node_xy(n)
    a = np.array([0.1, 0.3, -0.2])  # u_x = a0 + a1 x + a2 y
    b = np.array([-0.05, 0.4, 0.25])  # u_y = b0 + b1 x + b2 y
    u = np.stack([a[0] + a[1] * x + a[2] * y, b[0] + b[1] * x + b[2] * y], axis=-1).ravel()
    f = (fem.stiffness(const(n, mu0)) @ u).reshape(n + 1, n + 1, 2)
    s = mu0 * constitutive_matrix(model, 0.45) @ np.array([a[1], b[2], a[2] + b[1]])
    sigma = np.array([[s[0], s[2]], [s[2], s[1]]])
    expected = np.zeros((n + 1, n + 1, 2))
    h = 1.0 / n
    everything = slice(None)
    sides = [((0, everything), (0, 1)), ((n, everything), (0, -1)),  # top, bottom: rows
             ((everything, 0), (-1, 0)), ((everything, n), (1, 0))]  # left, right: columns
    for index, normal in sides:
        edge = np.zeros((n + 1, 2))
        t = sigma @ np.array(normal, dtype=float)
        edge[:-1] += t * h / 2
        edge[1:] += t * h / 2
        expected[index] += edge
    np.testing.assert_allclose(f, expected, rtol=0, atol=1e-13)


def test_displacement_converges_at_second_order():
    # smooth mu sampled at element centres; e(N) = max nodal |u_N - u_2N| on the coarse nodes
    def mu_smooth(n):
        c = (np.arange(n) + 0.5) / n
        xc, yc = c[None, :], 1 - c[:, None]
        return torch.from_numpy(np.exp(0.6 * np.sin(2 * np.pi * xc) * np.cos(np.pi * yc) + xc))

    grids = [8, 16, 32, 64]
    u = [ElasticityFEM(grid=n).displacement(mu_smooth(n))[0].numpy() for n in grids]
    errors = [np.abs(u[i] - u[i + 1][:, ::2, ::2]).max() for i in range(len(grids) - 1)]
    rate = -np.polyfit(np.log(grids[:-1]), np.log(errors), 1)[0]
    assert 1.8 < rate < 2.3, f"observed rate {rate:.2f}, errors {errors}"


def test_mirror_symmetry():
    n = 10
    m = random_mu(n)[0]
    u = ElasticityFEM(grid=n).displacement(0.5 * (m + m.flip(1)))[0]
    ux, uy = u[0].numpy(), u[1].numpy()
    np.testing.assert_allclose(uy, uy[:, ::-1], rtol=0, atol=1e-15)
    # u_x is antisymmetric about x = 1/2 up to the rigid translation set by the pinned corner
    shift = ux + ux[:, ::-1]
    np.testing.assert_allclose(shift, shift[0, 0], rtol=0, atol=1e-15)
    assert abs(shift[0, 0]) > 1e-4  # the translation is there (the pin is at the left)


def test_global_scale_of_mu():
    n, k = 9, 7.3
    m = random_mu(n)
    u = ElasticityFEM(grid=n).displacement(m)
    torch.testing.assert_close(ElasticityFEM(grid=n).displacement(k * m), u, rtol=1e-11, atol=0)
    trac = ElasticityFEM(grid=n, loading="traction")
    torch.testing.assert_close(trac.displacement(k * m), trac.displacement(m) / k,
                               rtol=1e-11, atol=0)


def test_reaction_force():
    n, mu0 = 6, 1.9
    # sigma_yy = 2 mu (2 eps_yy + eps_xx) = 2 mu (-2c + c/2) = -3 mu c, over a unit-long edge
    r = ElasticityFEM(grid=n, compression=C).reaction_force(const(n, mu0))
    assert r.item() == pytest.approx(-3 * mu0 * C, rel=1e-12)
    # plane strain: sigma_yy = -2 mu c / (1 - nu)
    r = ElasticityFEM(grid=n, model="plane_strain", poisson=0.4).reaction_force(
        const(n, mu0))
    assert r.item() == pytest.approx(-2 * mu0 * C / 0.6, rel=1e-12)
    # traction loading: equilibrium gives -pressure whatever mu
    r = ElasticityFEM(grid=n, loading="traction", pressure=0.02).reaction_force(random_mu(n, 2))
    torch.testing.assert_close(r, torch.full((2,), -0.02, dtype=torch.float64), rtol=1e-11,
                               atol=0)


@pytest.mark.parametrize("kwargs", [{}, {"model": "plane_strain"}, {"loading": "traction"}])
def test_backends_agree(kwargs, torch_device):
    """The torch backend (batched dense Cholesky on mu's device) equals the banded scipy one."""
    n = 8
    m = random_mu(n, 3, seed=2)
    u_s = ElasticityFEM(grid=n, **kwargs).displacement(m)
    u_t = ElasticityFEM(grid=n, backend="torch", **kwargs).displacement(m.to(torch_device))
    assert u_t.device.type == torch_device.type
    torch.testing.assert_close(u_t.cpu(), u_s, rtol=1e-10, atol=1e-15)


def top_displacement(poisson: float, mu: torch.Tensor) -> float:
    fem = ElasticityFEM(grid=mu.shape[-1], model="plane_strain", poisson=poisson,
                        loading="traction")
    return fem.displacement(mu)[0, 1, 0].mean().item()


def test_plane_strain_does_not_lock(monkeypatch):
    # under a given pressure the top settles to a finite limit as nu -> 1/2 with selective
    # reduced integration; integrating the volumetric part fully (2 x 2) locks: the heterogeneous
    # square gets stiffer and stiffer (measured: -30 % displacement at nu = 0.499999)
    m = random_mu(16, seed=3)
    sri = [top_displacement(nu, m) for nu in (0.49, 0.4999, 0.499999)]
    assert abs(sri[2] / sri[1] - 1) < 1e-3 and abs(sri[2] / sri[0] - 1) < 0.05, sri

    def fully_integrated(model, poisson):
        return E.integrate(E.D_DEV, E.GAUSS_2x2) + E.lam_over_mu(model, poisson) * E.integrate(
            E.M_VOL, E.GAUSS_2x2)

    monkeypatch.setattr(assembly, "reference_stiffness", fully_integrated)
    assembly.build_system.cache_clear()
    try:
        full = [top_displacement(nu, m) for nu in (0.49, 0.499999)]
    finally:
        assembly.build_system.cache_clear()
    assert full[1] / full[0] < 0.8, full  # the check above would catch a locking element


def test_orientation_stiff_top_left():
    n = 16
    mu = torch.ones(n, n)
    mu[: n // 4, : n // 4] = 5.0  # row 0 is the top edge, column 0 the left edge
    uy = ElasticityFEM(grid=n).displacement(mu)[0, 1]
    eps_yy = (uy[:-1] - uy[1:]) * n  # per element column pair, row r: (u_top - u_bottom) / h
    q = n // 4
    top_left, top_right = eps_yy[:q, :q].abs().mean(), eps_yy[:q, -q:].abs().mean()
    assert top_left < 0.5 * top_right


@pytest.mark.parametrize("measurement, shape", [("uy_centres", (1, 6, 6)),
                                                ("both_centres", (2, 6, 6)),
                                                ("nodal", (2, 7, 7))])
def test_forward_model_contract_and_measurements(measurement, shape):
    n = 6
    fem = invdiff.create("forward_model", "elasticity-fem", grid=n, measurement=measurement)
    x = random_mu(n, 3).unsqueeze(1).float()
    y = check_forward_model(fem, x)
    assert y.shape == (3, *shape) and y.dtype == torch.float32
    u = fem.displacement(x)
    if measurement == "nodal":
        torch.testing.assert_close(y, u.float())
    else:  # element (r, c) centre value = mean of nodes (r, c), (r, c+1), (r+1, c), (r+1, c+1)
        torch.testing.assert_close(y[:, -1, 2, 3], u[:, 1, 2:4, 3:5].mean((1, 2)).float())


def test_input_forms_agree():
    n = 5
    m = random_mu(n, 2)
    fem = ElasticityFEM(grid=n)
    u = fem.displacement(m)
    torch.testing.assert_close(fem.displacement(m.unsqueeze(1)), u)
    torch.testing.assert_close(fem.displacement(m[0].numpy()), u[:1])
    assert fem.displacement(m, dtype=torch.float32).dtype == torch.float32


@pytest.mark.parametrize(
    "mu, match",
    [(-torch.ones(4, 4), "positive"), (torch.zeros(2, 4, 4), "positive"),
     (torch.full((4, 4), float("nan")), "non-finite"), (torch.ones(5, 4), "shape"),
     (torch.ones(2, 3, 4, 4), "shape"), ([[1.0]], "torch.Tensor")],
)
def test_bad_mu_is_a_data_error(mu, match):
    with pytest.raises(DataError, match=match):
        ElasticityFEM(grid=4).displacement(mu)


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="measurement"):
        ElasticityFEM(grid=4, measurement="strain")
    with pytest.raises(ConfigError, match="poisson"):
        ElasticityFEM(grid=4, model="plane_strain", poisson=0.5)
    with pytest.raises(ConfigError, match="grid"):
        invdiff.create("forward_model", "elasticity-fem", grid=0)
    with pytest.raises(DataError, match="x_shape"):
        ElasticityFEM(grid=4).output_shape((1, 5, 5))


def test_agrees_with_scikit_fem():
    # an independent code (own mesh, numbering, quadrature, assembly) on the same problem
    pytest.importorskip("skfem")
    from invdiff_elasticity.oracle import SkfemElasticity

    n = 12
    m = random_mu(n, 2, seed=4)
    ours = ElasticityFEM(grid=n, compression=0.02).displacement(m).numpy()
    oracle = SkfemElasticity(n, compression=0.02)
    for i in range(2):
        np.testing.assert_allclose(oracle.displacement(m[i].numpy()), ours[i], rtol=0,
                                   atol=1e-15)


def test_registration_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, invdiff_elasticity, invdiff_elasticity.plugin, invdiff_elasticity.params;"
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
