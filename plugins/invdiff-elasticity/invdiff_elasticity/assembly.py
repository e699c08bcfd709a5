"""Structured-grid bookkeeping: dof numbering, boundary conditions and the linear maps mu -> K.

Nodes of the (N+1) x (N+1) grid are numbered row-major with row 0 on the TOP edge and column 0
on the LEFT edge: node (i, j) sits at (x, y) = (j / N, 1 - i / N) and carries dofs
2 (i (N+1) + j) (u_x) and 2 (i (N+1) + j) + 1 (u_y). Interleaving the two components along the
shorter side keeps the half-bandwidth at 2N + 5, the minimum for this stencil (a node couples
with its 8 neighbours, the farthest N + 2 nodes away), so a banded Cholesky costs
O(ndof * (2N + 5)^2).

Because K(mu) = sum_e mu_e K_e^ref is linear in the element moduli, every matrix the solvers need
is a fixed sparse operator applied to the vector mu (N^2,): built once per grid, reused for every
field and every batch (one sparse mat-mat product assembles a whole batch).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.sparse as sp

from invdiff_elasticity.element import reference_stiffness


@dataclass(frozen=True)
class Grid:
    """Element -> dof map of the N x N structured grid of the unit square."""

    n: int

    @property
    def n_nodes(self) -> int:
        return (self.n + 1) ** 2

    @property
    def n_dofs(self) -> int:
        return 2 * self.n_nodes

    def node(self, i: np.ndarray | int, j: np.ndarray | int) -> np.ndarray:
        """Node number of grid row i (0 = top) and column j (0 = left)."""
        return np.asarray(i) * (self.n + 1) + np.asarray(j)

    def element_dofs(self) -> np.ndarray:
        """(N^2, 8) global dofs of each element (row-major, row 0 on top), local order
        bottom-left, bottom-right, top-right, top-left (see :mod:`element`)."""
        r, c = np.meshgrid(np.arange(self.n), np.arange(self.n), indexing="ij")
        r, c = r.ravel(), c.ravel()
        nodes = np.stack([self.node(r + 1, c), self.node(r + 1, c + 1),
                          self.node(r, c + 1), self.node(r, c)], axis=1)
        return np.stack([2 * nodes, 2 * nodes + 1], axis=2).reshape(-1, 8)

    def top_uy(self) -> np.ndarray:
        return 2 * self.node(0, np.arange(self.n + 1)) + 1

    def bottom_uy(self) -> np.ndarray:
        return 2 * self.node(self.n, np.arange(self.n + 1)) + 1

    def bottom_left_ux(self) -> np.ndarray:
        return np.array([2 * self.node(self.n, 0)])


@dataclass(frozen=True, eq=False)  # hashed by identity (cached operators)
class LinearSystem:
    """K_ff(mu) u_f = f(mu) in operator form, for one grid, material model and loading.

    Lower banded storage (LAPACK): ab[i - j, j] = K_ff[i, j] for 0 <= i - j <= kd, held as a
    Fortran-ordered (kd + 1, n_free) array, i.e. flat position j (kd + 1) + (i - j). Its
    structurally non-zero positions are ``band_index`` and their values ``band_op @ mu``
    (``band_op`` (len(band_index), N^2)), so assembly touches no structural zeros.
    ``rhs_op`` (n_free, N^2) and ``rhs_const`` (n_free,): f = rhs_const +
    rhs_op @ mu, i.e. external loads minus K_fp u_p for prescribed displacements u_p.
    """

    grid: Grid
    k_ref: np.ndarray
    free: np.ndarray
    u_prescribed: np.ndarray
    kd: int
    band_index: np.ndarray
    band_op: sp.csr_matrix
    rhs_op: sp.csr_matrix
    rhs_const: np.ndarray

    @property
    def n_free(self) -> int:
        return len(self.free)

    def dense_op(self) -> sp.csr_matrix:
        """mu -> K_ff dense (flattened); built on demand (only the dense backend needs it)."""
        return _dense_op(self)

    def stiffness(self, mu: np.ndarray) -> sp.csr_matrix:
        """Full K(mu) (ndof, ndof) for mu (N^2,), no boundary conditions applied."""
        edofs = self.grid.element_dofs()
        rows = np.repeat(edofs, 8, axis=1).ravel()
        cols = np.tile(edofs, (1, 8)).ravel()
        data = (mu[:, None, None] * self.k_ref).ravel()
        nd = self.grid.n_dofs
        return sp.csr_matrix((data, (rows, cols)), shape=(nd, nd))


def _element_pairs(system_free_index: np.ndarray, edofs: np.ndarray, k_ref: np.ndarray):
    """All (element, free row, free col, K_ref entry) with both dofs free."""
    n_el = edofs.shape[0]
    e = np.repeat(np.arange(n_el), 64)
    gi = system_free_index[np.repeat(edofs, 8, axis=1).ravel()]
    gj = system_free_index[np.tile(edofs, (1, 8)).ravel()]
    val = np.tile(k_ref.ravel(), n_el)
    keep = (gi >= 0) & (gj >= 0)
    return e[keep], gi[keep], gj[keep], val[keep]


@lru_cache(maxsize=16)
def build_system(
    n: int,
    model: str = "plane_stress_incompressible",
    poisson: float = 0.49,
    loading: str = "displacement",
    compression: float = 0.01,
    pressure: float = 0.03,
) -> LinearSystem:
    """Assemble the operators of :class:`LinearSystem` (cached per argument tuple).

    Boundary conditions: bottom edge u_y = 0, bottom-left node u_x = 0 (these remove the rigid
    motions), and on the top edge either u_y = -compression (``loading="displacement"``) or a
    uniform pressure p (``loading="traction"``): traction t = (0, -p), consistent nodal forces
    -p h / 2 per node and element edge (h = 1 / N).
    """
    grid = Grid(n)
    k_ref = reference_stiffness(model, poisson)
    edofs = grid.element_dofs()
    fixed = [grid.bottom_uy(), grid.bottom_left_ux()]
    u_p = np.zeros(grid.n_dofs)
    f_ext = np.zeros(grid.n_dofs)
    if loading == "displacement":
        fixed.append(grid.top_uy())
        u_p[grid.top_uy()] = -compression
    elif loading == "traction":
        weights = np.full(n + 1, 1.0 / n)
        weights[[0, -1]] = 0.5 / n
        f_ext[grid.top_uy()] = -pressure * weights
    else:
        raise ValueError(f"unknown loading {loading!r}")
    is_free = np.ones(grid.n_dofs, dtype=bool)
    is_free[np.concatenate(fixed)] = False
    free = np.flatnonzero(is_free)
    free_index = np.full(grid.n_dofs, -1)
    free_index[free] = np.arange(len(free))
    nf, n_el = len(free), n * n

    e, gi, gj, val = _element_pairs(free_index, edofs, k_ref)
    lower = gi >= gj
    kd = int((gi - gj).max())
    band_pos = gj[lower] * (kd + 1) + (gi - gj)[lower]
    band_index, rows = np.unique(band_pos, return_inverse=True)
    band_op = sp.csr_matrix((val[lower], (rows, e[lower])), shape=(len(band_index), n_el))

    # f_f = f_ext,f - K_fp u_p: the prescribed part, linear in mu, element by element
    ku = u_p[edofs] @ k_ref.T  # (N^2, 8) = K_ref u_p,e
    rows = free_index[edofs].ravel()
    keep = rows >= 0
    rhs_op = sp.csr_matrix(
        (-ku.ravel()[keep], (rows[keep], np.repeat(np.arange(n_el), 8)[keep])), shape=(nf, n_el)
    )
    return LinearSystem(grid, k_ref, free, u_p, kd, band_index, band_op, rhs_op,
                        f_ext[free])


@lru_cache(maxsize=4)
def _dense_op(system: LinearSystem) -> sp.csr_matrix:
    free_index = np.full(system.grid.n_dofs, -1)
    free_index[system.free] = np.arange(system.n_free)
    e, gi, gj, val = _element_pairs(free_index, system.grid.element_dofs(), system.k_ref)
    nf = system.n_free
    return sp.csr_matrix((val, (gi * nf + gj, e)), shape=(nf * nf, system.grid.n ** 2))
