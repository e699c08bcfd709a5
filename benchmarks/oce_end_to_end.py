"""Tumour-spheroid OCE end to end: simulate, train a conditional U-Net score, sample held-out
posteriors, and compare the cSDM posterior mean with the truth and with the algebraic estimate.

    nice .venv/bin/python benchmarks/oce_end_to_end.py                  # configs/oce-spheroid.toml
    nice .venv/bin/python benchmarks/oce_end_to_end.py --quick          # smoke test (seconds)
    nice .venv/bin/python benchmarks/oce_end_to_end.py --figures docs/results/oce

Stages 1-2 are the core pipeline (``invdiff.experiment.run.Experiment``'s ``simulate`` /
``train``, resumable: rerunning continues an interrupted run). Stage 3 draws its own held-out
cases with their prior parameters (the spheroid's true outline is needed for the geometry
metrics): half of them with a wrapped phase, half without. Metrics, over the sample body below
the compliant layer (the last three are the OCE plugin's, :mod:`invdiff_oce.metrics`, also
registered as problem metrics):

* RMSE (kPa) and relative RMSE of the estimate;
* for the posterior: mean std and the coverage of the central 90% interval;
* spheroid modulus: relative error of the mean modulus over the true spheroid (here the exact
  outline from the prior's parameters, area >= 1/2; the registered metric derives it from the
  true field);
* gel modulus: relative error of the body's median (the gel is most of it);
* IoU of the thresholded inclusion, |log(mu / median)| > log(1.25), estimate vs truth.

Baselines: the algebraic estimate on the noisy and on the noise-free phase, and the mean of the
training x (what an estimate that ignores y achieves).

Reference posterior (``--reference K``, needs the noise model's ``speckle_smoothing = 0``, e.g.
configs/oce-spheroid-iid.toml): the registered reference ``spheroid-mcmc``, ensemble MCMC over
the 9 spheroid parameters with the exact likelihood, on K held-out cases, alternately wrapped
and not; the cSDM posterior is compared with it over the body
(``invdiff.evaluation.metrics.posterior_metrics``: RMSE between the means, std ratio,
correlation of the std fields). Chains are cached in ``runs/oce-references/``
(``--reference-cache``), keyed by the measurement and the chain settings, so runs that differ
only in training share them."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from invdiff.experiment.config import ExperimentConfig, load_config
from invdiff.experiment.run import Experiment
from invdiff.study.runner import use_ema

ROOT = Path(__file__).resolve().parents[1]
HELD_OUT_SEED = 20_240_601


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "oce-spheroid.toml"))
    ap.add_argument("--out", default=None, help="run folder (default: the config's output.dir)")
    ap.add_argument("--steps", type=int, default=None, help="override training.steps")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value, e.g. --set training.y_normalization=pixel")
    ap.add_argument("--cases", type=int, default=8, help="held-out measurements (even)")
    ap.add_argument("--samples", type=int, default=None, help="posterior samples per case")
    ap.add_argument("--figures", default=None, help="folder for the PNGs (e.g. docs/results/oce)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--weights", choices=["auto", "ema", "raw"], default="auto",
                    help="auto: the EMA or raw weights, whichever has the lower final "
                         "validation loss (a short run's EMA still remembers early weights)")
    ap.add_argument("--reference", type=int, default=0, metavar="K",
                    help="MCMC reference posteriors on K held-out cases (speckle_smoothing = 0)")
    ap.add_argument("--mcmc-steps", type=int, default=12000)
    ap.add_argument("--walkers", type=int, default=40)
    ap.add_argument("--reference-cache", default=str(ROOT / "runs" / "oce-references"),
                    help="folder of the cached MCMC chains (shared across configs)")
    ap.add_argument("--quick", action="store_true", help="tiny run: checks the script works")
    return ap.parse_args(argv)


def configure(args: argparse.Namespace) -> ExperimentConfig:
    cfg = load_config(args.config, overrides=args.set)
    data = cfg.model_dump()
    if args.out:
        data["output"]["dir"] = args.out
    if args.steps:
        data["training"]["steps"] = args.steps
    if args.samples:
        data["sampling"]["n_samples"] = args.samples
    if args.quick:
        data["output"]["dir"] = args.out or "runs/oce-quick"
        data["data"].update(n_train=128, n_val=32, n_test=2)
        data["training"].update(steps=10, batch_size=16, val_every=5, checkpoint_every=5)
        data["sampling"]["n_samples"] = 4
        data["ladder"]["n_levels"] = 5
    return ExperimentConfig.model_validate(data)


# -- held-out cases --------------------------------------------------------------------------
def held_out(cfg: ExperimentConfig, n_cases: int) -> dict[str, torch.Tensor]:
    """``n_cases`` fresh pairs, the first half with a wrapped phase, the second without."""
    prior, fwd, noise = Experiment(cfg).components
    g = torch.Generator().manual_seed(HELD_OUT_SEED)
    x, params = prior.sample_with_params(16 * n_cases, generator=g)
    phase = fwd.unwrapped_phase(x)
    wraps = phase.abs().flatten(1).amax(1) > math.pi
    half = n_cases // 2
    pick = torch.cat([torch.nonzero(wraps)[:half, 0], torch.nonzero(~wraps)[:half, 0]])
    x, params = x[pick], params[pick]
    y_clean = fwd(x)
    return {"x": x, "params": params, "y_clean": y_clean, "y": noise(y_clean, generator=g),
            "wraps": wraps[pick], "mask": prior.inclusion_mask(params) >= 0.5}


def compliant_layer(cfg: ExperimentConfig) -> tuple[float, float]:
    """``(modulus, thickness)`` of the config's compliant layer, as its prior has them (the
    prior's own defaults where the config sets none)."""
    from invdiff.plugins import create

    p = cfg.problem.prior
    prior = create("prior", p.name, **p.params)
    return prior.layer_modulus, prior.layer_thickness


