"""Pages and figures of docs/results made from the result files, never copied by hand.

    .venv/bin/python benchmarks/results_pages.py          # writes every generated page
    .venv/bin/python benchmarks/results_pages.py --check  # fails if a page is not up to date
    .venv/bin/python benchmarks/results_pages.py --figures docs/results/study/cpu-defaults

Every page named in :data:`PAGES` is written from result files alone; ``make docs`` runs
``--check``, so a page that no longer matches its files fails the documentation build.

* ``which-net-and-sampler.md`` answers "which net and sampler should I use, and how good is
  it?" from a study's ``results.csv`` (default: the ``cpu`` study with the current training
  defaults, ``docs/results/study/cpu-defaults``): per problem and noise level, every net and
  sampler with its std ratio to the reference posterior, 90% coverage, score evaluations,
  sampling seconds per measurement and std-field correlation; the peer methods' rows (sbi,
  BayesFlow) from another study's ``results.csv`` beside them (``--peer``); and a recommendation
  computed from the numbers by the rule the page states (:func:`recommend`).
* ``samplers.md``, ``fem.md``, ``simulate.md`` and ``scale-out.md`` are written from the JSON
  result files in ``docs/results/data/`` that their benchmarks write (``bench_samplers.py``
  and ``exact_sampler_floor.py``; ``bench_fem.py``; ``bench_simulate.py``;
  ``bench_scale_out.py``; ``threads.json`` holds the tables ``bench_threads.py`` printed). A
  result file holds a list of runs, each with its command, thread settings, machine and date
  (:func:`save_run`), and where a run's numbers were recorded from its printed output rather
  than written by the benchmark, a ``source`` saying so; the explanatory text of each page is
  fixed here, every number comes from the files. A benchmark that writes a result file into
  ``docs/results/data/`` writes the pages made from it too.

``--figures DIR ...`` draws a finished study's figures again from its ``results.csv`` and
``calibration.json`` (``invdiff.study.plots``; no training or sampling) and updates the list
of figures at the end of its ``results.md``. The pages need only the standard library
(``make docs`` runs ``--check`` in a fraction of a second).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import re
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
STUDY = RESULTS / "study" / "cpu-defaults"
PEER = RESULTS / "study" / "peers-cpu"
PAGE = RESULTS / "which-net-and-sampler.md"
DATA = RESULTS / "data"

COVERAGE = (0.85, 0.97)  # a 90% interval counts as calibrated when it covers this share
MAX_STD_RATIO = 2.0      # usable: at most twice as wide as the reference posterior ...
MIN_STD_CORR = 0.5       # ... with its uncertainty in the right places
#: the peer methods' rows (net name -> what it is): invdiff study --peers-only
PEER_NETS = {
    "sbi-npse-mlp": "sbi's neural posterior score estimation (MLP score)",
    "bayesflow-fm-unet": "BayesFlow's flow matching with its U-Net",
    "bayesflow-fm-mlp": "BayesFlow's flow matching with its MLP",
}

PROBLEMS = {
    "reference": "Linear-Gaussian reference problem (exact posterior known)",
    "elasticity": "Elastography: a stiff circular inclusion from the axial displacement",
    "oce": "Optical coherence elastography: a tumour spheroid from a wrapped phase image",
}


def _float(v: str | None) -> float | None:
    try:
        f = float(v) if v not in (None, "") else None
    except ValueError:
        return None
    return f if f is not None and math.isfinite(f) else None


def read_rows(folder: Path) -> list[dict]:
    """The well-specified, complete cells of a study's ``results.csv`` that have a reference
    std (misspecified-noise cells and cells of measurements with gaps are left out)."""
    out = []
    with open(folder / "results.csv", newline="") as f:
        for r in csv.DictReader(f):
            if r["noise_train"] != r["noise_test"] or r.get("missing", "none") not in ("", "none"):
                continue
            if _float(r.get("std_ratio")) is None:
                continue
            out.append(r)
    return out


def _noise(r: dict) -> str:
    level, param = float(r["noise_test"]), r["noise_param"]
    if param == "level":
        return f"{100 * level:g}% relative noise"
    if param == "snr0":
        return f"SNR {level:g}"
    return f"noise {param} {level:g}"


def usable(r: dict) -> bool:
    return (_float(r["std_ratio"]) <= MAX_STD_RATIO
            and (_float(r.get("std_corr")) or 0.0) >= MIN_STD_CORR)


def calibrated(r: dict) -> bool:
    c = _float(r["coverage_90"])
    return c is not None and COVERAGE[0] <= c <= COVERAGE[1]


def recommend(rows: list[dict]) -> tuple[dict | None, dict | None]:
    """(closest, fastest) among the usable cells of one problem and noise level.

    closest: the std ratio closest to 1 (in log scale) among the usable cells whose 90%
    coverage is calibrated, or among all usable cells when none is; fastest: the usable cell
    with the fewest sampling seconds per measurement (calibrated ones first, likewise)."""
    ok = [r for r in rows if usable(r) and r["net"] not in PEER_NETS]
    pool = [r for r in ok if calibrated(r)] or ok
    if not pool:
        return None, None
    closest = min(pool, key=lambda r: abs(math.log(_float(r["std_ratio"]))))
    fastest = min(pool, key=lambda r: _float(r["seconds"]))
    return closest, fastest


def _ratio(v: float) -> str:
    return f"{v:.2f}" if v < 10 else f"{v:.3g}"


def _cell(r: dict) -> str:
    return (f"`{r['net']}` + `{r['sampler']}`: std ratio {_ratio(_float(r['std_ratio']))}, "
            f"90% coverage {_float(r['coverage_90']):.2f}, "
            f"{_float(r['seconds']):.3g} s per measurement ({int(float(r['nfe']))} network calls "
            "per sample)")


def _why(r: dict) -> str:
    c = _float(r["coverage_90"])
    if calibrated(r):
        return "coverage calibrated"
    return ("too wide: intervals cover more than they should" if c > COVERAGE[1]
            else "too narrow: intervals cover less than they should")


def _range(values: list[float], fmt=lambda v: f"{v:.3g}") -> str:
    lo, hi = fmt(min(values)), fmt(max(values))
    return lo if lo == hi else f"{lo}-{hi}"


def _refinenet_defaults() -> str:
    """The std-ratio range of the RefineNet with the plugin's defaults on the reference
    problem, over the seeds' result files of ``study/cpu-refinenet-default-reference``."""
    folder = RESULTS / "study" / "cpu-refinenet-default-reference"
    values = [_float(r["std_ratio"]) for f in sorted(folder.glob("results*.csv"))
              for r in csv.DictReader(open(f, newline=""))]
    values = [v for v in values if v is not None]
    return _range(values, _ratio) if values else "(not measured)"


