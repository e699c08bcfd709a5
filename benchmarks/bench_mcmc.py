"""The reference MCMC's sampler: emcee's stretch move against a plain NumPy stretch move, on the
elasticity inclusion reference (``inclusion-mcmc``, circular inclusion, 4 free parameters).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_mcmc.py --grid 16 --steps 1000 \\
        --walkers 32 --repeats 3

Both samplers run the same affine-invariant stretch move (Goodman & Weare 2010, a = 2) on the
same posterior, log p(theta | y) = -||y - F(field(theta))||^2 / (2 s^2) on the prior's box,
from the same starting walkers (``initial_walkers``, MAP ball), with the same number of steps
and walkers, alternating chain by chain in one process (so a slow spell of a shared machine
hits both). Each chain has its own seed; a chain's seconds count the sampling only (the start
is shared). Printed per sampler (medians over its chains): wall and CPU seconds per chain, the
CPU seconds split into the likelihood's (FEM solves) and the sampler's own (the rest), the
acceptance fraction after burn-in (the second half), and the posterior mean and std of each
parameter pooled over its chains with the worst split R-hat and smallest bulk ESS, so one sees
that the two samplers agree. Then each sampler's own CPU per step on a 4-d standard Gaussian
(a likelihood that costs next to nothing), and the emcee / numpy ratios: of wall time, of CPU
time, and of CPU time with the likelihood's cost pooled over both samplers (the same solves:
on a shared machine the likelihood's timing drifts more than the samplers differ).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

import invdiff
from invdiff.evaluation.mcmc import ensemble_sample, initial_walkers
from invdiff.evaluation.mcmc_diagnostics import effective_sample_size, split_rhat


def numpy_stretch_move(log_prob, init: np.ndarray, n_steps: int, rng: np.random.Generator,
                       a: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """The stretch move written in NumPy (the comparison baseline): fixed halves of the
    ensemble, each moved in one batched ``log_prob`` call. Returns the chain (n_steps, W, d)
    and the acceptance indicator (n_steps, W)."""
    x = np.array(init, dtype=np.float64)
    n_walkers, d = x.shape
    lp = log_prob(x)
    halves = (np.arange(0, n_walkers // 2), np.arange(n_walkers // 2, n_walkers))
    chain = np.empty((n_steps, n_walkers, d))
    accepted = np.zeros((n_steps, n_walkers), dtype=bool)
    for t in range(n_steps):
        for moving, other in (halves, halves[::-1]):
            partners = x[rng.choice(other, size=len(moving))]
            z = ((a - 1.0) * rng.random(len(moving)) + 1.0) ** 2 / a
            proposal = partners + z[:, None] * (x[moving] - partners)
            lp_new = log_prob(proposal)
            log_ratio = (d - 1) * np.log(z) + lp_new - lp[moving]
            ok = np.log(rng.random(len(moving))) < log_ratio
            x[moving[ok]], lp[moving[ok]] = proposal[ok], lp_new[ok]
            accepted[t, moving] = ok
        chain[t] = x
    return chain, accepted


SAMPLERS = {"numpy": numpy_stretch_move, "emcee": ensemble_sample}


def problem(grid: int, level: float, seed: int):
    """The registered reference's posterior of one simulated measurement (truth fixed)."""
    prior = invdiff.create("prior", "circular-inclusion", n=grid)
    fem = invdiff.create("forward_model", "elasticity-fem", grid=grid)
    noise = invdiff.create("noise_model", "gaussian", level=level)
    truth = torch.tensor([[0.35, 0.55, 0.14, 2.5]], dtype=torch.float64)
    y_clean = fem(prior.field_from_params(truth, torch.float64))
    y = noise(y_clean, generator=torch.Generator().manual_seed(seed))
    ref = invdiff.create("reference", "inclusion-mcmc")
    return ref.parameter_posterior(prior, fem, noise, y[0], y_clean[0]), truth[0].numpy()


class Timed:
    """``log_prob`` with the CPU seconds spent inside it counted (the likelihood's share)."""

    def __init__(self, log_prob) -> None:
        self.log_prob, self.cpu = log_prob, 0.0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        c0 = time.process_time()
        out = self.log_prob(x)
        self.cpu += time.process_time() - c0
        return out


