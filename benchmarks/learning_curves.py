"""Learning curves: posterior accuracy against training seconds, per recipe, two seeds each.

For one problem of a study preset (``reference``, ``elasticity``, ``oce``) and each recipe (a
set of experiment overrides, e.g. ``training.loss_weighting=edm``), train one model per seed
for a fixed budget of steps, keeping snapshots at 25%, 50% and 100% of it
(``training.snapshot_steps``), and score every snapshot on the same held-out measurements
against the problem's reference posterior (exact or MCMC), with the study's own pieces
(:mod:`invdiff.evaluation`: held-out set, reference, sampler cell, metrics):

* ``mean_err_std``: RMS of (posterior mean - reference mean) / reference std, per pixel
  (only where the reference std is positive everywhere: MCMC references over a parametric
  prior are certain of the pixels far from any inclusion);
* ``mean_err_pooled``: ``rmse_ref`` / RMS(reference std), the same in units of the typical
  std, defined for every reference;
* ``rmse_ref``: RMSE between the posterior mean and the reference mean;
* ``std_ratio``: mean posterior std / mean reference std (1 is exact; > 1 too wide);
* ``std_corr``: correlation of the std fields;
* ``coverage_90``: fraction of true pixels in the central 90% intervals.

Writes ``curves.csv``, ``curves.md`` (per seed values side by side, and each recipe's change
against the first recipe beside the seed-to-seed spread) and ``curves.png`` (metric against
training seconds) into ``--out``. Data, trainings, references and scored snapshots are kept
under ``--runs`` and read back on a rerun.

    # the reference problem, 16 x 16, at a fifth of the cpu budget (about 20 min on one core)
    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/learning_curves.py --problem reference \\
        --steps 600 --recipes sigma2 edm --sampler predictor-corrector --n-test 4 \\
        --n-samples 32 --set threads=1 --out docs/results/learning-curves/reference
    # elasticity 5% (16 x 16) or OCE at the cpu preset's budget (hours; see the results page)
    python benchmarks/learning_curves.py --problem elasticity --noise 0.05 --recipes sigma2 edm
    python benchmarks/learning_curves.py --problem oce --recipes sigma2 edm
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from invdiff.errors import ConfigError
from invdiff.evaluation.metrics import exact_sampler_scores, rms
from invdiff.experiment.config import apply_overrides, parse_config
from invdiff.experiment.run import Experiment
from invdiff.io import atomic_open, atomic_write_text
from invdiff.runtime import torch_threads
from invdiff.study.preset import Preset, check_fits, load_preset
from invdiff.study.report import fmt, md_table
from invdiff.study.runner import (
    HeldOut,
    StudyRuns,
    cell_key,
    cell_metrics,
    held_out_set,
    link_data,
    problem_reference,
    run_cell,
    train_net,
)
from invdiff.training.checkpoint import load_model

FRACTIONS = (0.25, 0.5, 1.0)
METRICS = ("mean_err_std", "mean_err_pooled", "rmse_ref", "std_ratio", "std_corr",
           "coverage_90", "memorisation_ratio")
CONSTANT = "training.lr_decay=constant"
#: Named recipes: experiment overrides. Each sets every knob it is about, so that a change of
#: the library's defaults does not silently change what a name measures.
RECIPES: dict[str, list[str]] = {
    "sigma2": ["training.loss_weighting=sigma2", "training.sigma_sampling=ladder", CONSTANT],
    "edm": ["training.loss_weighting=edm", "training.sigma_sampling=ladder", CONSTANT],
    "edm-lognormal": ["training.loss_weighting=edm", "training.sigma_sampling=log-normal",
                      CONSTANT],
    "edm-cosine": ["training.loss_weighting=edm", "training.sigma_sampling=ladder",
                   "training.lr_decay=cosine"],
    "edm-lognormal-cosine": ["training.loss_weighting=edm", "training.sigma_sampling=log-normal",
                             "training.lr_decay=cosine"],
    "fm-cosine": ["training.objective=flow-matching", "training.lr_decay=cosine"],
    "edm-ylevels": ["training.loss_weighting=edm", "training.sigma_sampling=ladder", CONSTANT,
                    "net.params.y_every_level=true"],
    "edm-ypixel": ["training.loss_weighting=edm", "training.sigma_sampling=ladder", CONSTANT,
                   "training.y_normalization=pixel"],
    "edm-ypixel-cosine": ["training.loss_weighting=edm", "training.sigma_sampling=ladder",
                          "training.y_normalization=pixel", "training.lr_decay=cosine"],
}
COLUMNS = ("problem", "net", "recipe", "seed", "step", "fraction", "train_seconds", "weights",
           "sampler", "nfe", "n_test", "n_samples", *METRICS, "rmse_truth", "ref_rmse_truth")


def parse_recipe(text: str) -> tuple[str, list[str]]:
    """``NAME`` (one of :data:`RECIPES`) or ``NAME:KEY=VALUE,KEY=VALUE`` (a new recipe)."""
    name, sep, body = text.partition(":")
    if sep:
        return name, [item for item in body.split(",") if item]
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; named recipes: {', '.join(RECIPES)}, or "
                          f"give NAME:KEY=VALUE,... (experiment overrides)")
    return name, RECIPES[name]


def snapshot_steps(steps: int) -> list[int]:
    """The steps at :data:`FRACTIONS` of a budget of ``steps`` (distinct, >= 1)."""
    return sorted({max(1, round(f * steps)) for f in FRACTIONS})


def run_config(preset: Preset, problem: str, level: float, net: str, recipe: str,
               overrides: list[str], seed: int, steps: int) -> Any:
    """The experiment of one (recipe, seed): the preset's cell config with the recipe's
    overrides, the seed, the budget, snapshots, and its own run folder."""
    data = preset.experiment(problem, level, net).model_dump(mode="json")
    snaps = snapshot_steps(steps)
    apply_overrides(data, [*overrides, f"training.seed={seed}", f"training.steps={steps}",
                           f"training.snapshot_steps={snaps}",
                           f"training.val_every={math.gcd(*snaps)}"])
    data["output"]["dir"] = str(preset.run_dir(problem, level) / "curves"
                                / f"{net}-{recipe}-seed{seed}")
    data["name"] = f"curves-{problem}-{net}-{recipe}-seed{seed}"
    return parse_config(data, f"recipe {recipe} (seed {seed})")


def subset(h: HeldOut, n: int | None) -> HeldOut:
    """The first ``n`` measurements of a held-out set (all of them if None)."""
    if n is None or n >= len(h.x):
        return h
    return HeldOut(h.problem, h.level, h.x[:n], h.y[:n], h.y_clean[:n], h.components)


def history_row(exp: Experiment, step: int) -> dict[str, Any]:
    rows = json.loads(exp.paths.history.read_text())["history"]
    for row in rows:
        if row["step"] == step:
            return row
    raise ConfigError(f"{exp.cfg.out_dir}: no history row at step {step}")


def pick_ema(choice: str, row: dict[str, Any]) -> bool:
    """EMA or raw weights; ``auto``: the lower validation loss at that step (as the study)."""
    if choice != "auto":
        return choice == "ema"
    raw, ema = row.get("val_loss"), row.get("val_loss_ema")
    return raw is None or ema is None or ema <= raw


def score_run(preset: Preset, exp: Experiment, sampler: str, h: HeldOut, ref: Any,
              weights: str, log: Any) -> list[dict[str, Any]]:
    """Metrics of every snapshot of one training (cached beside its checkpoints), each scored
    as a study cell is (:func:`invdiff.study.runner.run_cell`)."""
    rows = []
    steps = exp.cfg.training.steps
    for step in exp.cfg.training.snapshot_steps:
        hist = history_row(exp, step)
        ema = pick_ema(weights, hist)
        key = cell_key(preset, sampler, h, exp, ema)
        cache = exp.paths.out / "curves" / f"step{step}-{sampler}-n{len(h.x)}-{key}.json"
        if cache.exists():
            metrics = json.loads(cache.read_text())
        else:
            path = exp.paths.checkpoints / f"step-{step}.pt"
            model = load_model(path, device=preset.device, ema=ema)
            metrics, _ = cell_metrics(run_cell(preset, model, sampler, h, ref,
                                               exp.training_data[0].x))
            atomic_write_text(cache, json.dumps(metrics))
        row = {"step": step, "fraction": step / steps, "train_seconds": hist["seconds"],
               "weights": "ema" if ema else "raw", "sampler": sampler, **metrics,
               "mean_err_pooled": metrics["rmse_ref"] / rms(ref.std)}
        log(f"  step {step}: " + ", ".join(f"{m} {fmt(row.get(m))}" for m in METRICS))
        rows.append(row)
    return rows


# -- report ------------------------------------------------------------------------------------
def defined(values: list[Any]) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


def num(v: Any) -> str:
    return f"{v:.3g}" if defined([v]) else "-"


def per_seed_table(rows: list[dict[str, Any]]) -> str:
    """Each (recipe, fraction): the seeds' values side by side, ``a / b``."""
    out = []
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        for frac in sorted({r["fraction"] for r in rows}):
            sel = sorted((r for r in rows if r["recipe"] == recipe and r["fraction"] == frac),
                         key=lambda r: r["seed"])
            line = {"recipe": recipe, "fraction": f"{frac:.0%}", "steps": sel[0]["step"],
                    "train_seconds": " / ".join(f"{r['train_seconds']:.0f}" for r in sel)}
            for m in METRICS:
                line[m] = " / ".join(num(r.get(m)) for r in sel)
            out.append(line)
    return md_table(out, ["recipe", "fraction", "steps", "train_seconds", *METRICS])