#: Result files of the U-Net trained by flow matching, per problem (study cells named
#: ``unet+flow-matching``), read for the short answer's paragraph on the objective.
FLOW_MATCHING_FILES = ("study/objectives-reference/results.csv",
                       "study/objectives-elasticity/results.csv",
                       "study/objectives-elasticity/results-seed1.csv",
                       "study/objectives-elasticity/flow-matching-levels.csv",
                       "study/objectives-oce/results.csv")
FLOW_PROBLEMS = ("reference", "elasticity", "oce")


def _flow_matching_ranges() -> str:
    """Per problem and noise level, the range of the raw std ratio (before the spread
    calibration) of the flow-matching U-Net cells in :data:`FLOW_MATCHING_FILES`."""
    spans: dict[tuple[str, float], tuple[str, list[float]]] = {}
    for name in FLOW_MATCHING_FILES:
        for r in csv.DictReader(open(RESULTS / name, newline="")):
            value = _float(r.get("raw_std_ratio")) or _float(r["std_ratio"])
            if r["net"] == "unet+flow-matching" and value is not None:
                key = (r["problem"], float(r["noise_test"]))
                spans.setdefault(key, (f"{r['problem']} ({_noise(r)})", []))[1].append(value)
    return "; ".join(f"{label}: {_range(values, _ratio)}" for _, (label, values) in
                     sorted(spans.items(), key=lambda kv: (FLOW_PROBLEMS.index(kv[0][0]),
                                                          kv[0][1])))


def _table(rows: list[dict]) -> list[str]:
    lines = ["| net | sampler | std ratio | 90% coverage | std corr | RMSE to reference mean "
             "| network calls per sample | seconds per measurement | verdict |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        verdict = ("peer method" if r["net"] in PEER_NETS else
                   ("usable, " + ("calibrated" if calibrated(r) else _why(r).split(":")[0]))
                   if usable(r) else "not usable")
        std_corr = _float(r.get("std_corr"))
        rmse = _float(r.get("rmse_ref"))
        lines.append(
            f"| {r['net']} | {r['sampler']} | {_ratio(_float(r['std_ratio']))} "
            f"| {_float(r['coverage_90']):.2f} | "
            f"{'' if std_corr is None else f'{std_corr:.2f}'} | "
            f"{'' if rmse is None else f'{rmse:.3g}'} | {int(float(r['nfe']))} "
            f"| {_float(r['seconds']):.3g} | {verdict} |")
    return lines


def _provenance(folder: Path) -> list[str]:
    md = folder / "results.md"
    text = md.read_text() if md.exists() else ""
    out = []
    for prefix in ("Command:", "Problems:", "Device"):
        line = next((ln for ln in text.splitlines() if ln.startswith(prefix)), None)
        if line:
            out.append(line)
    return out


