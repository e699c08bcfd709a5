"""Does a trained score net use the measurement? Score change when y is swapped.

For 64 training pairs (x, y), in the normalised units the net works in, noise x at level sigma,
then compare the score with the right y against the score with another pair's y:

    r(sigma) = || s(x~, y, sigma) - s(x~, y', sigma) || / || s(x~, y, sigma) ||,

y' = y of the next pair (same x~, same sigma). r ~ 0 means the net ignores y at that level: its
posterior samples then come from the prior there, whatever was measured. A net that uses y has
r of the order of the posterior-to-prior difference of the score (large at large sigma, where
the posterior mean decides where the samples go).

    .venv/bin/python benchmarks/y_sensitivity.py runs/study/cpu/elasticity/noise-0.05 unet refinenet

RUN is a pipeline run folder holding ``data/train.npz`` and ``NET/checkpoints/final.pt``
(EMA weights) for each NET, e.g. the study's ``runs/study/<preset>/<problem>/<level>``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from trained_run import load_trained_run  # the sibling module (benchmarks/ is on sys.path)

SIGMAS = (1.0, 0.3, 0.1, 0.03)


def y_sensitivity(run: Path, net: str, n: int = 64, sigmas=SIGMAS) -> list[float]:
    """r(sigma) for each sigma in ``sigmas`` (module docstring)."""
    x, y, model = load_trained_run(run, net)
    x, y = x[:n], y[:n]
    xn, yn = model.normalization.normalize_x(x), model.normalization.normalize_y(y)
    g = torch.Generator().manual_seed(0)
    out = []
    for s in sigmas:
        xt = xn + s * torch.randn(xn.shape, generator=g)
        sig = torch.full((len(xn),), s)
        with torch.no_grad():
            a, b = model.net(xt, yn, sig), model.net(xt, yn.roll(1, 0), sig)
        out.append(float((a - b).norm() / a.norm()))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("nets", nargs="+")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    print("| run | net | " + " | ".join(f"r(sigma = {s:g})" for s in SIGMAS) + " |")
    print("|---|---|" + "---|" * len(SIGMAS))
    for net in args.nets:
        r = y_sensitivity(args.run, net)
        print(f"| {args.run} | {net} | " + " | ".join(f"{v:.3f}" for v in r) + " |")


if __name__ == "__main__":
    main()
