"""Reference stiffness of one square bilinear (Q1) element, per unit shear modulus.

Local nodes run counter-clockwise from the bottom-left corner, at natural coordinates
(xi_a, eta_a) = (-1,-1), (1,-1), (1,1), (-1,1), with shape functions
N_a = (1 + xi_a xi)(1 + eta_a eta) / 4. Element dofs are ordered [u_x0, u_y0, u_x1, u_y1, ...].

In Voigt form (engineering shear strain) every material model here splits as

    D = mu * (D_dev + lam_over_mu * m m^T),   D_dev = diag(2, 2, 1),   m = (1, 1, 0),

so the element stiffness is mu * (K_dev + lam_over_mu * K_vol). For a square element of side h,
B scales as 1/h and the Jacobian determinant as h^2, so these matrices do not depend on h.

* incompressible plane stress: sigma = 2 mu (eps + tr(eps) I) -> lam_over_mu = 2, both parts
  with 2 x 2 Gauss points (Q1 does not lock: the constraint is not enforced in plane stress);
* plane strain with Poisson ratio nu: lam_over_mu = 2 nu / (1 - 2 nu); the volumetric part is
  integrated at the single centre point (selective reduced integration), which removes
  volumetric locking as nu -> 1/2.
"""

from __future__ import annotations

import numpy as np

#: natural coordinates of the local nodes (counter-clockwise from bottom-left)
NODE_XI = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
GAUSS_2x2 = [(s * 3**-0.5, t * 3**-0.5, 1.0) for s in (-1, 1) for t in (-1, 1)]
GAUSS_1 = [(0.0, 0.0, 4.0)]
D_DEV = np.diag([2.0, 2.0, 1.0])
M_VOL = np.outer([1.0, 1.0, 0.0], [1.0, 1.0, 0.0])


def strain_matrix(xi: float, eta: float) -> np.ndarray:
    """B (3, 8) in natural-coordinate derivatives, for an element of side 2 (h = 2).

    Rows: eps_xx, eps_yy, gamma_xy = du_x/dy + du_y/dx.
    """
    dn_dxi = NODE_XI[:, 0] * (1 + NODE_XI[:, 1] * eta) / 4
    dn_deta = NODE_XI[:, 1] * (1 + NODE_XI[:, 0] * xi) / 4
    b = np.zeros((3, 8))
    b[0, 0::2] = dn_dxi
    b[1, 1::2] = dn_deta
    b[2, 0::2] = dn_deta
    b[2, 1::2] = dn_dxi
    return b


def integrate(d: np.ndarray, rule: list[tuple[float, float, float]]) -> np.ndarray:
    """sum_gp w B^T d B: the (8, 8) element matrix of constitutive matrix ``d`` (h-free)."""
    return sum(w * strain_matrix(xi, eta).T @ d @ strain_matrix(xi, eta) for xi, eta, w in rule)


def lam_over_mu(model: str, poisson: float) -> float:
    """lambda / mu of the material model (see the module docstring)."""
    if model == "plane_stress_incompressible":
        return 2.0
    if model == "plane_strain":
        return 2.0 * poisson / (1.0 - 2.0 * poisson)
    raise ValueError(f"unknown model {model!r}")


def reference_stiffness(model: str = "plane_stress_incompressible", poisson: float = 0.49
                        ) -> np.ndarray:
    """K_ref (8, 8): the element stiffness for mu = 1 (symmetric positive semi-definite)."""
    volumetric_rule = GAUSS_2x2 if model == "plane_stress_incompressible" else GAUSS_1
    return integrate(D_DEV, GAUSS_2x2) + lam_over_mu(model, poisson) * integrate(
        M_VOL, volumetric_rule
    )


def constitutive_matrix(model: str = "plane_stress_incompressible", poisson: float = 0.49
                        ) -> np.ndarray:
    """D / mu (3, 3) in Voigt form with engineering shear strain."""
    return D_DEV + lam_over_mu(model, poisson) * M_VOL