def page(study: Path = STUDY, peer: Path | None = PEER) -> str:
    rows = read_rows(study)
    peers = [r for r in read_rows(peer) if r["net"] in PEER_NETS] if peer else []
    rel = lambda p: p.relative_to(RESULTS).as_posix()  # noqa: E731
    out = [
        "# Which net and sampler for my problem?",
        "",
        "<!-- Generated by benchmarks/results_pages.py from "
        f"docs/results/{rel(study)}/results.csv; do not edit by hand. -->",
        "",
        f"The numbers of the benchmark study [`{rel(study)}`]({rel(study)}/README.md): "
        "every bundled score net trained once per problem with the current training "
        "defaults (the `cpu` preset: 16 x 16 fields, 3000 training steps on a CPU), then "
        "sampled with every bundled sampler, 64 samples per held-out measurement, and compared "
        "with a reference posterior (the closed form on the linear-Gaussian problem, MCMC over "
        "the inclusion's or spheroid's parameters on the other two). How the study works: "
        "[the benchmark study](../benchmark-study.md).",
        "",
        *[f"> {line}  " for line in _provenance(study)],
        "",
        "## Short answer",
        "",
    ]
    by_problem: dict[str, list[dict]] = {}
    for r in rows:
        by_problem.setdefault(r["problem"], []).append(r)
    nets = list(dict.fromkeys(r["net"] for r in rows))
    summary = []
    for net in nets:
        mine = [r for r in rows if r["net"] == net]
        good = [r for r in mine if usable(r)]
        per_sampler = {}
        for r in mine:
            per_sampler.setdefault(r["sampler"], []).append(_float(r["std_ratio"]))
        spans = ", ".join(f"`{s}` {_range(v, _ratio)}" for s, v in per_sampler.items())
        summary.append(f"* **`{net}`**: usable in {len(good)} of {len(mine)} cells; std ratio "
                       f"by sampler over all problems: {spans}.")
    out += summary
    out += ["",
            "The `refinenet` cells of this run are the cSDM paper's RefineNet (width 8, "
            "`output = \"ncsn\"`, norms not conditioned on the noise level), which the "
            "`cpu-paper` preset keeps. The `refinenet` plugin's defaults are now the variant "
            "that uses the measurement (noise-conditional norms, EDM output; "
            "[networks](../networks.md#does-the-net-use-y-benchmarksy_sensitivitypy)): on the "
            f"reference problem it reaches std ratio {_refinenet_defaults()} with "
            "predictor-corrector and heun over two training seeds "
            "([study/cpu-refinenet-default-reference](study/cpu-refinenet-default-reference/"
            "README.md)).",
            "",
            "Trained by flow matching (`training.objective = \"flow-matching\"`, the objective "
            "of the elastography demo) at the same budget, the U-Net's posterior is narrower "
            "than with score matching (the `unet` cells below): std ratio before the spread "
            f"calibration: {_flow_matching_ranges()}; with heun, dpm-2m or predictor-corrector "
            "([which objective](../training.md#which-objective)).",
            "", "Per problem, the recommended cell (the rule is at the end of this page):", ""]
    for problem, prs in by_problem.items():
        for level in dict.fromkeys(r["noise_test"] for r in prs):
            cells = [r for r in prs if r["noise_test"] == level]
            closest, fastest = recommend(cells)
            label = f"{problem}, {_noise(cells[0])}"
            if closest is None:
                out.append(f"* **{label}**: no usable cell.")
                continue
            line = f"* **{label}**: {_cell(closest)}; {_why(closest)}."
            if fastest is not closest:
                line += f" Fastest usable: {_cell(fastest)}."
            out.append(line)
    out += ["",
            "Std ratio: the posterior's mean std over the reference posterior's (1 = exact, "
            "above 1 too wide, below 1 too narrow). 90% coverage: the share of true pixels "
            "inside the central 90% credible interval (0.9 = calibrated). Std corr: the "
            "correlation of the std field with the reference's (1 = the uncertainty is in the "
            "same places). RMSE to reference mean: in the field's units (shear modulus "
            "relative to the background on elastography, kPa on OCE). Seconds: sampling time "
            "for all 64 samples of one measurement on the study's machine, with the thread "
            "setting its run states above (comparable within a table); network calls per "
            "sample is the machine-independent cost.", ""]
    for problem, prs in by_problem.items():
        out += [f"## {PROBLEMS.get(problem, problem)} (`{problem}`)", ""]
        ref = prs[0]["reference"]
        n_ref = prs[0]["n_ref"]
        train = {}
        for r in prs:
            v = _float(r.get("train_seconds"))
            if v is not None:
                train.setdefault(r["net"], []).append(v)
        out.append(f"Reference posterior: `{ref}` on {n_ref} held-out measurements. Training "
                   "time per net (3000 steps, once per noise level): "
                   + ", ".join(f"`{n}` {_range(v)} s" for n, v in train.items()) + ".")
        out.append("")
        for level in dict.fromkeys(r["noise_test"] for r in prs):
            cells = [r for r in prs if r["noise_test"] == level]
            peer_rows = [r for r in peers if r["problem"] == problem
                         and math.isclose(float(r["noise_test"]), float(level))]
            if len(set(r["noise_test"] for r in prs)) > 1:
                out += [f"### {_noise(cells[0])}", ""]
            out += _table(cells + peer_rows)
            if peer_rows:
                what = "; ".join(f"`{r['net']}`: {PEER_NETS[r['net']]}" for r in peer_rows)
                out += ["", f"Peer methods, trained on the same simulated pairs and sampled on "
                        f"the same measurements ({what}; from [`{rel(peer)}`]"
                        f"({rel(peer)}/results.md), where their settings are; the training "
                        "defaults of invdiff do not apply to them)."]
            closest, fastest = recommend(cells)
            bad = [r for r in cells if not usable(r) and r["net"] not in PEER_NETS]
            out.append("")
            if closest is not None:
                out.append(f"Recommended: {_cell(closest)} ({_why(closest)}).")
                if fastest is not closest:
                    out.append(f"Fastest usable: {_cell(fastest)}.")
            else:
                out.append("No usable cell.")
            if bad:
                worst = ", ".join(f"`{r['net']}` + `{r['sampler']}` "
                                  f"{_ratio(_float(r['std_ratio']))}" for r in bad)
                out.append(f"Not usable (std ratio above {MAX_STD_RATIO:g} or std corr below "
                           f"{MIN_STD_CORR:g}): {worst}.")
            out.append("")
    out += [
        "## The rule behind the recommendation",
        "",
        f"A cell is *usable* when its std ratio is at most {MAX_STD_RATIO:g} and its std-field "
        f"correlation at least {MIN_STD_CORR:g}: its posterior is at most twice as wide as the "
        "reference posterior and puts its uncertainty in the right places. Its 90% coverage "
        f"is *calibrated* when it lies in [{COVERAGE[0]:g}, {COVERAGE[1]:g}]. Recommended: the "
        "usable, calibrated cell whose std ratio is closest to 1; when no usable cell is "
        "calibrated, the usable cell whose std ratio is closest to 1. Fastest usable: the "
        "usable (calibrated, where any is) cell with the fewest seconds per measurement. A "
        "coverage close to 0.9 alone is not enough: a net that ignores the measurement "
        "samples the prior, which covers the truth too, with a std ratio far above 1.",
        "",
        "These numbers hold for these problems at this training budget; for a problem of your "
        "own, train once, then compare the samplers on a few measurements with a reference "
        "posterior (`invdiff sample` with `sampling.reference`, or a study preset of your "
        "own). Figures of the study: [its README](" + rel(study) + "/README.md).",
        "",
    ]
    return "\n".join(out)


