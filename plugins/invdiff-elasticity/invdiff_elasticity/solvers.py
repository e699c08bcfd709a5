"""Linear solvers for K_ff(mu) u_f = f(mu), batched over fields mu (B, N^2).

* ``scipy``: LAPACK banded Cholesky (dpbsv) on the lower band of half-width
  kd = 2N + 5; cost O(n_free kd^2) per field, memory O(n_free kd). Fields are solved one by one.
* ``torch``: dense Cholesky (``torch.linalg.cholesky`` + ``cholesky_solve``), batched, on the
  device of mu (CUDA included). Memory is 8 n_free^2 bytes per field (36 MB at N = 32, 570 MB at
  N = 64), so batches are processed in chunks of at most ``max_bytes``.
Both assemble K_ff from the precomputed linear operators of :mod:`assembly`.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.linalg import lapack

from invdiff.errors import SamplingError
from invdiff.runtime import native_threads
from invdiff_elasticity.assembly import LinearSystem


def full_solution(system: LinearSystem, u_free: np.ndarray) -> np.ndarray:
    """Insert free dofs (B, n_free) into the full dof vector (B, ndof) with prescribed values."""
    u = np.broadcast_to(system.u_prescribed, (u_free.shape[0], system.grid.n_dofs)).copy()
    u[:, system.free] = u_free
    return u


#: BLAS threads inside a banded solve. One: the band (kd = 2N + 5) is too narrow for threads to
#: pay, and OpenBLAS's spinning threads made each solve 4-5x slower on a loaded machine (see
#: docs/results/fem.md); simulation workers parallelise over fields instead.
SOLVE_THREADS = 1


def solve_scipy(system: LinearSystem, mu: np.ndarray) -> np.ndarray:
    """u (B, ndof) for mu (B, N^2) float64, with the banded Cholesky solver (LAPACK dpbsv) on
    ``SOLVE_THREADS`` BLAS threads, whatever the environment says."""
    with native_threads(SOLVE_THREADS):
        return _solve_scipy(system, mu)


def _solve_scipy(system: LinearSystem, mu: np.ndarray) -> np.ndarray:
    nf, w = system.n_free, system.kd + 1
    bands = np.zeros((mu.shape[0], nf * w))
    bands[:, system.band_index] = (system.band_op @ mu.T).T
    rhs = system.rhs_const + (system.rhs_op @ mu.T).T
    u_free = np.empty_like(rhs)
    for b in range(mu.shape[0]):
        ab = bands[b].reshape(nf, w).T  # Fortran-ordered (kd + 1, n_free): no copy
        _, u_free[b], info = lapack.dpbsv(ab, rhs[b], lower=1, overwrite_ab=1, overwrite_b=1)
        if info != 0:
            raise SamplingError(
                f"banded Cholesky failed (LAPACK info={info}): the stiffness matrix is not "
                f"positive definite; check that mu is positive and of moderate contrast"
            )
    return full_solution(system, u_free)


def _torch_sparse(m, device: torch.device) -> torch.Tensor:
    coo = m.tocoo()
    idx = torch.from_numpy(np.stack([coo.row, coo.col]).astype(np.int64))
    return torch.sparse_coo_tensor(idx, torch.from_numpy(coo.data), coo.shape, device=device,
                                   check_invariants=False).coalesce()  # built valid above


def solve_torch(system: LinearSystem, mu: torch.Tensor, max_bytes: float = 2**30
                ) -> torch.Tensor:
    """u (B, ndof) for mu (B, N^2) float64 on any device, with batched dense Cholesky."""
    dev, nf = mu.device, system.n_free
    dense_op = _torch_sparse(system.dense_op(), dev)
    rhs_op = _torch_sparse(system.rhs_op, dev)
    rhs_const = torch.from_numpy(system.rhs_const).to(dev)
    chunk = max(1, int(max_bytes // (8 * nf * nf)))
    parts = []
    for m in mu.split(chunk):
        k = torch.sparse.mm(dense_op, m.T).T.reshape(-1, nf, nf)
        f = (rhs_const + torch.sparse.mm(rhs_op, m.T).T).unsqueeze(-1)
        parts.append(torch.cholesky_solve(f, torch.linalg.cholesky(k)).squeeze(-1))
    u_free = torch.cat(parts)
    u = torch.from_numpy(system.u_prescribed).to(dev).expand(mu.shape[0], -1).clone()
    u[:, torch.from_numpy(system.free).to(dev)] = u_free
    return u
