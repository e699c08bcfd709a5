"""Measurements with gaps: one network trained with ``training.masking`` against the reference
posterior given the measured entries, on one problem of the ``cpu`` study preset.

Trains a U-Net with ``training.masking = true`` (:mod:`invdiff.data.masking`) and, unless its
numbers are read from a study's ``results.csv`` (``--unmasked-from``), one as usual on the same
data with the same budget and seed. Then samples the held-out measurements (the samplers asked
for, the preset's settings) of three scenarios, complete, 30% of the pixels missing at random
(``random-0.3``) and one block covering a quarter of the field (``block-0.25``), each gap drawn
by the study's rule, and scores them against the problem's reference given the measured
entries (the exact linear-Gaussian posterior; the MCMC references of elastography and OCE, whose
likelihoods sum over the measured entries, on their first ``n_ref`` measurements):

* ``mean_err_std``: RMS over pixels of (posterior mean - reference mean) / reference std (the
  study's; undefined where an MCMC reference is certain of a pixel); ``mean_err_std_unc``: the
  same on the pixels the reference finds uncertain (std above a tenth of the field's largest);
* ``std_ratio``: mean posterior std / mean reference std;
* ``std_corr``: correlation of the std fields (reference: given the measured entries);
* ``widen_corr``: correlation of how much the std grows where entries are missing (the std of
  a gappy measurement minus that of the same measurement complete), model against reference;
  ``widen_hole`` / ``ref_widen_hole``: the mean std over the pixels that were not measured
  divided by the mean std there given the complete measurement, model / reference (how much the
  posterior widens in the hole);
* ``rmse_truth``, ``coverage_90`` against the truth (x is complete), ``coverage_90_uncertain_ref``
  on the reference's uncertain pixels.

``--level`` picks one training noise level of the problem (the preset is cut to it); the
held-out measurements are still those the full study samples at that level (the test pairs
with fresh noise at L when L is not the preset's first level), so the complete-measurement rows
compare with the study's cells of the unmasked model at L.

Writes ``gaps.json`` (reference problem) or ``gaps-<problem>.json`` into ``--out``, the figures
``posterior[-<problem>]-block.png`` / ``-random.png`` (a posterior with a hole: the measurement,
the truth, the means and the std fields of the reference and of the masked model), and
``README.md`` with a section per problem found there. Trainings are kept under ``--runs``
(the study's run layer: a rerun reuses them, and the reference chains).

    # the reference problem at the cpu preset's budget: about 25 min on one core
    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/gaps.py --out docs/results/gaps
    # elastography at 5% noise against the unmasked cells of a cpu study
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/gaps.py --problem elasticity --level 0.05 \\
        --sampler predictor-corrector --sampler heun --n-samples 64 \\
        --unmasked-from docs/results/study/cpu-defaults/results.csv --out docs/results/gaps
    # a smaller budget
    .venv/bin/python benchmarks/gaps.py --steps 600 --n-samples 64 --out /tmp/gaps
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from invdiff.data.masking import apply_scenario
from invdiff.evaluation.metrics import exact_sampler_scores, uncertain_pixels
from invdiff.io import atomic_write_text
from invdiff.runtime import torch_threads
from invdiff.study.preset import Preset, load_preset
from invdiff.study.report import md_table
from invdiff.study.runner import (
    HELD_OUT_SEED,
    HeldOut,
    StudyRuns,
    held_out_set,
    problem_reference,
    run_cell,
    train_level,
    use_ema,
)
from invdiff.training.checkpoint import load_model

PROBLEMS = ("reference", "elasticity", "oce")  # the README's order
TITLES = {"reference": "Reference problem (linear Gaussian, exact posterior)",
          "elasticity": "Elastography (circular inclusion, MCMC reference)",
          "oce": "Optical coherence elastography (tumour spheroid, MCMC reference)"}
SCENARIOS = ("none", "random-0.3", "block-0.25")
MACHINE = "one torch thread, a shared 2-core machine"
COLUMNS = ("model", "sampler", "missing", "mean_err_std", "mean_err_std_unc", "std_ratio",
           "std_corr", "widen_corr", "widen_hole", "ref_widen_hole", "rmse_ref", "rmse_truth",
           "ref_rmse_truth", "coverage_90", "coverage_90_uncertain_ref", "n_test", "n_ref",
           "n_samples")
FROM_CSV = ("mean_err_std", "std_ratio", "std_corr", "rmse_ref", "rmse_truth", "ref_rmse_truth",
            "coverage_90", "n_test", "n_ref", "n_samples")


def json_name(problem: str) -> str:
    return "gaps.json" if problem == "reference" else f"gaps-{problem}.json"


def figure_name(problem: str, scenario: str) -> str:
    kind = scenario.split("-")[0]
    return f"posterior-{kind}.png" if problem == "reference" else f"posterior-{problem}-{kind}.png"


def preset_for(masked: bool, args: argparse.Namespace) -> Preset:
    """The preset's problem ``args.problem`` (cut to ``args.level``), U-Net only, the samplers
    asked for, trained with or without masking under ``args.runs``."""
    name, p = ("masked" if masked else "unmasked"), args.problem
    sets = [f"runs={json.dumps(str(Path(args.runs) / name))}", f"threads={args.threads}",
            f"base.training.threads={args.threads}", f"n_samples={args.n_samples}",
            f"base.training.seed={args.seed}", "base.data.workers=1",
            f"problems.{p}.experiment.training.masking={str(masked).lower()}",
            f"problems.{p}.missing={json.dumps(list(SCENARIOS[1:]) if masked else [])}"]
    if args.level is not None:
        sets += [f"problems.{p}.noise_levels=[{args.level!r}]", f"problems.{p}.misspecified=[]"]
    if args.steps is not None:
        sets.append(f"base.training.steps={args.steps}")
    preset = load_preset(args.preset, sets + list(args.set))
    return preset.model_copy(update={
        "problems": {p: preset.problems[p]},
        "nets": {"unet": preset.nets["unet"]},
        "samplers": {s: preset.samplers[s] for s in args.sampler}})


def held_out(runs: StudyRuns, problem: str, level: float, scenario: str, first: float
             ) -> HeldOut:
    """The held-out set the full study samples at ``level`` when its first level is ``first``:
    the simulated test pairs, with fresh noise at ``level`` by the study's rule when the levels
    differ (the truths and clean measurements do not depend on the noise level)."""
    if float(level) == float(first):
        return held_out_set(runs, problem, level, scenario)
    h = held_out_set(runs, problem, level)
    g = torch.Generator().manual_seed(HELD_OUT_SEED + round(1e6 * level))
    y = h.components[2](h.y_clean, generator=g)
    return HeldOut(problem, level, h.x, apply_scenario(y, scenario), h.y_clean, h.components,
                   scenario)


def widening(model_std: torch.Tensor, model_full: torch.Tensor, ref_std: torch.Tensor,
             ref_full: torch.Tensor) -> float:
    """Correlation (pooled over measurements and pixels) of std(gappy) - std(complete), model
    against reference."""
    a = (model_std - model_full).flatten()
    b = (ref_std - ref_full).flatten()
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b) / (a.norm() * b.norm()))


def uncertain_mean_error(mean: torch.Tensor, ref: Any) -> float:
    """RMS of (mean - reference mean) / reference std on the pixels the reference finds
    uncertain (``mean``: the model's posterior means on the reference's measurements)."""
    s, m = ref.std.double(), ref.mean.double()
    where = uncertain_pixels(s)
    return float(((mean.double() - m) / s)[where].square().mean().sqrt())


def figure(path: Path, problem: str, scenario: str, m: int, h: Any, ref: Any, post: Any,
           full_std: torch.Tensor, ref_full_std: torch.Tensor) -> Path:
    """A posterior with a hole: measurement m of ``scenario``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = h.y[m, 0].numpy()
    hole = torch.isnan(h.y[m, 0])
    what = "exact" if problem == "reference" else "reference (MCMC)"
    panels = [
        ("measurement (white: missing)", y, "viridis", None),
        ("truth x", h.x[m, 0].numpy(), "RdBu_r", "x"),
        (f"{what} mean given the measured entries", ref.mean[m, 0].numpy(), "RdBu_r", "x"),
        ("masked model: posterior mean", post.mean[m, 0].numpy(), "RdBu_r", "x"),
        (f"{what} std, complete measurement", ref_full_std[m, 0].numpy(), "magma", "s"),
        (f"{what} std given the measured entries", ref.std[m, 0].numpy(), "magma", "s"),
        ("masked model: std", post.std[m, 0].numpy(), "magma", "s"),
        ("masked model: std, complete measurement", full_std[m, 0].numpy(), "magma", "s"),
    ]
    if problem == "reference":  # a zero-mean field: a colour scale symmetric about 0
        lim = max(abs(float(p[1].min())) for p in panels[1:4]) or 1.0
        x_range = {"vmin": -lim, "vmax": lim}
    else:
        x_range = {"vmin": min(float(p[1].min()) for p in panels[1:4]),
                   "vmax": max(float(p[1].max()) for p in panels[1:4])}
    s_max = max(float(p[1].max()) for p in panels[4:]) or 1.0
    fig, axes = plt.subplots(2, 4, figsize=(13, 6.4))
    for ax, (title, img, cmap, kind) in zip(axes.flat, panels, strict=True):
        kw = {} if kind is None else (x_range if kind == "x" else {"vmin": 0, "vmax": s_max})
        im = ax.imshow(img, cmap=cmap, **kw)
        if kind is not None and bool(hole.any()):
            ax.contour(hole.numpy().astype(float), levels=[0.5], colors="k", linewidths=0.8)
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    fig.suptitle(f"{problem}, held-out measurement {m}, gap {scenario} (black outline: missing "
                 f"pixels)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def evaluate(preset: Preset, masked: bool, args: argparse.Namespace, first: float
             ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    p = args.problem
    runs = StudyRuns(preset, progress=not args.quiet)
    level = preset.problems[p].noise_levels[0]
    trained = train_level(runs, p, level)["unet"]
    exp = runs.get(p, level, "unet")
    ema = use_ema(preset.weights, exp.paths.history)
    model = load_model(exp.paths.final, device=preset.device, ema=ema)
    rows, std, keep, holes = [], {}, {}, {}
    for scenario in SCENARIOS if masked else SCENARIOS[:1]:
        h = held_out(runs, p, level, scenario, first)
        if args.n_test:
            h.x, h.y, h.y_clean = h.x[:args.n_test], h.y[:args.n_test], h.y_clean[:args.n_test]
        t0 = time.perf_counter()
        ref = problem_reference(runs, h)
        ref_seconds = time.perf_counter() - t0
        std["ref", scenario] = ref.std.double()
        holes[scenario] = torch.isnan(h.y[ref.index]).any(1, keepdim=True)  # (n_ref, 1, H, W)
        for sampler in args.sampler:
            t0 = time.perf_counter()
            scored = run_cell(preset, model, sampler, h, ref)
            post = scored.posterior
            std[sampler, scenario] = post.std[ref.index].double()
            keep[sampler, scenario] = (h, ref, post)
            row = {"model": "masked" if masked else "unmasked", "sampler": sampler,
                   "missing": scenario,
                   **{k: scored.metrics.get(k) for k in COLUMNS[3:] if k in scored.metrics},
                   "mean_err_std_unc": uncertain_mean_error(post.mean[ref.index], ref),
                   "n_test": len(h.y), "n_ref": len(ref.index), "n_samples": post.n_samples,
                   "nfe": scored.metrics.get("nfe"), "weights": "ema" if ema else "raw",
                   "sample_seconds": time.perf_counter() - t0, "ref_seconds": ref_seconds,
                   "perfect_std_corr": exact_sampler_scores(ref.std, post.n_samples)["std_corr"]}
            rows.append(row)
            ref_seconds = 0.0  # the chains are counted once per scenario
    for row in rows:
        if row["missing"] != "none":
            s, gap = row["sampler"], row["missing"]
            row["widen_corr"] = widening(std[s, gap], std[s, "none"], std["ref", gap],
                                         std["ref", "none"])
            if holes[gap].shape[-2:] == std[s, gap].shape[-2:]:  # y on x's grid
                hole = holes[gap].expand_as(std[s, gap])
                row["widen_hole"] = float(std[s, gap][hole].mean() / std[s, "none"][hole].mean())
                row["ref_widen_hole"] = float(std["ref", gap][hole].mean()
                                              / std["ref", "none"][hole].mean())
    if masked:
        s = args.sampler[0]
        for scenario in SCENARIOS[1:]:
            h, ref, post = keep[s, scenario]
            figure(Path(args.out) / figure_name(p, scenario), p, scenario, 0, h, ref, post,
                   std[s, "none"].float(), std["ref", "none"].float())
    train = {"steps": trained["steps"], "seconds": trained["seconds"],
             "val_loss_ema": trained["val_loss_ema"], "parameters": trained["parameters"]}
    return rows, train


def unmasked_from(path: Path, problem: str, level: float, samplers: list[str]
                  ) -> list[dict[str, Any]]:
    """The U-Net cells of a study's ``results.csv`` at training and test level ``level`` on
    complete measurements, one row per sampler."""
    with open(path, newline="") as fh:
        cells = [r for r in csv.DictReader(fh) if r["problem"] == problem and r["net"] == "unet"
                 and float(r["noise_train"]) == float(r["noise_test"]) == float(level)
                 and r.get("missing", "none") in ("", "none")]
    rows = []
    for s in samplers:
        found = [r for r in cells if r["sampler"] == s]
        if not found:
            raise SystemExit(f"{path}: no unet cell of {problem} at {level:g} with sampler {s}")
        rows.append({"model": "unmasked", "sampler": s, "missing": "none",
                     **{k: float(found[0][k]) for k in FROM_CSV if found[0].get(k)}})
    return rows


def section(data: dict[str, Any]) -> list[str]:
    """The README section of one problem's results."""
    p = data.get("problem", "reference")
    rows = data["rows"]
    samplers = data.get("samplers", ["annealed-langevin"])
    for r in rows:
        r.setdefault("sampler", samplers[0])
    cols = [c for c in COLUMNS if any(r.get(c) is not None for r in rows)]
    delta = data["std_ratio_delta_complete"]
    delta = delta if isinstance(delta, dict) else {samplers[0]: delta}
    trainings = data["trainings"]
    masked = rows[-1]
    lines = [f"## {TITLES.get(p, p)}", "",
             f"Command: `{data['command']}` ({data.get('machine', MACHINE)})", "",
             f"Preset `{data.get('preset', 'cpu')}` {p} problem"
             + (f" at {data['noise_param']} = {data['level']:g}" if data.get("level") else "")
             + f", U-Net, seed {data.get('seed', 0)}, {trainings['masked']['steps']} training "
             f"steps; {', '.join(samplers)}, {masked['n_samples']} samples per measurement, "
             f"{masked['n_test']} held-out measurements"
             + (f" ({masked['n_ref']} with a reference)" if masked.get("n_ref", masked["n_test"])
                != masked["n_test"] else "") + ".", ""]
    if data.get("unmasked_from"):
        lines += [f"Unmasked model: the U-Net cells of `{data['unmasked_from']}` at this level "
                  f"(the study's held-out measurements; the columns it has, over its own "
                  f"n_ref).", ""]
    lines += [md_table(rows, cols), "",
              "Complete measurements, std ratio of the masked model minus the unmasked one's: "
              + ", ".join(f"{s} {d:+.3f}" for s, d in delta.items()) + ".", "",
              "Trainings: " + "; ".join(f"{k}: {v['steps']} steps, {v['seconds']:.0f} s, "
                                        f"validation loss (EMA) {v['val_loss_ema']:.4g}"
                                        for k, v in trainings.items()), ""]
    lines += [f"![{p}: a block missing]({figure_name(p, 'block-0.25')})", "",
              f"![{p}: 30% missing at random]({figure_name(p, 'random-0.3')})", ""]
    return lines


def write_readme(out: Path) -> None:
    """``README.md``: a section per problem whose results are in ``out``."""
    lines = ["# Measurements with gaps", "",
             "A U-Net trained with `training.masking = true` against the reference posterior "
             "given the measured entries ([gaps.md](../../gaps.md) has the reading). Written "
             "by `benchmarks/gaps.py`; columns in its docstring.", ""]
    for p in PROBLEMS:
        path = out / json_name(p)
        if path.exists():
            lines += section(json.loads(path.read_text()))
    atomic_write_text(out / "README.md", "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--preset", default="cpu", help="study preset (default cpu)")
    p.add_argument("--problem", default="reference", help="a problem of the preset")
    p.add_argument("--level", type=float, default=None, help="the training noise level (default:"
                   " the problem's first)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the "
                   "preset's)")
    p.add_argument("--seed", type=int, default=0, help="training seed of both models")
    p.add_argument("--sampler", action="append", default=None, help="a sampler of the preset "
                   "(repeatable; default annealed-langevin)")
    p.add_argument("--n-samples", type=int, default=256, help="posterior samples per "
                   "measurement (default 256)")
    p.add_argument("--n-test", type=int, default=None, help="use the first K held-out "
                   "measurements (default: all of the preset's)")
    p.add_argument("--unmasked-from", default=None, metavar="CSV", help="take the unmasked "
                   "model's numbers from a study's results.csv instead of training it")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--machine", default=MACHINE,
                   help="where it ran, for the README")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="further preset overrides")
    p.add_argument("--runs", default="runs/gaps")
    p.add_argument("--out", default="runs/gaps/results")
    p.add_argument("-q", "--quiet", action="store_true")
    args = p.parse_args(argv)
    args.sampler = args.sampler or ["annealed-langevin"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = load_preset(args.preset, list(args.set)).problems[args.problem]
    first = spec.noise_levels[0]
    level = first if args.level is None else args.level
    rows, trainings = [], {}
    with torch_threads(args.threads):
        if args.unmasked_from:
            rows += unmasked_from(Path(args.unmasked_from), args.problem, level, args.sampler)
        for masked in (False, True) if not args.unmasked_from else (True,):
            r, t = evaluate(preset_for(masked, args), masked, args, first)
            rows += r
            trainings["masked" if masked else "unmasked"] = t
    full = {(r["model"], r["sampler"]): r for r in rows if r["missing"] == "none"}
    delta = {s: full["masked", s]["std_ratio"] - full["unmasked", s]["std_ratio"]
             for s in args.sampler}
    data = {"problem": args.problem, "preset": args.preset, "level": level,
            "noise_param": spec.noise_param, "seed": args.seed, "samplers": args.sampler,
            "command": " ".join([f"benchmarks/{Path(sys.argv[0]).name}",
                                 *(argv or sys.argv[1:])]),
            "machine": args.machine, "unmasked_from": args.unmasked_from, "rows": rows,
            "trainings": trainings, "std_ratio_delta_complete": delta}
    atomic_write_text(out / json_name(args.problem), json.dumps(
        data, indent=2, default=lambda v: None if isinstance(v, float) and math.isnan(v) else v))
    write_readme(out)
    print(md_table(rows, [c for c in COLUMNS if any(r.get(c) is not None for r in rows)]))
    print("complete measurements: std ratio masked - unmasked = "
          + ", ".join(f"{s} {d:+.3f}" for s, d in delta.items()))
    for k, v in trainings.items():
        print(f"{k}: {v['steps']} steps, {v['seconds']:.0f} s, val loss (EMA) "
              f"{v['val_loss_ema']:.4g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