# --- result files of the benchmarks (docs/results/data/*.json) --------------------------------

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def command(argv: list[str] | None = None) -> str:
    """The command line that ran this benchmark, its thread variables in front, as a user
    would type it again from the repository root."""
    env = [f"{k}={os.environ[k]}" for k in THREAD_VARIABLES if k in os.environ]
    script = Path(sys.argv[0]).resolve()
    script = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    args = sys.argv[1:] if argv is None else argv
    return " ".join([*env, ".venv/bin/python", script.as_posix(), shlex.join(args)]).strip()


def thread_settings(detail: str = "") -> str:
    """The thread variables set for the run and what the benchmark itself sets (``detail``)."""
    env = ", ".join(f"{k}={os.environ[k]}" for k in THREAD_VARIABLES if k in os.environ)
    return "; ".join(p for p in (env or "no `*_NUM_THREADS` variable set", detail) if p)


def machine(*packages: str) -> str:
    """This machine in words: architecture, cores, Python, the versions of ``packages`` and the
    load average when the run finished (other jobs on a shared machine slow absolute rates)."""
    from importlib import metadata

    parts = [f"{platform.machine()}, {os.cpu_count()} cores",
             f"{platform.python_implementation()} {platform.python_version()}"]
    for name in packages:
        try:
            parts.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    return ", ".join(parts) + f"; load average {load} (1, 5, 15 min) when the run finished"


def new_run(threads: str, machine_text: str, **data) -> dict:
    """A run of a result file: how it was made (command, threads, machine, date) and ``data``."""
    return {"command": command(), "threads": threads, "machine": machine_text,
            "date": time.strftime("%Y-%m-%d %H:%M"), **data}


def read_runs(path: Path) -> list[dict]:
    return json.loads(Path(path).read_text())["runs"]


def save_run(path: Path, run: dict, append: bool = False) -> Path:
    """Write ``run`` as the result file ``path`` (``{"runs": [...]}``), after the runs already
    there when ``append``; then write again the pages made from it if it is one of
    docs/results/data."""
    path = Path(path)
    runs = read_runs(path) if append and path.exists() else []
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"runs": [*runs, run]}, indent=1) + "\n")
    tmp.replace(path)
    print(f"wrote {path}")
    if path.resolve().parent == DATA.resolve():
        for name, (_, files) in PAGES.items():
            if path.name in files:
                (RESULTS / name).write_text(render(name))
                print(f"wrote {RESULTS / name}")
    return path


def _provenance_list(run: dict) -> list[str]:
    out = [f"* Command: `{run['command']}`", f"* Threads: {run['threads']}",
           f"* Machine: {run['machine']}", f"* Measured: {run['date']}"]
    if run.get("source"):
        out.append(f"* Recorded: {run['source']}")
    return out


def _generated(*files: str) -> str:
    names = " and ".join(f"docs/results/data/{f}" for f in files)
    return f"<!-- Generated by benchmarks/results_pages.py from {names}; do not edit by hand. -->"


def _faster(ratio: float, digits: int = 2) -> str:
    """A speed ratio (new rate / old rate, or old time / new time) in words."""
    if ratio >= 1:
        return f"{ratio:.{digits}f}x faster"
    return f"{1 / ratio:.{digits}f}x slower"


def md_row(cells: list) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def md_table(head: list[str], rows: list[list]) -> list[str]:
    return [md_row(head), "|" + " --- |" * len(head)] + [md_row(row) for row in rows]


# samplers.md: bench_samplers.py and exact_sampler_floor.py

def _recursion(r: dict) -> str:
    rec = r.get("recursion")
    return "-" if rec is None else f"{rec['mean']:.4f} / {rec['max_error']:.3f}"


def sampler_row(r: dict) -> list:
    """One setting's row of the samplers table (also the benchmark's progress line)."""
    return [r["label"], r["nfe"], f"{r['seconds']:.2f}", f"{r['mean_error']:.3f}",
            f"{r['std_ratio']:.4f}", f"{r['max_std_error']:.3f}", _recursion(r),
            f"{r['w2']:.4f}"]


SAMPLER_HEAD = ["setting", "nfe", "seconds", "mean error", "std ratio (mean)",
                "max abs(ratio-1)", "std (recursion): mean / max err", "W2"]


def sampler_goals(settings: list[dict], goals: list) -> list[str]:
    """Which settings reach each goal (sampler, bound, budget): |mean std ratio - 1| within
    the bound at no more than the budget of score evaluations per chain."""
    lines = []
    for name, bound, budget in goals:
        hits = sorted((r for r in settings if r["sampler"] == name and r["nfe"] <= budget
                       and abs(r["std_ratio"] - 1) <= bound), key=lambda r: r["nfe"])
        found = "; ".join(
            f"{r['label']} ({r['nfe']} nfe, std ratio {r['std_ratio']:.4f}"
            + ("" if r.get("recursion") is None else
               f", recursion {r['recursion']['mean']:.4f}, max pixel "
               f"{r['recursion']['max_error']:.3f}") + ")" for r in hits) or "none"
        lines.append(f"* {name}: std within {bound:.0%} at <= {budget} nfe: {found}")
    return lines


