"""Solves per second of the elasticity FEM: invdiff-elasticity against scikit-fem.

Both solve the identical problem (canonical physics of DESIGN.md: N x N Q1 elements, 2 x 2 Gauss,
element-wise mu, incompressible plane stress, top compression 0.01) for the same random fields
(smooth log-normal moduli). scikit-fem assembles with its generic vectorised form assembly and
solves with scipy's sparse direct solver (SuperLU); both do the whole field -> displacement job
(assembly + factorisation + solve) per field, with everything that depends only on the grid
built once beforehand. Prints a Markdown table; ``--write`` also writes docs/results/fem.md.

    .venv/bin/python benchmarks/bench_fem.py [--grids 32 64 128] [--fields 8] [--write]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from invdiff_elasticity import ElasticityFEM, LognormalFieldPrior

COMPRESSION = 0.01


class SkfemElasticity:
    """The same boundary-value problem in scikit-fem (an independent implementation)."""

    def __init__(self, n: int) -> None:
        import skfem
        from skfem.helpers import ddot, eye, sym_grad, trace

        self.skfem, self.n = skfem, n
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
        x[self.top_uy] = -COMPRESSION
        u = sk.solve(*sk.condense(k, x=x, D=self.fixed))
        out = np.empty((2, self.n + 1, self.n + 1))
        nd = self.basis.nodal_dofs
        out[0, self.node_i, self.node_j] = u[nd[0]]
        out[1, self.node_i, self.node_j] = u[nd[1]]
        return out


def rate(fn, items, repeats: int = 2) -> float:
    """Best-of-``repeats`` solves per second of ``fn`` over ``items``."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for it in items:
            fn(it)
        best = min(best, time.perf_counter() - t0)
    return len(items) / best


def run(grids: list[int], n_fields: int) -> list[dict]:
    try:
        import skfem  # noqa: F401
        has_skfem = True
    except ImportError:
        has_skfem = False
        print("scikit-fem is not installed (pip install scikit-fem): its columns are skipped",
              file=sys.stderr)
    rows = []
    for n in grids:
        prior = LognormalFieldPrior(n=n, log_std=0.5, length_scale=0.2, dtype="float64")
        mus = prior.sample(n_fields, generator=torch.Generator().manual_seed(n))[:, 0].numpy()
        fem = ElasticityFEM(grid=n, compression=COMPRESSION)
        fem.displacement(mus[0])  # build the cached operators outside the timing
        ours = rate(fem.displacement, list(mus))
        batched = rate(fem.displacement, [mus]) * n_fields
        row = {"N": n, "dofs": 2 * (n + 1) ** 2, "ours": ours, "ours_batch": batched}
        if has_skfem:
            sk = SkfemElasticity(n)
            theirs = rate(sk.displacement, list(mus))
            diff = max(float(np.abs(sk.displacement(m) - fem.displacement(m)[0].numpy()).max())
                       for m in mus[:2])
            row.update(skfem=theirs, speedup=ours / theirs, maxdiff=diff)
        rows.append(row)
        print(_line(row), flush=True)
    return rows


HEADER = ("| N | dofs | ours (solves/s) | ours, one batched call | scikit-fem (solves/s) | "
          "speed-up | max abs diff of u |\n|---|---|---|---|---|---|---|")


def _line(r: dict) -> str:
    sk = (f"{r['skfem']:.1f} | {r['speedup']:.1f}x | {r['maxdiff']:.1e}" if "skfem" in r
          else "n/a | n/a | n/a")
    return f"| {r['N']} | {r['dofs']} | {r['ours']:.1f} | {r['ours_batch']:.1f} | {sk} |"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grids", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--fields", type=int, default=8)
    ap.add_argument("--write", action="store_true", help="write docs/results/fem.md")
    args = ap.parse_args(argv)
    print(HEADER)
    rows = run(args.grids, args.fields)
    if args.write:
        cmd = "nice .venv/bin/python benchmarks/bench_fem.py " + " ".join(argv or sys.argv[1:])
        table = "\n".join([HEADER] + [_line(r) for r in rows])
        path = Path(__file__).resolve().parents[1] / "docs" / "results" / "fem.md"
        path.write_text(
            "# FEM solver speed: invdiff-elasticity vs scikit-fem\n\n"
            f"Command: `{cmd}`\n\n"
            f"Machine: {platform.machine()}, {platform.python_implementation()} "
            f"{platform.python_version()}, numpy {np.__version__}; shared 2-core CPU (other jobs "
            "were running: compare the columns of one row, not absolute rates across runs).\n\n"
            "Both columns solve the same problem (canonical physics, top compression 0.01) for "
            f"the same {args.fields} log-normal fields, assembly + factorisation + solve per "
            "field, grid-only set-up done beforehand. Max abs diff: between the two nodal "
            "displacements (both are the same discrete problem, so it is round-off).\n\n"
            f"{table}\n"
        )
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