# -- metrics ---------------------------------------------------------------------------------
def estimate_metrics(est: torch.Tensor, case: dict[str, torch.Tensor], rows: int
                     ) -> dict[str, torch.Tensor]:
    """Per-case metrics of an estimate ``(M, 1, N, N)`` (see the module docstring); the
    spheroid, gel and IoU ones are the OCE plugin's."""
    from invdiff_oce.metrics import gel_rel_err, inclusion_iou, spheroid_rel_err

    truth = case["x"].double()[:, :, rows:]
    err = (est.double()[:, :, rows:] - truth).flatten(1)
    rmse = err.square().mean(1).sqrt()
    return {"rmse_kpa": rmse, "rel_rmse": rmse / truth.flatten(1).square().mean(1).sqrt(),
            "spheroid_rel_err": spheroid_rel_err(est, case["x"], rows, mask=case["mask"]),
            "gel_rel_err": gel_rel_err(est, case["x"], rows),
            "iou": inclusion_iou(est, case["x"], rows)}


def posterior_extras(samples: torch.Tensor, case: dict[str, torch.Tensor], rows: int
                     ) -> dict[str, torch.Tensor]:
    """Mean posterior std (kPa) and 90% coverage per case, over the body."""
    from invdiff.evaluation.metrics import coverage

    s = samples[:, :, :, rows:]
    t = case["x"][:, :, rows:]
    return {"post_std_kpa": s.double().std(1).flatten(1).mean(1),
            "coverage_90": torch.tensor([coverage(s[m:m + 1], t[m:m + 1], 0.9)
                                         for m in range(len(t))], dtype=torch.float64)}


def summarise(per_case: dict[str, torch.Tensor], wraps: torch.Tensor) -> dict[str, dict]:
    """Means over all cases, wrapped ones and unwrapped ones."""
    groups = {"all": torch.ones_like(wraps), "wrapped": wraps, "unwrapped": ~wraps}
    return {g: {k: float(v[sel].mean()) for k, v in per_case.items()}
            for g, sel in groups.items() if bool(sel.any())}


# -- reference posterior --------------------------------------------------------------------
def reference_order(n_cases: int) -> list[int]:
    """Held-out indices alternately wrapped (first half) and not (second half)."""
    half = n_cases // 2
    return [i for pair in zip(range(half), range(half, n_cases), strict=True) for i in pair]