def samplers_page(data: Path = DATA) -> str:
    s = read_runs(data / "samplers.json")[-1]
    floor = read_runs(data / "exact-sampler-floor.json")[-1]
    n, m = s["samples_per_measurement"], s["measurements"]
    out = [
        "# Samplers on the exact-score reference problem",
        "",
        _generated("samplers.json", "exact-sampler-floor.json"),
        "",
        "How accurate each sampler and setting is when the score is exact, by its cost in score "
        "evaluations. On the reference problem the posterior is Gaussian and known in closed "
        "form, so its noised score is exact and every error left is the sampler's. Problem: "
        "`make_problem(n=8, mask_fraction=0.5)` (8x8 field, blur 1 px, half the pixels masked, "
        f"5% noise), {m} measurements, {n} samples per measurement: {m * n} chains per setting. "
        "Ladders are geometric from sigma_1 = 10 to sigma_L = 0.01 unless stated. AL = "
        "annealed-langevin (T steps per level; \"eps xk\" = k times the NCSNv2 rule for that "
        "ladder), PC = predictor-corrector (K corrector steps, snr r). All settings end with the "
        "final denoising step unless \"no denoise\". Heun and DPM-2M (plugin `invdiff-edm`) run "
        "the probability-flow ODE on their own schedule of N levels from 10 to 0.01 (Karras "
        "rho = 7 unless \"geometric\"; DPM-2M geometric unless \"rho=7\"), from the shifted "
        "start x + D(x, sigma_max) and with the \"ode\" last step x + sigma_min^2 s / 2, unless "
        "stated.",
        "",
        *_provenance_list(s),
        "",
        "Columns: mean error in exact posterior stds (RMS over pixels); std ratio = sample std / "
        "exact posterior std per pixel (1 = exact; what a sampler should reach, not the law it "
        "reaches at best); \"std (recursion)\": the noise-free expected std ratio from the exact "
        "variance recursion of fixed-step samplers (see the benchmark's docstring), mean over "
        "pixels / max |ratio - 1|; W2: Gaussian 2-Wasserstein distance to N(m, S). Monte Carlo "
        f"error of the sampled std ratio: about 1/sqrt(2 x {m * n}) per pixel; the row \"exact\" "
        "shows the floor of each metric. Seconds are comparable within this table only.",
        "",
        *md_table(SAMPLER_HEAD, [sampler_row(r) for r in s["settings"]]),
        "",
        "Settings that reach a given accuracy (mean over pixels of the sampled std ratio; see "
        "[samplers](../samplers.md) for the discussion):",
        "",
        *sampler_goals(s["settings"], s["goals"]),
        "",
        f"![accuracy vs nfe]({s['figure']})",
        "",
        "The same settings on the 16x16 problem (`make_problem(n=16, mask_fraction=0.5)`: half "
        "the posterior's eigenvalues are ~1e-4, std 0.01 = sigma_L), noise-free std ratio from "
        "the exact recursion (settings without one are left out):",
        "",
        *md_table(["setting", "nfe", "std (recursion): mean / max err"],
                   [[r["label"], r["nfe"], _recursion(r)] for r in s["recursion_16"]]),
        "",
        "A score that knows only the levels of a geometric ladder from 10 to 0.01 (the exact "
        "score at the nearest level, in log sigma: the worst case of a net trained only at its "
        "ladder's levels), 8x8 problem. `on_ladder` moves the schedule's levels onto the "
        "ladder's (repeats dropped, hence fewer evaluations on a short ladder):",
        "",
        *md_table(["ladder levels", "setting", "on_ladder", "nfe", "mean error",
                    "std ratio (mean)", "max abs(ratio-1)"],
                   [[r["levels"], r["label"], r["on_ladder"], r["nfe"], f"{r['mean_error']:.3f}",
                     f"{r['std_ratio']:.4f}", f"{r['max_std_error']:.3f}"]
                    for r in s["ladder_only"]]),
        "",
        "## What a perfect sampler scores with the study's metrics",
        "",
        f"Exact posterior samples of the `{floor['problem']}` problem (study preset "
        f"`{floor['preset']}`, its first {floor['n_test']} held-out measurements), scored "
        "exactly as a learned posterior is in the benchmark study "
        "(`invdiff.evaluation.metrics.sample_metrics`). With finitely many samples neither the "
        "std ratio nor the std-field correlation reaches 1, and the coverage scatters around its "
        "nominal level: a learned posterior is read against this table, not against 1. Mean ± "
        f"std over {floor['repeats']} draws, beside the closed-form expectation of "
        "`invdiff.evaluation.metrics.exact_sampler_scores` (std ratio = c4(n), the bias of the "
        "sample std; std corr = sqrt(V / (V + E[s^2] / (2 (n - 1)))) with V the variance of the "
        "exact std field over pixels). The mean error is in posterior stds: the Monte Carlo "
        "error of an n-sample mean, about 1/sqrt(n).",
        "",
        *_provenance_list(floor),
        "",
        *md_table(["samples", "std ratio", "std corr", "90% coverage", "mean error",
                    "predicted std ratio", "predicted std corr"],
                   [[r["samples"], *(f"{r[k][0]:.3f} ± {r[k][1]:.3f}" for k in
                                     ("std_ratio", "std_corr", "coverage_90", "mean_err_std")),
                     f"{r['predicted_std_ratio']:.3f}", f"{r['predicted_std_corr']:.3f}"]
                    for r in floor["rows"]]),
        "",
        "## On a trained net",
        "",
        "With a learned score the samplers are compared in the benchmark study, on all three "
        "problems and both bundled nets, against reference posteriors: [which net and "
        "sampler](which-net-and-sampler.md). With the U-Net every sampler lands within a few "
        "per cent of the others' std ratio, and the gap that remains to the exact posterior is "
        "the learned score's, not the sampler's; with the paper's RefineNet the "
        "probability-flow ODE samplers (`heun`, `dpm-2m`) fail.",
        "",
    ]
    return "\n".join(out)