def gain_table(rows: list[dict[str, Any]]) -> str:
    """At 100% of the budget: each recipe's seed mean minus the first recipe's, beside the
    seed-to-seed spread (half the range of the seeds) of both."""
    final = [r for r in rows if r["fraction"] == 1.0]
    recipes = list(dict.fromkeys(r["recipe"] for r in final))
    vals = {(rc, m): [r.get(m) for r in final if r["recipe"] == rc] for rc in recipes
            for m in METRICS}
    base = recipes[0]
    out = []
    for rc in recipes:
        line = {"recipe": rc}
        for m in METRICS:
            v, b = vals[(rc, m)], vals[(base, m)]
            if not defined(v + b):
                continue
            spread = (max(v) - min(v)) / 2
            line[m] = (f"{statistics.mean(v):.3g} ± {spread:.2g}" if rc == base else
                       f"{statistics.mean(v) - statistics.mean(b):+.3g} (± {spread:.2g})")
        out.append(line)
    return md_table(out, ["recipe", *METRICS])


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 3.4))
    recipes = list(dict.fromkeys(r["recipe"] for r in rows))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, m in zip(axes, METRICS, strict=True):
        for i, rc in enumerate(recipes):
            for j, seed in enumerate(sorted({r["seed"] for r in rows if r["recipe"] == rc})):
                sel = sorted((r for r in rows if r["recipe"] == rc and r["seed"] == seed),
                             key=lambda r: r["step"])
                if not defined([r.get(m) for r in sel]):
                    continue
                ax.plot([r["train_seconds"] for r in sel], [r[m] for r in sel], marker="o",
                        color=colors[i % len(colors)], ls=("-", "--", ":")[j % 3],
                        label=f"{rc} seed {seed}")
        target = {"std_ratio": 1.0, "std_corr": 1.0, "coverage_90": 0.9}.get(m)
        if target is not None:
            ax.axhline(target, color="grey", lw=0.8)
        ax.set_xlabel("training seconds")
        ax.set_title(m)
    axes[METRICS.index("std_ratio")].legend(fontsize=7)  # defined for every reference
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=80)
    plt.close(fig)
    return path


