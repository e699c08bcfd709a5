"""The OCE reference posterior's own Monte Carlo error: a second MCMC chain (another seed) on
held-out cases of ``benchmarks/oce_end_to_end.py`` against the cached first chain.

    nice .venv/bin/python benchmarks/oce_reference_check.py 4 1     # case indices

Needs the first chains (``oce_end_to_end.py --config configs/oce-spheroid-iid.toml --reference
4``); prints, over the body below the layer, the RMS difference of the two mean fields, both
means' RMSE to the truth, both mean stds, the correlation of the std fields and both R-hats.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import oce_end_to_end as e2e  # noqa: E402


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cases", nargs="+", type=int, help="held-out case indices, e.g. 4 1")
    cases = ap.parse_args(argv).cases
    from invdiff_oce.algebraic import layer_rows

    from invdiff.experiment.run import build_problem

    torch.set_num_threads(1)
    args = e2e.parse_args(["--config", str(e2e.ROOT / "configs" / "oce-spheroid-iid.toml")])
    cfg = e2e.configure(args)
    case = e2e.held_out(cfg, args.cases)
    prior = build_problem(cfg)[0]
    body = np.s_[layer_rows(case["x"].shape[-1], prior.layer_thickness):, :]
    for m in cases:
        chains = [e2e.mcmc_references(cfg, case, [m], args.mcmc_steps, args.walkers,
                                      Path(args.reference_cache), seed_offset=k)
                  for k in (0, 1000)]  # the cached first chain, and another seed
        first, second = ({"mean": c["mean"][0, 0].numpy(), "std": c["std"][0, 0].numpy(),
                          "rhat_max": c["rhat_max"][0]} for c in chains)
        truth = case["x"][m, 0].numpy()
        rms = lambda d: float(np.sqrt((d[body] ** 2).mean()))  # noqa: E731
        corr = np.corrcoef(first["std"][body].ravel(), second["std"][body].ravel())[0, 1]
        print(f"case {m}: RMS(mean_1 - mean_2) {rms(first['mean'] - second['mean']):.3f} kPa; "
              f"RMSE to truth {rms(first['mean'] - truth):.3f} / "
              f"{rms(second['mean'] - truth):.3f}; mean std "
              f"{first['std'][body].mean():.3f} / {second['std'][body].mean():.3f}; std corr "
              f"{corr:.3f}; R-hat {float(first['rhat_max']):.3f} / "
              f"{float(second['rhat_max']):.3f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