# fem.md: bench_fem.py and bench_threads.py

def fem_row(r: dict) -> list:
    """One grid's row of the FEM table (also the benchmark's progress line)."""
    sk = ([f"{r['skfem']:.1f}", f"{r['speedup']:.1f}x", f"{r['maxdiff']:.1e}"]
          if r.get("skfem") else ["n/a"] * 3)
    return [r["N"], r["dofs"], f"{r['ours']:.1f}", f"{r['ours_batch']:.1f}", *sk]


FEM_HEAD = ["N", "dofs", "ours (solves/s)", "ours, one batched call", "scikit-fem (solves/s)",
            "speed-up", "max abs diff of u"]


def _threads_rows(run: dict) -> dict[str, dict]:
    return {r["key"]: r for r in run["rows"]}


def fem_page(data: Path = DATA) -> str:
    runs = read_runs(data / "fem.json")
    last = runs[-1]
    out = [
        "# FEM solver speed: invdiff-elasticity vs scikit-fem",
        "",
        _generated("fem.json", "threads.json"),
        "",
        "How many fields per second the elasticity FEM turns into displacements, against "
        "scikit-fem on the same problem. Both solve the canonical physics (N x N Q1 elements, "
        f"top compression {last['compression']:g}) for the same {last['fields']} log-normal "
        "fields: assembly + factorisation + solve per field, with everything that depends only "
        "on the grid built once beforehand; \"ours, one batched call\" gives all fields to one "
        f"call. Each rate is the best of {last['repeats']} repeats, the solvers timed in turn "
        "within each repeat, so that a change of load hits them alike: compare the columns of "
        "one row, not absolute rates across runs. Max abs diff: between the two nodal "
        "displacements (both are the same discrete problem, so it is round-off).",
        "",
        *_provenance_list(last),
        "",
        *md_table(FEM_HEAD, [fem_row(r) for r in last["rows"]]),
        "",
    ]
    if len(runs) > 1:
        grids = list(dict.fromkeys(r["N"] for run in runs for r in run["rows"]))
        machines = len({run["machine"].split(";")[0] for run in runs}) > 1
        table = []
        for i, run in enumerate(runs, 1):
            by_n = {r["N"]: r for r in run["rows"] if r.get("skfem")}
            table.append([i, run["date"], *([run["machine"]] if machines else [])]
                         + [f"{by_n[g]['speedup']:.1f}x" if g in by_n else "" for g in grids])
        out += ["The speed-up over scikit-fem in every run of the result file (the table above is "
                "the last run; each run's command and machine are in the file):", "",
                *md_table(["run", "measured", *(["machine"] if machines else [])]
                          + [f"N = {g}" for g in grids], table), ""]
    threads = read_runs(data / "threads.json")
    out += [
        "## Default environment, idle and loaded",
        "",
        "The solver runs each banded Cholesky on one BLAS thread "
        "(`invdiff_elasticity.solvers.SOLVE_THREADS`), whatever `OPENBLAS_NUM_THREADS` says, "
        "so the rates above need no thread variable: OpenBLAS's threads spin while they wait, "
        "and with its default of one thread per core a solve is slower, most of all beside "
        "other work. Measured by `benchmarks/bench_threads.py`: the time per operation in a "
        "fresh process whose environment has no `*_NUM_THREADS` variables (what a user gets), "
        "idle and beside one busy process (a pure-Python loop on one core), for an FEM solve "
        "at N = 64 with and without the solver's thread limit, and a U-Net training step with "
        "1 and 2 torch threads.",
        "",
    ]
    for run in threads:
        rows = _threads_rows(run)
        out += [f"### {run['title']}", "", *_provenance_list(run), "",
                *md_table(["workload", "setting", "idle (s)", "beside a busy process (s)",
                            "loaded / idle"],
                           [[r["workload"], r["setting"], f"{r['idle']:.3g}",
                             f"{r['loaded']:.3g}", f"{r['loaded_over_idle']:.3g}"]
                            for r in run["rows"]]), ""]
        lim, dflt = rows.get("fem-limited"), rows.get("fem-default")
        if lim and dflt:
            out.append(f"Limiting the threads makes the solve "
                       f"{_faster(dflt['idle'] / lim['idle'], 1)} idle and "
                       f"{_faster(dflt['loaded'] / lim['loaded'], 1)} beside the busy process; "
                       f"beside it the one-thread solve takes {lim['loaded_over_idle']:.3g}x "
                       "its idle time.")
        one, two = rows.get("train-1"), rows.get("train-2")
        if one and two:
            out.append(f"A training step with two torch threads is "
                       f"{_faster(one['idle'] / two['idle'], 1)} than with one idle "
                       f"({two['idle']:.2f} against {one['idle']:.2f} s) and "
                       f"{_faster(one['loaded'] / two['loaded'], 1)} beside the busy process.")
        out.append("")
    out += [
        "On a machine already carrying other jobs, the busy process takes a core the solve "
        "would otherwise have had, and no thread setting wins that back; but spinning threads "
        "make it worse. Two torch threads can be faster for a training step on an idle machine, "
        "yet beside other work one thread is faster, and more so the busier the machine (the "
        "measurement of `benchmarks/bench_threads.py` below): hence the one-thread "
        "default (`threads = None` gives one per core; the policy: "
        "[threads](../reliability.md#threads)).",
        "",
    ]
    return "\n".join(out)