def write_report(rows: list[dict[str, Any]], out: Path, title: str, command: str,
                 notes: list[str]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    csv = [",".join(COLUMNS)] + [",".join("" if r.get(c) is None else str(r[c])
                                          for c in COLUMNS) for r in rows]
    md = [f"# Learning curves: {title}", "", "Command:", "", "```", command, "```", "",
          *notes, "",
          "Per seed (`a / b` = seed 0 / seed 1; `train_seconds` is training wall time, "
          "validation included):", "", per_seed_table(rows), "",
          "At 100% of the budget: the first recipe's seed mean ± half the seed range; each "
          "other recipe's change of the seed mean against it, (± its own half range):", "",
          gain_table(rows), "", "![curves](curves.png)", ""]
    return [atomic_write_text(out / "curves.csv", "\n".join(csv) + "\n"),
            atomic_write_text(out / "curves.md", "\n".join(md)),
            plot(rows, out / "curves.png", title)]


def perfect_sampler_note(ref_std: torch.Tensor, n: int) -> str:
    """The scores a perfect sampler is expected to reach with ``n`` samples (the floor of
    std_ratio and ceiling of std_corr that finite samples allow)."""
    best = exact_sampler_scores(ref_std, n)
    return (f"A perfect sampler with {n} samples is expected to score std_ratio "
            f"{best['std_ratio']:.3f} and std_corr {best['std_corr']:.2f} here "
            f"(`invdiff.evaluation.metrics.exact_sampler_scores`; exact for a Gaussian reference).")


# -- main --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="cpu", help="study preset name or TOML (default cpu)")
    ap.add_argument("--problem", default="reference", help="a problem of the preset")
    ap.add_argument("--noise", type=float, help="training/test noise level (default: the "
                    "median of the problem's noise_levels)")
    ap.add_argument("--net", help="a net of the preset (default: its first)")
    ap.add_argument("--recipes", nargs="+", default=["sigma2", "edm"],
                    help=f"named ({', '.join(RECIPES)}) or NAME:KEY=VALUE,...; the first is "
                    "the baseline of the gains")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--steps", type=int, help="training budget (default: the preset's)")
    ap.add_argument("--sampler", help="a sampler of the preset (default: its first)")
    ap.add_argument("--n-test", type=int, help="score the first N held-out measurements only")
    ap.add_argument("--n-samples", type=int, help="posterior samples per measurement")
    ap.add_argument("--weights", choices=["ema", "raw", "auto"], help="default: the preset's")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="preset override, e.g. base.training.batch_size=32")
    ap.add_argument("--runs", help="run folders (default: <preset runs>-curves)")
    ap.add_argument("--out", help="results folder (default: <runs>/results/<problem>)")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)

    preset = load_preset(args.preset, args.set)
    if args.problem not in preset.problems:
        raise ConfigError(f"--problem {args.problem}: not in preset {preset.name}; it has "
                          f"{', '.join(preset.problems)}")
    update: dict[str, Any] = {"runs": args.runs or f"{preset.runs}-curves"}
    if args.n_samples:
        update["n_samples"] = args.n_samples
    preset = preset.model_copy(update=update)
    spec = preset.problems[args.problem]
    level = args.noise if args.noise is not None else statistics.median_low(spec.noise_levels)
    net = args.net or next(iter(preset.nets))
    sampler = args.sampler or next(iter(preset.samplers))
    for name, known in (("net", preset.nets), ("sampler", preset.samplers)):
        if (net if name == "net" else sampler) not in known:
            raise ConfigError(f"--{name}: not in preset {preset.name}; it has {', '.join(known)}")
    if level not in spec.noise_levels:  # held_out_set noises the first level's test pairs
        preset.problems[args.problem] = spec.model_copy(
            update={"noise_levels": [*spec.noise_levels, level]})
    recipes = [parse_recipe(r) for r in args.recipes]
    weights = args.weights or preset.weights
    log = (lambda s: None) if args.quiet else (lambda s: print(s, flush=True))
    out = Path(args.out) if args.out else Path(preset.runs) / "results" / args.problem

    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    with torch_threads(preset.threads):
        check_fits(preset, args.problem)
        runs = StudyRuns(preset, progress=not args.quiet)
        data = runs.get(args.problem, level)
        data.simulate()
        first = runs.get(args.problem, spec.noise_levels[0])
        if first.paths.out != data.paths.out:  # the held-out pairs come from the first level
            first.simulate()
        h = subset(held_out_set(runs, args.problem, level), args.n_test)
        ref = problem_reference(runs, h)
        if ref is None or ref.std is None:
            raise ConfigError(f"problem {args.problem} has no reference posterior with a std: "
                              f"learning curves measure against one")
        steps = args.steps or data.cfg.training.steps
        for recipe, overrides in recipes:
            for seed in args.seeds:
                exp = Experiment(run_config(preset, args.problem, level, net, recipe,
                                            overrides, seed, steps), progress=not args.quiet)
                link_data(data.paths.data, exp.paths.data)
                log(f"{recipe} seed {seed}: training {steps} steps in {exp.paths.out}")
                train_net(exp)
                for row in score_run(preset, exp, sampler, h, ref, weights, log):
                    rows.append({"problem": args.problem, "net": net, "recipe": recipe,
                                 "seed": seed, **row})
    minutes = (time.perf_counter() - start) / 60
    command = shlex.join(["python", "benchmarks/learning_curves.py", *sys.argv[1:]]
                         if argv is None else ["python", "benchmarks/learning_curves.py", *argv])
    notes = [f"Problem `{args.problem}` (noise `{spec.noise_param}` = {level:g}) of preset "
             f"`{preset.name}`, net `{net}`, {steps} steps (snapshots at "
             f"{', '.join(map(str, snapshot_steps(steps)))}), seeds "
             f"{', '.join(map(str, args.seeds))}; sampler `{sampler}`, "
             f"{preset.n_samples} samples on {len(h.x)} held-out measurements against the "
             f"`{ref.kind}` reference; weights `{weights}`.",
             "Recipes (experiment overrides): " + "; ".join(
                 f"`{name}` = {' '.join(o) or '(preset as is)'}" for name, o in recipes) + ".",
             perfect_sampler_note(ref.std, preset.n_samples),
             f"torch {torch.__version__}, {torch.get_num_threads()} threads; wall time "
             f"{minutes:.1f} min (parts read back from an earlier run are not re-timed)."]
    for f in write_report(rows, out, f"{args.problem}, {', '.join(r for r, _ in recipes)}",
                          command, notes):
        log(f"wrote {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
