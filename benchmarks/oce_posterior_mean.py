"""The cSDM's amortised posterior mean against the exact one (OCE, unsmoothed speckle).

At the top level sigma_1 of the ladder the noised sample x~ = x + sigma_1 z carries almost
nothing about x, so a trained net's denoiser D(x~, y, sigma_1) = x~ + sigma_1^2 s(x~, y,
sigma_1) is its one-shot estimate of the posterior mean E[x | y] (Tweedie). Comparing it with
the MCMC mean (exact likelihood, cached by ``oce_end_to_end.py --reference``) tells how much of
the measurement the net has learned, independently of the sampler; the sampled posterior mean
of the same run is printed beside it.

    .venv/bin/python benchmarks/oce_posterior_mean.py runs/oce-spheroid-iid-ladder \
        --config configs/oce-spheroid-iid-ladder.toml

Needs a finished ``oce_end_to_end.py`` run (its checkpoint and result JSON) and the cached
chains of its reference cases (from any run of the same problem with ``--reference 4``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import oce_end_to_end as e2e  # noqa: E402  (the held-out cases and references of that script)


def one_shot_mean(model, x: torch.Tensor, y: torch.Tensor, draws: int,
                  generator: torch.Generator) -> torch.Tensor:
    """Mean over ``draws`` of D(x + sigma_1 z, y, sigma_1) in physical units: ``(M, *x_shape)``."""
    norm, sigma = model.normalization, float(model.sigmas[0])
    xn, yn = norm.normalize_x(x), norm.normalize_y(y)
    out = []
    for _ in range(draws):
        xt = xn + sigma * torch.randn(xn.shape, generator=generator)
        with torch.no_grad():
            d = xt + sigma ** 2 * model(xt, yn, torch.full((x.shape[0],), sigma))
        out.append(norm.denormalize_x(d))
    return torch.stack(out).mean(0).double()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="run folder of oce_end_to_end.py")
    ap.add_argument("--config", required=True, help="the config the run was trained with")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="the --set overrides the run was trained with")
    ap.add_argument("--draws", type=int, default=16, help="noise draws averaged per case")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from invdiff_oce.algebraic import layer_rows

    from invdiff.experiment.run import output_paths
    from invdiff.training.checkpoint import load_model

    cfg = e2e.configure(e2e.parse_args(["--config", args.config, "--out", args.run]
                                       + [a for s in args.set for a in ("--set", s)]))
    result_path = Path(args.run) / "oce_end_to_end.json"
    if not result_path.exists():
        raise SystemExit(f"{result_path} does not exist: RUN must be a finished "
                         f"oce_end_to_end.py run folder (run that script first)")
    result = json.loads(result_path.read_text())
    # a run without --reference (e.g. a net trained at the top levels only) uses the default
    # reference cases and chains
    ref_info = result.get("reference", {"cases": e2e.reference_order(len(result["wraps"]))[:4],
                                        "mcmc_steps": 12000, "walkers": 40})
    index = ref_info["cases"]
    case = e2e.held_out(cfg, len(result["wraps"]))
    ref = e2e.mcmc_references(cfg, case, index, ref_info["mcmc_steps"], ref_info["walkers"],
                              e2e.ROOT / "runs" / "oce-references")
    model = load_model(output_paths(cfg)["final"], ema=result["weights"] == "ema")
    rows = layer_rows(case["x"].shape[-1], e2e.compliant_layer(cfg)[1])
    body = (Ellipsis, slice(rows, None), slice(None))
    d = one_shot_mean(model, case["x"][index], case["y"][index], args.draws,
                      torch.Generator().manual_seed(0))
    rmse = lambda a, b: (a - b)[body].flatten(1).square().mean(1).sqrt()
    table = {"one_shot_to_mcmc": rmse(d, ref["mean"]).tolist()}
    if "per_case" in ref_info:
        table["sampled_to_mcmc"] = ref_info["per_case"]["csdm"]["rmse_ref"]
    table["one_shot_to_truth"] = rmse(d, case["x"][index].double()).tolist()
    table["mcmc_to_truth"] = rmse(ref["mean"], case["x"][index].double()).tolist()
    print(f"{args.run}: cases {index}, sigma_1 = {float(model.sigmas[0]):.2f}")
    print("| RMSE over the body (kPa) | " + " | ".join(f"case {m}" for m in index) + " | mean |")
    print("|---" * (len(index) + 2) + "|")
    for name, vals in table.items():
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in vals)
              + f" | {sum(vals) / len(vals):.3f} |")
    return table


if __name__ == "__main__":
    main()
