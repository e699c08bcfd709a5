"""Pages and figures of docs/results made from the result files, never copied by hand.

    .venv/bin/python benchmarks/results_pages.py          # writes which-net-and-sampler.md
    .venv/bin/python benchmarks/results_pages.py --check  # fails if that page is not up to date
    .venv/bin/python benchmarks/results_pages.py --figures docs/results/study/cpu-defaults

The page answers "which net and sampler should I use, and how good is it?" from a study's
``results.csv`` (default: the ``cpu`` study with the current training defaults,
``docs/results/study/cpu-defaults``): per problem and noise level, every net and sampler with
its std ratio to the reference posterior, 90% coverage, score evaluations, sampling seconds
per measurement and std-field correlation; the sbi peer's row from another study's
``results.csv`` beside them where it has one (``--peer``); and a recommendation computed from
the numbers by the rule the page states (:func:`recommend`).

``--figures DIR ...`` draws a finished study's figures again from its ``results.csv`` and
``calibration.json`` (``invdiff.study.plots``; no training or sampling) and updates the list
of figures at the end of its ``results.md``. The page itself needs only the standard library
(``make docs`` runs ``--check`` in a fraction of a second).
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
STUDY = RESULTS / "study" / "cpu-defaults"
PEER = RESULTS / "study" / "cpu"
PAGE = RESULTS / "which-net-and-sampler.md"

COVERAGE = (0.85, 0.97)  # a 90% interval counts as calibrated when it covers this share
MAX_STD_RATIO = 2.0      # usable: at most twice as wide as the reference posterior ...
MIN_STD_CORR = 0.5       # ... with its uncertainty in the right places
PEER_NETS = ("sbi-npse-mlp",)

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
            "The `refinenet` cells are the cSDM paper's RefineNet as the `cpu` preset builds it "
            "(width 8, `output = \"ncsn\"`, norms not conditioned on the noise level); the "
            "variant of it that uses the measurement is described in "
            "[networks](../networks.md#does-the-net-use-y-benchmarksy_sensitivitypy).",
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
                out += ["", f"The `{peer_rows[0]['net']}` row is the peer method, sbi's neural "
                        "posterior score estimation, trained on the same simulated pairs "
                        f"(from [`{rel(peer)}`]({rel(peer)}/results.md); the training "
                        "defaults of invdiff do not apply to it)."]
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
    ap.add_argument("--out", type=Path, default=PAGE)
    ap.add_argument("--check", action="store_true",
                    help="write nothing; exit 1 if the page differs from the results")
    ap.add_argument("--figures", type=Path, nargs="*", default=None, metavar="DIR",
                    help="redraw these studies' figures from their files (instead of the page)")
    args = ap.parse_args(argv)
    if args.figures is not None:
        for folder in args.figures:
            print(folder, ":", ", ".join(redraw(folder.resolve())))
        return 0
    peer = args.peer.resolve() if str(args.peer) not in ("", ".") else None
    text = page(args.study.resolve(), peer)
    if args.check:
        if not args.out.exists() or args.out.read_text() != text:
            print(f"{args.out} is not up to date with {args.study}/results.csv: run "
                  "python benchmarks/results_pages.py", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
