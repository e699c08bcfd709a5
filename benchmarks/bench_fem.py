"""Solves per second of the elasticity FEM: invdiff-elasticity against scikit-fem.

Both solve the identical problem (canonical physics of DESIGN.md: N x N Q1 elements, 2 x 2 Gauss,
element-wise mu, incompressible plane stress, top compression 0.01) for the same random fields
(smooth log-normal moduli). scikit-fem assembles with its generic vectorised form assembly and
solves with scipy's sparse direct solver (SuperLU); both do the whole field -> displacement job
(assembly + factorisation + solve) per field, with everything that depends only on the grid
built once beforehand. Prints a Markdown table; ``--out FILE`` also writes the rows as a result
file (JSON, with the command, threads and machine; ``--append`` adds the run to those already
there), and ``--write`` is ``--out docs/results/data/fem.json``, from which
``benchmarks/results_pages.py`` writes docs/results/fem.md (called here after the run).

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/bench_fem.py \
        [--grids 32 64 128] [--fields 8] [--repeats 3] [--write [--append]]

(one BLAS thread: both solvers are then compared single-threaded, and timings on a shared,
loaded machine stay sane).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from invdiff_elasticity import ElasticityFEM, LognormalFieldPrior
from invdiff_elasticity.oracle import SkfemElasticity

sys.path.insert(0, str(Path(__file__).resolve().parent))
import results_pages  # noqa: E402  (benchmarks/results_pages.py: the result file and its page)

COMPRESSION = 0.01


def best_rates(jobs: dict, repeats: int) -> dict:
    """Best-of-``repeats`` solves per second of each job ``name: (fn, calls, n_solves)`` (fn
    applied to each item of ``calls``, ``n_solves`` fields in all), the jobs timed in turn within
    each repeat so that load changes hit them alike."""
    best = dict.fromkeys(jobs, float("inf"))
    for _ in range(repeats):
        for name, (fn, calls, _) in jobs.items():
            t0 = time.perf_counter()
            for arg in calls:
                fn(arg)
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: jobs[name][2] / best[name] for name in jobs}


def fields(n: int, n_fields: int) -> torch.Tensor:
    """The benchmark's moduli: ``n_fields`` smooth log-normal fields (n_fields, n, n), float64,
    seeded by the grid size (every solver and run sees the same ones)."""
    prior = LognormalFieldPrior(n=n, log_std=0.5, length_scale=0.2, dtype="float64")
    return prior.sample(n_fields, generator=torch.Generator().manual_seed(n))[:, 0]


def run(grids: list[int], n_fields: int, repeats: int) -> list[dict]:
    try:
        import skfem  # noqa: F401
        has_skfem = True
    except ImportError:
        has_skfem = False
        print("scikit-fem is not installed (pip install scikit-fem): its columns are skipped",
              file=sys.stderr)
    rows = []
    for n in grids:
        mus = fields(n, n_fields).numpy()
        fem = ElasticityFEM(grid=n, compression=COMPRESSION)
        fem.displacement(mus[0])  # build the cached operators outside the timing
        jobs = {"ours": (fem.displacement, list(mus), n_fields),
                "ours_batch": (fem.displacement, [mus], n_fields)}
        if has_skfem:
            sk = SkfemElasticity(n, COMPRESSION)
            jobs["skfem"] = (sk.displacement, list(mus), n_fields)
        row = {"N": n, "dofs": 2 * (n + 1) ** 2, **best_rates(jobs, repeats)}
        if has_skfem:
            row["speedup"] = row["ours"] / row["skfem"]
            row["maxdiff"] = max(
                float(np.abs(sk.displacement(m) - fem.displacement(m)[0].numpy()).max())
                for m in mus[:2])
        rows.append(row)
        print(results_pages.md_row(results_pages.fem_row(row)), flush=True)
    return rows


def backend_rows(grids: list[int], n_fields: int, repeats: int, device: str) -> list[str]:
    """The torch backend (batched dense Cholesky on ``device``) against the default banded scipy
    backend, both given the whole batch in one call; the torch time includes the copy back."""
    lines = [f"| N | dofs | scipy, one batched call (solves/s) | torch on {device} (solves/s) "
             "| torch / scipy | max abs diff of u |", "|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for n in grids:
        mus = fields(n, n_fields)
        fem = ElasticityFEM(grid=n, compression=COMPRESSION)
        fem_t = ElasticityFEM(grid=n, compression=COMPRESSION, backend="torch")
        mus_d = mus.to(device)
        u_s, u_t = fem.displacement(mus), fem_t.displacement(mus_d).cpu()  # also warms up
        on_device = lambda m, f=fem_t: f.displacement(m).cpu()  # noqa: E731  (syncs too)
        rates = best_rates({"scipy": (fem.displacement, [mus], n_fields),
                            "torch": (on_device, [mus_d], n_fields)}, repeats)
        lines.append(f"| {n} | {2 * (n + 1) ** 2} | {rates['scipy']:.1f} | {rates['torch']:.1f} "
                     f"| {rates['torch'] / rates['scipy']:.2f} | "
                     f"{float((u_t - u_s).abs().max()):.1e} |")
        print(lines[-1], flush=True)
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grids", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--fields", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, help="also write the rows as this result file (JSON)")
    ap.add_argument("--write", action="store_true",
                    help="--out docs/results/data/fem.json (and so docs/results/fem.md)")
    ap.add_argument("--append", action="store_true",
                    help="add this run to the runs already in the result file")
    ap.add_argument("--device", default=None,
                    help="instead: the torch backend on this device (e.g. cuda) against scipy")
    args = ap.parse_args(argv)
    if args.device is not None:
        backend_rows(args.grids, args.fields, args.repeats, args.device)
        return
    print("\n".join(results_pages.md_table(results_pages.FEM_HEAD, [])))
    rows = run(args.grids, args.fields, args.repeats)
    out = results_pages.DATA / "fem.json" if args.write else args.out
    if out is not None:
        results_pages.save_run(out, results_pages.new_run(
            results_pages.thread_settings("the solver's banded solves on one BLAS thread"),
            results_pages.machine("numpy", "scipy", "scikit-fem"), compression=COMPRESSION,
            fields=args.fields, repeats=args.repeats, rows=rows), append=args.append)


if __name__ == "__main__":
    main()
