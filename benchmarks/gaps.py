"""Measurements with gaps: one network trained with ``training.masking`` against the exact
posterior given the measured entries, on the reference problem of the ``cpu`` study preset.

Trains two U-Nets on the same data with the same budget and seed, one as usual and one with
``training.masking = true`` (:mod:`invdiff.data.masking`), then samples the held-out
measurements (annealed Langevin, the preset's settings) of three scenarios, complete, 30% of
the pixels missing at random (``random-0.3``) and one block covering a quarter of the field
(``block-0.25``), each gap drawn by the study's rule, and scores them against the exact
linear-Gaussian posterior given the measured entries:

* ``mean_err_std``: RMS over pixels of (posterior mean - exact mean) / exact std;
* ``std_ratio``: mean posterior std / mean exact std;
* ``std_corr``: correlation of the std fields (exact: given the measured entries);
* ``widen_corr``: correlation of how much the std grows where entries are missing (the std of
  a gappy measurement minus that of the same measurement complete), model against exact;
* ``rmse_truth``, ``coverage_90`` against the truth (x is complete).

Prints the table, writes ``gaps.json``, ``README.md`` and ``posterior-block.png`` /
``posterior-random.png`` (a posterior with a hole: the measurement, the truth, the means and
the std fields of the exact posterior and of the masked model) into ``--out``. Trainings are
kept under ``--runs`` (the study's run layer: a rerun reuses them).

    # the cpu preset's budget (3000 steps, batch 64, 20 000 pairs): about 25 min on one core
    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/gaps.py --out docs/results/gaps
    # a smaller budget
    .venv/bin/python benchmarks/gaps.py --steps 600 --n-samples 64 --out /tmp/gaps
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from invdiff.evaluation.metrics import exact_sampler_scores
from invdiff.io import atomic_write_text
from invdiff.runtime import torch_threads
from invdiff.study.preset import Preset, load_preset
from invdiff.study.report import md_table
from invdiff.study.runner import StudyRuns, held_out_set, problem_reference, run_cell, train_level
from invdiff.training.checkpoint import load_model

PROBLEM = "reference"
SCENARIOS = ("none", "random-0.3", "block-0.25")
COLUMNS = ("model", "missing", "mean_err_std", "std_ratio", "std_corr", "widen_corr",
           "rmse_truth", "ref_rmse_truth", "coverage_90", "n_test", "n_samples")


def preset_for(masked: bool, args: argparse.Namespace) -> Preset:
    """The cpu preset's reference problem, U-Net only, one sampler, trained with or without
    masking under ``args.runs``."""
    name = "masked" if masked else "unmasked"
    sets = [f"runs={json.dumps(str(Path(args.runs) / name))}", f"threads={args.threads}",
            f"base.training.threads={args.threads}", f"n_samples={args.n_samples}",
            f"base.training.seed={args.seed}"]
    if args.steps is not None:
        sets.append(f"base.training.steps={args.steps}")
    if masked:
        sets += [f"problems.{PROBLEM}.experiment.training.masking=true",
                 f"problems.{PROBLEM}.missing={json.dumps(list(SCENARIOS[1:]))}"]
    preset = load_preset(args.preset, sets + list(args.set))
    return preset.model_copy(update={
        "problems": {PROBLEM: preset.problems[PROBLEM]},
        "nets": {"unet": preset.nets["unet"]},
        "samplers": {args.sampler: preset.samplers[args.sampler]}})


def widening(model_std: dict[str, torch.Tensor], ref_std: dict[str, torch.Tensor],
             scenario: str) -> float:
    """Correlation (pooled over measurements and pixels) of std(gappy) - std(complete), model
    against reference."""
    a = (model_std[scenario] - model_std["none"]).flatten()
    b = (ref_std[scenario] - ref_std["none"]).flatten()
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b) / (a.norm() * b.norm()))


def figure(path: Path, scenario: str, m: int, h: Any, ref: Any, post: Any,
           full_std: torch.Tensor, ref_full_std: torch.Tensor) -> Path:
    """A posterior with a hole: measurement m of ``scenario``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = h.y[m, 0].numpy()
    hole = torch.isnan(h.y[m, 0])
    panels = [
        ("measurement (white: missing)", y, "viridis", None),
        ("truth x", h.x[m, 0].numpy(), "RdBu_r", "x"),
        ("exact mean given the measured entries", ref.mean[m, 0].numpy(), "RdBu_r", "x"),
        ("masked model: posterior mean", post.mean[m, 0].numpy(), "RdBu_r", "x"),
        ("exact std, complete measurement", ref_full_std[m, 0].numpy(), "magma", "s"),
        ("exact std given the measured entries", ref.std[m, 0].numpy(), "magma", "s"),
        ("masked model: std", post.std[m, 0].numpy(), "magma", "s"),
        ("masked model: std, complete measurement", full_std[m, 0].numpy(), "magma", "s"),
    ]
    lim = {"x": max(abs(float(p[1].min())) for p in panels[1:4]) or 1.0,
           "s": max(float(p[1].max()) for p in panels[4:]) or 1.0}
    fig, axes = plt.subplots(2, 4, figsize=(13, 6.4))
    for ax, (title, img, cmap, kind) in zip(axes.flat, panels, strict=True):
        kw = {} if kind is None else ({"vmin": -lim["x"], "vmax": lim["x"]} if kind == "x"
                                      else {"vmin": 0, "vmax": lim["s"]})
        im = ax.imshow(img, cmap=cmap, **kw)
        if kind is not None and bool(hole.any()):
            ax.contour(hole.numpy().astype(float), levels=[0.5], colors="k", linewidths=0.8)
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    fig.suptitle(f"reference problem, held-out measurement {m}, gap {scenario} (black "
                 f"outline: missing pixels)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def evaluate(preset: Preset, masked: bool, args: argparse.Namespace
             ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    runs = StudyRuns(preset, progress=not args.quiet)
    level = preset.problems[PROBLEM].noise_levels[0]
    trained = train_level(runs, PROBLEM, level)["unet"]
    exp = runs.get(PROBLEM, level, "unet")
    model = load_model(exp.paths.final, device=preset.device, ema=True)
    rows, model_std, ref_std, keep = [], {}, {}, {}
    for scenario in SCENARIOS if masked else SCENARIOS[:1]:
        h = held_out_set(runs, PROBLEM, level, scenario)
        if args.n_test:
            h.x, h.y, h.y_clean = h.x[:args.n_test], h.y[:args.n_test], h.y_clean[:args.n_test]
        ref = problem_reference(runs, h)
        t0 = time.perf_counter()
        scored = run_cell(preset, model, args.sampler, h, ref)
        post = scored.posterior
        model_std[scenario], ref_std[scenario] = post.std.double(), ref.std.double()
        keep[scenario] = (h, ref, post)
        row = {"model": "masked" if masked else "unmasked", "missing": scenario,
               **{k: scored.metrics.get(k) for k in COLUMNS[2:] if k in scored.metrics},
               "n_test": len(h.y), "n_samples": post.n_samples,
               "sample_seconds": time.perf_counter() - t0}
        floor = exact_sampler_scores(ref.std, post.n_samples)
        row["perfect_std_corr"] = floor["std_corr"]
        rows.append(row)
    for row in rows:
        if row["missing"] != "none":
            row["widen_corr"] = widening(model_std, ref_std, row["missing"])
    if masked:
        for scenario in SCENARIOS[1:]:
            h, ref, post = keep[scenario]
            figure(Path(args.out) / f"posterior-{scenario.split('-')[0]}.png", scenario, 0, h,
                   ref, post, model_std["none"].float(), ref_std["none"].float())
    train = {"steps": trained["steps"], "seconds": trained["seconds"],
             "val_loss_ema": trained["val_loss_ema"], "parameters": trained["parameters"]}
    return rows, train


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--preset", default="cpu", help="study preset (default cpu)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the "
                   "preset's)")
    p.add_argument("--seed", type=int, default=0, help="training seed of both models")
    p.add_argument("--sampler", default="annealed-langevin")
    p.add_argument("--n-samples", type=int, default=256, help="posterior samples per "
                   "measurement (default 256)")
    p.add_argument("--n-test", type=int, default=None, help="use the first K held-out "
                   "measurements (default: all of the preset's)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="further preset overrides")
    p.add_argument("--runs", default="runs/gaps")
    p.add_argument("--out", default="runs/gaps/results")
    p.add_argument("-q", "--quiet", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, trainings = [], {}
    with torch_threads(args.threads):
        for masked in (False, True):
            r, t = evaluate(preset_for(masked, args), masked, args)
            rows += r
            trainings["masked" if masked else "unmasked"] = t
    full = {r["model"]: r for r in rows if r["missing"] == "none"}
    delta = full["masked"]["std_ratio"] - full["unmasked"]["std_ratio"]
    table = md_table(rows, COLUMNS)
    lines = [
        "# Measurements with gaps (reference problem)", "",
        f"Command: `{' '.join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])])}`", "",
        f"Preset `{args.preset}` reference problem, U-Net, seed {args.seed}, "
        f"{trainings['masked']['steps']} training steps; {args.sampler}, "
        f"{rows[0]['n_samples']} samples per measurement, {rows[0]['n_test']} held-out "
        f"measurements.", "", table, "",
        f"Complete measurements: std ratio of the masked model minus the unmasked one's: "
        f"{delta:+.3f}.", "",
        "Trainings: " + "; ".join(f"{k}: {v['steps']} steps, {v['seconds']:.0f} s, validation "
                                  f"loss (EMA) {v['val_loss_ema']:.4g}"
                                  for k, v in trainings.items()), "",
        "![a block missing](posterior-block.png)", "",
        "![30% missing at random](posterior-random.png)", ""]
    atomic_write_text(out / "README.md", "\n".join(lines))
    atomic_write_text(out / "gaps.json", json.dumps(
        {"rows": rows, "trainings": trainings, "std_ratio_delta_complete": delta},
        indent=2, default=lambda v: None if isinstance(v, float) and math.isnan(v) else v))
    print(table)
    print(f"complete measurements: std ratio masked - unmasked = {delta:+.3f}")
    for k, v in trainings.items():
        print(f"{k}: {v['steps']} steps, {v['seconds']:.0f} s, val loss (EMA) "
              f"{v['val_loss_ema']:.4g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