def sampler_overhead(n_walkers: int, steps: int = 2000, repeats: int = 3) -> dict[str, float]:
    """CPU microseconds per step of each sampler on a 4-d standard Gaussian (best of
    ``repeats``, alternating): the sampler's own cost, the likelihood's being negligible."""
    def log_prob(x: np.ndarray) -> np.ndarray:
        return -0.5 * np.square(x).sum(1)

    start = np.random.default_rng(0).standard_normal((n_walkers, 4))
    best = {name: np.inf for name in SAMPLERS}
    for _ in range(repeats):
        for name, run in SAMPLERS.items():
            c0 = time.process_time()
            run(log_prob, start, steps, np.random.default_rng(1))
            best[name] = min(best[name], (time.process_time() - c0) / steps * 1e6)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid", type=int, default=16)
    ap.add_argument("--level", type=float, default=0.01, help="relative noise level")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--walkers", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="chains per sampler")
    args = ap.parse_args()
    torch.set_num_threads(1)

    post, truth = problem(args.grid, args.level, seed=7)
    start = initial_walkers(post, args.walkers, np.random.default_rng(0), "map", 4, 1e-3)
    ensemble_sample(lambda x: -0.5 * np.square(x).sum(1), start, 4, np.random.default_rng(0))
    burn = args.steps // 2
    runs: dict[str, list[dict]] = {name: [] for name in SAMPLERS}
    for r in range(args.repeats):
        order = list(SAMPLERS) if r % 2 == 0 else list(SAMPLERS)[::-1]
        for name in order:
            post.n_solves, timed = 0, Timed(post)
            t0, c0 = time.perf_counter(), time.process_time()
            chain, acc = SAMPLERS[name](timed, start, args.steps, np.random.default_rng(100 + r))
            run = {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
                   "lik": timed.cpu, "solves": post.n_solves, "kept": chain[burn:],
                   "acc": acc[burn:].mean()}
            runs[name].append(run)
            print(f"chain {r} {name}: {run['wall']:.2f} s, {run['cpu']:.2f} s CPU of which "
                  f"{run['lik']:.2f} s in the likelihood", flush=True)

    def med(name: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[name])

    names = post.prior.names
    print(f"\ngrid {args.grid}, level {args.level}, {args.walkers} walkers x {args.steps} steps "
          f"(burn-in {burn}), {args.repeats} chains per sampler, torch threads "
          f"{torch.get_num_threads()}\n")
    head = ("| sampler | s / chain | CPU s / chain | of which likelihood | of which sampler "
            "| acceptance |")
    head += "".join(f" {n} mean ± std |" for n in names) + " R-hat max | ESS min |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for name, rs in runs.items():
        kept = np.concatenate([r["kept"] for r in rs], axis=1)  # (steps, chains x walkers, d)
        draws = kept.reshape(-1, kept.shape[-1])
        walkers_first = kept.transpose(1, 0, 2)
        rhat, ess = split_rhat(walkers_first), effective_sample_size(walkers_first)
        cells = "".join(f" {m:.4f} ± {s:.4f} |"
                        for m, s in zip(draws.mean(0), draws.std(0), strict=True))
        own = statistics.median(r["cpu"] - r["lik"] for r in rs)
        print(f"| {name} | {med(name, 'wall'):.2f} | {med(name, 'cpu'):.2f} | "
              f"{med(name, 'lik'):.2f} | {own:.2f} | {np.mean([r['acc'] for r in rs]):.3f} |"
              f"{cells} {rhat.max():.3f} | {ess.min():.0f} |")
    print(f"\ntruth: {dict(zip(names, truth.tolist(), strict=True))}; "
          f"solves per chain: {med('numpy', 'solves'):.0f} (numpy), "
          f"{med('emcee', 'solves'):.0f} (emcee)")
    over = sampler_overhead(args.walkers)
    print("sampler's own CPU per step on a 4-d Gaussian: "
          + ", ".join(f"{n} {us:.0f} us" for n, us in over.items()))
    own = {n: statistics.median(r["cpu"] - r["lik"] for r in rs) for n, rs in runs.items()}
    lik = statistics.median(r["lik"] for rs in runs.values() for r in rs)
    print(f"emcee / numpy: wall {med('emcee', 'wall') / med('numpy', 'wall'):.3f}, "
          f"CPU {med('emcee', 'cpu') / med('numpy', 'cpu'):.3f}, "
          f"CPU at equal likelihood cost (pooled median {lik:.2f} s) "
          f"{(lik + own['emcee']) / (lik + own['numpy']):.3f}")


if __name__ == "__main__":
    main()
