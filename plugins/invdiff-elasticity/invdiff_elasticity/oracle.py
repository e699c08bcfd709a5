"""An independent implementation of the canonical problem in scikit-fem (optional oracle).

Used by the tests (skipped when scikit-fem is absent) and by ``benchmarks/bench_fem.py``;
never needed at run time: ``pip install scikit-fem`` (or ``invdiff-elasticity[oracle]``).
scikit-fem assembles the weak form sigma(u) : eps(v) with sigma = 2 mu (eps + tr(eps) I) on
its own Q1 mesh and numbering; this class maps fields and results to our array layout.
"""

from __future__ import annotations

import numpy as np


class SkfemElasticity:
    """The same boundary-value problem in scikit-fem (an independent implementation)."""

    def __init__(self, n: int, compression: float = 0.01) -> None:
        import skfem
        from skfem.helpers import ddot, eye, sym_grad, trace

        self.skfem, self.n, self.compression = skfem, n, compression
        self.mesh = skfem.MeshQuad.init_tensor(np.linspace(0, 1, n + 1), np.linspace(0, 1, n + 1))
        self.basis = skfem.Basis(self.mesh, skfem.ElementVector(skfem.ElementQuad1()), intorder=2)
        self.basis0 = self.basis.with_element(skfem.ElementQuad0())

        @skfem.BilinearForm
        def stiffness(u, v, w):
            eps = sym_grad(u)
            return ddot(2.0 * w["mu"] * (eps + eye(trace(eps), 2)), sym_grad(v))

        self.form = stiffness
        p = self.mesh.p
        centres = p[:, self.mesh.t].mean(axis=1)  # (2, n_el)
        # our element (row from top, column from left) for each scikit-fem element
        self.el_row = np.floor((1 - centres[1]) * n).astype(int)
        self.el_col = np.floor(centres[0] * n).astype(int)
        nd = self.basis.nodal_dofs  # (2, n_nodes): u_x, u_y dof of each node
        bottom, top = np.isclose(p[1], 0), np.isclose(p[1], 1)
        corner = bottom & np.isclose(p[0], 0)
        self.top_uy = nd[1, top]
        self.fixed = np.concatenate([nd[1, bottom], nd[0, corner], self.top_uy])
        # our node (row i from top, column j) for each scikit-fem node
        self.node_i = np.rint((1 - p[1]) * n).astype(int)
        self.node_j = np.rint(p[0] * n).astype(int)

    def displacement(self, mu: np.ndarray) -> np.ndarray:
        """(2, n+1, n+1) in our layout for mu (n, n) in our layout."""
        sk = self.skfem
        mu_field = self.basis0.interpolate(mu[self.el_row, self.el_col])
        k = sk.asm(self.form, self.basis, mu=mu_field)
        x = self.basis.zeros()
        x[self.top_uy] = -self.compression
        u = sk.solve(*sk.condense(k, x=x, D=self.fixed))
        out = np.empty((2, self.n + 1, self.n + 1))
        nd = self.basis.nodal_dofs
        out[0, self.node_i, self.node_j] = u[nd[0]]
        out[1, self.node_i, self.node_j] = u[nd[1]]
        return out