# simulate.md: bench_simulate.py

SIMULATE_PROBLEMS = {  # key: (row label, name in a sentence)
    "elasticity-32": ("elasticity FEM, N = 32 (circular inclusion, scipy banded Cholesky)",
                      "the FEM at N = 32"),
    "reference-32": ("reference (blur, n = 32)", "the reference problem"),
}


def _sig3(v: float) -> str:
    """Three significant figures, thousands apart by a space: 9 220, 262, 1.72."""
    v = float(f"{v:.3g}")
    return f"{v:,.0f}".replace(",", " ") if v >= 100 else f"{v:g}"


def simulate_page(data: Path = DATA) -> str:
    runs = read_runs(data / "simulate.json")
    out = [
        "# Simulation throughput, 1 vs 2 worker processes",
        "",
        _generated("simulate.json"),
        "",
        "Pairs per second of `invdiff.simulate` with one and two worker processes "
        "(`data.workers`), each worker on one thread, both worker counts measured side by side "
        "in one run (mean time of a whole call, pool start-up included, after a warm-up "
        "call). "
        "Problems: the elasticity FEM at N = 32 (a few milliseconds per solve) and the "
        "reference problem (a linear blur: one small matrix product per chunk).",
        "",
    ]
    for run in runs:
        out += [f"## {run['title']}", "", *_provenance_list(run), ""]
        table, base, said = [], {}, []
        for r in run["rows"]:
            label, name = SIMULATE_PROBLEMS.get(r["problem"], (r["problem"], r["problem"]))
            base.setdefault(r["problem"], r["mean_seconds"])
            ratio = base[r["problem"]] / r["mean_seconds"]
            table.append([label, r["pairs"], r["workers"], f"{r['mean_seconds']:.3f} s",
                          _sig3(r["pairs_per_s"]),
                          "1.00" if r["workers"] == 1 else f"{ratio:.2f}x"])
            if r["workers"] > 1:
                said.append(f"{name} ran {_faster(ratio)} with {r['workers']} workers")
        out += [*md_table(["problem", "pairs", "workers", "mean time", "pairs / s", "ratio"],
                           table), "",
                f"In this run (mean of {run['rounds']} calls per row): " + "; ".join(said) + ".",
                ""]
    out += [
        "A second worker pays off where a pair is expensive and a core is free for it: a FEM "
        "solve is long against the cost of starting the pool and pickling each chunk, while "
        "the reference problem's forward model costs less than that overhead; on a machine "
        "whose cores are busy with other jobs, the second worker competes with them and the "
        "overhead can outweigh the gain. The workers limit their BLAS threads to "
        "one (threadpoolctl): with OpenBLAS's default of one spinning thread per core, two FEM "
        "workers on two cores were many times slower than one.",
        "",
    ]
    return "\n".join(out)


# scale-out.md: bench_scale_out.py

SCALE_OUT_MODES = {
    "one": "1 process", "pool": "2 processes (local pool)",
    "dask": "2 Dask workers (running LocalCluster)", "threads-1": "1 process, 1 thread",
    "threads-2": "1 process, 2 threads", "ddp": "2 ranks (DDP, gloo), 1 thread each",
}


def _scale_out_rows(run: dict) -> tuple[list[list], dict]:
    table, by = [], {}
    for r in run["rows"]:
        if r["work"] == "dask-start":
            table.append(["start a Dask LocalCluster of 2 workers (imports included)",
                          "2 Dask workers", f"{r['seconds']:.1f} s once", ""])
            by["dask-start"] = r
            continue
        if r["work"] == "simulate":
            work = f"simulate elasticity N = {r['grid']} ({r['pairs']} pairs)"
            rate = f"{r['pairs_per_s']:.0f} pairs/s"
        else:
            work = f"train U-Net {r['grid']}x{r['grid']}, global batch {r['batch']}"
            rate = f"{r['examples_per_s']:.1f} examples/s"
        table.append([work, SCALE_OUT_MODES.get(r["mode"], r["mode"]), rate,
                      f"{r['ratio']:.2f}x"])
        by[(r["work"], r.get("grid"), r["mode"])] = r
    return table, by