def mcmc_references(cfg: ExperimentConfig, case: dict, index: list[int], steps: int,
                    walkers: int, cache: Path, seed_offset: int = 0) -> dict:
    """MCMC posterior mean/std fields ``(K, 1, N, N)`` for the held-out cases ``index``: the
    registered reference ``spheroid-mcmc`` with seed m (+ ``seed_offset``) for case m, chains
    cached in ``cache`` by measurement and settings; R-hat, ESS, seconds and solves per case."""
    from invdiff.evaluation.references import reference_on
    from invdiff.experiment.config import ComponentSpec

    problem = Experiment(cfg).components
    refs = []
    for m in index:
        spec = ComponentSpec(name="spheroid-mcmc", params={
            "n_ref": 1, "n_steps": steps, "n_walkers": walkers, "seed": m + seed_offset})
        refs.append(reference_on(spec, problem, case["y"][m:m + 1], cache=cache))
        print(f"reference {m}: R-hat {refs[-1].info['rhat_max']:.3f}, "
              f"{refs[-1].seconds:.0f} s", flush=True)
    return {"mean": torch.cat([r.mean for r in refs]).double(),
            "std": torch.cat([r.std for r in refs]).double(),
            **{k: [r.info[k] for r in refs] for k in ("rhat_max", "ess_min", "solves")},
            "seconds": [r.seconds for r in refs]}


def reference_comparison(case: dict, samples: torch.Tensor, ref: dict, index: list[int],
                         rows: int) -> dict[str, dict]:
    """Per-case metrics on the reference cases: the MCMC mean and the cSDM posterior against
    the truth, and the cSDM posterior against the reference, over the body below the layer."""
    from invdiff.evaluation.metrics import posterior_metrics

    sub = {k: v[index] for k, v in case.items()}
    body = (Ellipsis, slice(rows, None), slice(None))
    csdm = [posterior_metrics(samples[m:m + 1][body], case["x"][m:m + 1][body],
                              ref["mean"][k:k + 1][body], ref["std"][k:k + 1][body])
            for k, m in enumerate(index)]
    as_tensor = lambda key: torch.tensor([c[key] for c in csdm], dtype=torch.float64)
    return {
        "mcmc": {**estimate_metrics(ref["mean"], sub, rows),
                 "post_std_kpa": ref["std"][body].flatten(1).mean(1),
                 "rhat_max": torch.tensor(ref["rhat_max"]),
                 "seconds": torch.tensor(ref["seconds"])},
        "csdm": {**estimate_metrics(samples[index].mean(1), sub, rows),
                 **posterior_extras(samples[index], sub, rows),
                 **{k: as_tensor(k) for k in ("rmse_ref", "mean_err_std", "std_ratio",
                                              "std_corr")}},
    }


# -- figures ---------------------------------------------------------------------------------
def cases_figure(path: Path, case: dict, alg: torch.Tensor, mean: torch.Tensor,
                 std: torch.Tensor) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from invdiff_oce.phase import to_phase

    m = len(case["x"])
    fig, axes = plt.subplots(m, 5, figsize=(10, 2.0 * m), squeeze=False)
    titles = ["truth (kPa)", "wrapped phase (rad)", "algebraic (kPa)", "cSDM mean (kPa)",
              "cSDM std (kPa)"]
    for i in range(m):
        lo, hi = float(case["x"][i].min()), float(case["x"][i].max())
        phase = to_phase(case["y"][i])[0]
        panels = [(case["x"][i, 0], "viridis", lo, hi), (phase, "twilight", -math.pi, math.pi),
                  (alg[i, 0], "viridis", lo, hi), (mean[i, 0], "viridis", lo, hi),
                  (std[i, 0], "magma", 0, None)]
        for j, (img, cmap, vmin, vmax) in enumerate(panels):
            ax = axes[i, j]
            im = ax.imshow(img.cpu().numpy(), cmap=cmap, vmin=vmin, vmax=vmax)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[j], fontsize=9)
        axes[i, 0].set_ylabel(f"case {i} ({'wrapped' if case['wraps'][i] else 'no wrap'})",
                              fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=70)
    plt.close(fig)