def scale_out_page(data: Path = DATA) -> str:
    run = read_runs(data / "scale-out.json")[-1]
    table, by = _scale_out_rows(run)
    grids = [r["grid"] for r in run["rows"] if r["work"] == "simulate" and r["mode"] == "one"]
    train_grid = next(r["grid"] for r in run["rows"] if r["work"] == "train")

    def ratio(work, grid, mode):
        return by[(work, grid, mode)]["ratio"]

    def sim(mode):
        first, *rest = grids
        return (f"{ratio('simulate', first, mode):.2f}x the rate of one process at N = {first}"
                + "".join(f" and {ratio('simulate', g, mode):.2f}x at N = {g}" for g in rest))

    def train(mode):  # from the rates: the stored ratios of a recorded run are rounded
        rate = lambda m: by[("train", train_grid, m)]["examples_per_s"]  # noqa: E731
        return rate(mode) / rate("threads-1")

    out = [
        "# Scale-out: 1 vs 2 processes on one machine",
        "",
        _generated("scale-out.json"),
        "",
        "What a second process gives on one machine, every row measured side by side in one "
        "run: simulation with a process pool of 2 (`data.executor = \"local\"`, "
        "`workers = 2`) and with a Dask LocalCluster of 2 single-threaded workers "
        "(`executor = \"dask\"`), against one process; training of the demo's U-Net with two "
        "DDP ranks (gloo, one thread each) and with one process on two threads, against one "
        "process on one thread. When other jobs share the machine, a second process competes "
        "for the same cores with them, so the ratios understate what two free cores give (a "
        "run on a quiet machine: [simulate.md](simulate.md)). They are not a statement about "
        "GPUs or clusters: this benchmark runs CPU processes only, and the CUDA/`nccl` path "
        "is not timed here.",
        "",
        *_provenance_list(run),
        "",
        *md_table(["work", "processes", "throughput", "ratio to 1 process"], table),
        "",
        "Reading:",
        "",
        f"- **Training**: two DDP ranks with one thread each trained "
        f"{_faster(train('ddp'))} than one process, while one process with two threads was "
        f"{_faster(train('threads-2'), 1)} than with "
        "one: on oversubscribed cores intra-op threads wait on each other, processes do not. "
        "On CPU, scale training with ranks (each on the default `training.threads = 1`), not "
        "with threads ([thread policy](../reliability.md#threads)). The benchmark sets each "
        "case's threads itself (`torch.set_num_threads` in each process); its command line's "
        "`OMP_NUM_THREADS=1` only keeps the parent process to one thread.",
        f"- **Simulation**: the local pool of 2 reached {sim('pool')}: the longer a solve, "
        "the smaller the share of the per-chunk overhead. Dask "
        "moves every chunk through its scheduler and runs event-loop threads next to the work "
        f"in each worker; it ran at {sim('dask')}. Dask's purpose is the cluster (many hosts, "
        "a scheduler that survives workers), not two cores: on one machine prefer "
        f"`executor = \"local\"`. Its start-up ({by['dask-start']['seconds']:.0f} s here, "
        "mostly the workers importing torch and the plugins) is paid once per "
        "`invdiff simulate`, so it matters for short runs only.",
        "",
    ]
    return "\n".join(out)


#: generated pages of docs/results (besides which-net-and-sampler.md): name -> (renderer of
#: the result-file folder, the result files it reads)
PAGES: dict[str, tuple[Callable[[Path], str], tuple[str, ...]]] = {
    "samplers.md": (samplers_page, ("samplers.json", "exact-sampler-floor.json")),
    "fem.md": (fem_page, ("fem.json", "threads.json")),
    "simulate.md": (simulate_page, ("simulate.json",)),
    "scale-out.md": (scale_out_page, ("scale-out.json",)),
}


def render(name: str, data: Path = DATA) -> str:
    """The text of the generated page ``name`` from the result files in ``data``."""
    return PAGES[name][0](data)


def update_plots_section(md: Path, names: list[str]) -> None:
    """Replace the ``## Plots`` section at the end of a study's results.md."""
    text = md.read_text()
    i = text.find("\n## Plots")
    head = text if i < 0 else text[:i]
    body = "\n".join(f"![{n}]({n})" for n in names)
    md.write_text(head.rstrip() + "\n\n## Plots\n\n" + body + "\n")


def redraw(folder: Path) -> list[str]:
    """Draw a finished study's figures again from its files and list them in results.md."""
    from invdiff.study.plots import make_plots, read_result

    old = {p.name for p in folder.glob("*.png")}
    paths = make_plots(read_result(folder), folder)
    names = [p.name for p in paths]
    for stale in old - set(names):
        if re.fullmatch(r"(rmse|cost|std_ratio_.*|noise_.*|calibration_.*)\.png", stale):
            (folder / stale).unlink()
    if (folder / "results.md").exists():
        update_plots_section(folder / "results.md", names)
    return names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--study", type=Path, default=STUDY, help="study folder with results.csv")
    ap.add_argument("--peer", type=Path, default=PEER,
                    help="study folder whose results.csv holds the peer's rows ('' for none)")
    ap.add_argument("--out", type=Path, default=PAGE, help="where which-net-and-sampler.md goes")
    ap.add_argument("--data", type=Path, default=DATA,
                    help="folder of the benchmarks' result files (JSON)")
    ap.add_argument("--pages", type=Path, default=RESULTS,
                    help="folder of the pages made from them")
    ap.add_argument("--page", action="append", choices=[PAGE.name, *PAGES], metavar="NAME",
                    help="only this page (repeatable; default: all of them)")
    ap.add_argument("--check", action="store_true",
                    help="write nothing; exit 1 if a page differs from its result files")
    ap.add_argument("--figures", type=Path, nargs="*", default=None, metavar="DIR",
                    help="redraw these studies' figures from their files (instead of the pages)")
    args = ap.parse_args(argv)
    if args.figures is not None:
        for folder in args.figures:
            print(folder, ":", ", ".join(redraw(folder.resolve())))
        return 0
    peer = args.peer.resolve() if str(args.peer) not in ("", ".") else None
    jobs = {PAGE.name: (args.out, lambda: page(args.study.resolve(), peer),
                        f"{args.study}/results.csv")}
    for name, (_, files) in PAGES.items():
        jobs[name] = (args.pages / name, lambda name=name: render(name, args.data),
                      ", ".join(str(args.data / f) for f in files))
    stale = 0
    for name in args.page or jobs:
        out, make, sources = jobs[name]
        text = make()
        if not args.check:
            out.write_text(text)
            print(f"wrote {out}")
        elif not out.exists() or out.read_text() != text:
            print(f"{out} is not up to date with {sources}: run "
                  "python benchmarks/results_pages.py", file=sys.stderr)
            stale += 1
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