# -- main ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = configure(args)
    from invdiff_oce.algebraic import algebraic_estimate, layer_rows
    from invdiff_oce.phase import to_phase

    from invdiff.data import load_dataset
    from invdiff.evaluation.figures import posterior_figure
    from invdiff.sampling.posterior import sample_posterior
    from invdiff.training.checkpoint import load_model

    exp = Experiment(cfg, progress=False)
    timings = {}
    t0 = time.perf_counter()
    sim = exp.simulate()
    timings["simulate_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    train = exp.train()
    timings["train_s"] = time.perf_counter() - t0

    layer_mod, thickness = compliant_layer(cfg)
    case = held_out(cfg, args.cases)
    rows = layer_rows(case["x"].shape[-1], thickness)
    ema = use_ema(args.weights, exp.paths.history)
    model = load_model(exp.paths.final, device="cpu", ema=ema)
    s = cfg.sampling
    post = sample_posterior(model, case["y"], sampler=s.sampler.name, n=s.n_samples,
                            generator=torch.Generator().manual_seed(s.seed),
                            progress=False, **s.sampler.params)
    alg = algebraic_estimate(case["y"], layer_mod, thickness)
    alg_clean = algebraic_estimate(case["y_clean"], layer_mod, thickness)
    # a y-blind baseline
    prior_mean = load_dataset(exp.paths.train).x.mean(0, keepdim=True)

    per_case = {"csdm": {**estimate_metrics(post.mean, case, rows),
                         **posterior_extras(post.samples, case, rows)},
                "algebraic": estimate_metrics(alg, case, rows),
                "algebraic_noise_free": estimate_metrics(alg_clean, case, rows),
                "prior_mean": estimate_metrics(prior_mean.expand_as(case["x"]), case, rows)}
    result = {"config": args.config, "steps": train["steps"], "n_train": sim["n_train_val"],
              "parameters": train["parameters"], "n_levels": train["n_levels"],
              "sigma_1": train["sigma_1"], "val_loss_ema": train["val_loss_ema"],
              "weights": "ema" if ema else "raw",
              "nfe": post.nfe, "sample_s": post.seconds, "n_samples": s.n_samples,
              **timings,
              "summary": {k: summarise(v, case["wraps"]) for k, v in per_case.items()},
              "per_case": {k: {m: v.tolist() for m, v in d.items()} for k, d in per_case.items()},
              "wraps": case["wraps"].tolist()}
    if args.reference:
        index = reference_order(args.cases)[:args.reference]
        ref = mcmc_references(cfg, case, index, args.mcmc_steps, args.walkers,
                              Path(args.reference_cache))
        per_ref = reference_comparison(case, post.samples, ref, index, rows)
        result["reference"] = {
            "cases": index, "mcmc_steps": args.mcmc_steps, "walkers": args.walkers,
            "summary": {k: summarise(v, case["wraps"][index]) for k, v in per_ref.items()},
            "per_case": {k: {m: v.tolist() for m, v in d.items()} for k, d in per_ref.items()}}
    out = cfg.out_dir / "oce_end_to_end.json"
    out.write_text(json.dumps(result, indent=2))
    print(table(result))
    if args.figures:
        figs = Path(args.figures)
        cases_figure(figs / "cases.png", case, alg, post.mean, post.std)
        for k, m in enumerate(result.get("reference", {}).get("cases", [])):
            posterior_figure(figs / f"reference_{m}.png", case["x"][m], to_phase(case["y"][m]),
                             post.samples[m], ref["mean"][k], ref["std"][k],
                             title=f"held-out {m}: cSDM vs MCMC reference")
        loss = exp.paths.figures / "loss.png"
        if loss.exists():
            (figs / "loss.png").write_bytes(loss.read_bytes())
    return result


COLUMNS = ["rmse_kpa", "rel_rmse", "spheroid_rel_err", "gel_rel_err", "iou", "post_std_kpa",
           "coverage_90"]
REFERENCE_COLUMNS = ["rmse_kpa", "spheroid_rel_err", "iou", "post_std_kpa", "coverage_90",
                     "rmse_ref", "mean_err_std", "std_ratio", "std_corr", "rhat_max", "seconds"]


def table(result: dict) -> str:
    """Markdown tables of the summary (method x group), and of the reference comparison."""
    head = (f"steps {result['steps']} ({result['weights']} weights), "
            f"{result['parameters']} parameters, train "
            f"{result['train_s']:.0f} s, simulate {result['simulate_s']:.0f} s, sampling "
            f"{result['sample_s']:.0f} s ({result['nfe']} NFE x {result['n_samples']} samples)")
    out = head + "\n" + summary_table(result["summary"], COLUMNS)
    if "reference" in result:
        r = result["reference"]
        out += (f"\n\nAgainst the MCMC reference ({r['mcmc_steps']} steps x {r['walkers']} "
                f"walkers) on held-out cases {r['cases']}:\n"
                + summary_table(r["summary"], REFERENCE_COLUMNS))
    return out


def summary_table(summary: dict, cols: list[str]) -> str:
    lines = ["| method | cases | " + " | ".join(cols) + " |",
             "|---" * (len(cols) + 2) + "|"]
    for method, groups in summary.items():
        for g, vals in groups.items():
            cells = [f"{vals[c]:.3f}" if c in vals else "-" for c in cols]
            lines.append(f"| {method} | {g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main(sys.argv[1:])
