"""PNG plots of the study (matplotlib, Agg backend): accuracy per cell, accuracy against the
noise level, calibration (expected coverage and SBC rank histograms) and cost."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from .runner import StudyResult


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    _plt().close(fig)
    return path


def accuracy_plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """RMSE of the posterior mean per (net, sampler), one panel per problem (well-specified
    cells at each problem's first level), with the reference's RMSE as a dashed line."""
    plt = _plt()
    problems = list(dict.fromkeys(r["problem"] for r in rows))
    fig, axes = plt.subplots(1, len(problems), figsize=(4 * len(problems), 3.2), squeeze=False)
    for ax, problem in zip(axes[0], problems, strict=True):
        sel = [r for r in rows if r["problem"] == problem and r["noise_train"] == r["noise_test"]]
        first = sel[0]["noise_test"]
        sel = [r for r in sel if r["noise_test"] == first]
        ax.bar(range(len(sel)), [r["rmse_truth"] for r in sel], color="tab:blue")
        ax.set_xticks(range(len(sel)), [f"{r['net']}\n{r['sampler']}" for r in sel],
                      fontsize=6, rotation=30)
        refs = [r["ref_rmse_truth"] for r in sel if r.get("ref_rmse_truth") is not None]
        if refs:
            ax.axhline(refs[0], ls="--", color="k", label=f"{sel[0]['reference']} (its subset)")
            ax.legend(fontsize=7)
        ax.set_title(f"{problem}, noise {first:g}", fontsize=9)
        ax.set_ylabel("posterior-mean RMSE vs truth", fontsize=8)
    return _save(fig, path)


def noise_plot(rows: list[dict[str, Any]], problem: str, path: Path) -> Path:
    """Well-specified cells against the noise level: RMSE (cSDM and reference, on the
    reference's measurements) and the correlation of the std fields with the reference's."""
    plt = _plt()
    diag = [r for r in rows if r["problem"] == problem and r["noise_train"] == r["noise_test"]]
    by_cell: dict[str, list] = defaultdict(list)
    for r in diag:
        by_cell[f"{r['net']} / {r['sampler']}"].append(r)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    for label, rs in by_cell.items():
        rs.sort(key=lambda r: r["noise_test"])
        lv = [r["noise_test"] for r in rs]
        a.plot(lv, [r.get("rmse_truth_refset", r["rmse_truth"]) for r in rs], "o-", label=label)
        if rs[0].get("std_corr") is not None:
            b.plot(lv, [r["std_corr"] for r in rs], "o-", label=label)
    ref = sorted({(r["noise_test"], r["ref_rmse_truth"]) for r in diag
                  if r.get("ref_rmse_truth") is not None})
    if ref:
        a.plot([p[0] for p in ref], [p[1] for p in ref], "ks--", label=diag[0]["reference"])
    a.set_xlabel(f"noise ({diag[0]['noise_param']})")
    a.set_ylabel("posterior-mean RMSE vs truth")
    b.set_xlabel(f"noise ({diag[0]['noise_param']})")
    b.set_ylabel("corr(std field, reference std field)")
    a.legend(fontsize=7)
    a.set_title(problem, fontsize=9)
    return _save(fig, path)


def calibration_plot(calibration: dict[str, dict[str, Any]], problem: str, path: Path) -> Path:
    """Expected coverage (nominal vs empirical) and SBC rank histograms (count / expected) of
    the problem's well-specified cells."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    a.plot([0, 1], [0, 1], "k:", lw=1)
    for key, c in calibration.items():
        prob, net, sampler, train, test = key.split("/")
        if prob != problem or train != test:
            continue
        label = f"{net} / {sampler} @ {test}"
        a.plot(c["levels"], c["coverage"], "o-", ms=3, label=label)
        ratio = [n / e for n, e in zip(c["rank_counts"], c["rank_expected"], strict=True)]
        edges = [i / len(ratio) for i in range(len(ratio) + 1)]
        b.stairs(ratio, edges, label=label)
    b.axhline(1.0, color="k", lw=1, ls=":")
    a.set_xlabel("nominal coverage")
    a.set_ylabel("empirical coverage")
    a.set_title(f"{problem}: expected coverage", fontsize=9)
    b.set_xlabel("normalised SBC rank")
    b.set_ylabel("count / uniform expectation")
    b.set_title("SBC ranks (flat = calibrated)", fontsize=9)
    a.legend(fontsize=6)
    return _save(fig, path)


def cost_plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """Seconds per new measurement: each cSDM cell and the sampled reference (log scale)."""
    plt = _plt()
    labels, secs, colors = [], [], []
    for r in rows:
        if r["noise_train"] != r["noise_test"]:
            continue
        labels.append(f"{r['problem']} {r['noise_test']:g}\n{r['net']}/{r['sampler']}")
        secs.append(r["seconds"])
        colors.append("tab:blue")
    refs = {(r["problem"], r["noise_test"]): r["ref_seconds"] for r in rows
            if r.get("ref_sampled") and r.get("ref_seconds")}
    for (problem, level), s in refs.items():
        labels.append(f"{problem} {level:g}\nMCMC")
        secs.append(s)
        colors.append("tab:red")
    fig, ax = plt.subplots(figsize=(max(5, 0.45 * len(labels)), 3.6))
    ax.bar(range(len(secs)), secs, color=colors)
    ax.set_yscale("log")
    ax.set_xticks(range(len(labels)), labels, fontsize=5, rotation=90)
    ax.set_ylabel("seconds per measurement")
    ax.set_title("cost of one new measurement (blue: cSDM sampling, red: MCMC)", fontsize=9)
    return _save(fig, path)


def make_plots(result: StudyResult, out: Path) -> list[Path]:
    rows = [r for r in result.rows if r.get("missing", "none") == "none"]  # complete y
    if not rows:
        return []
    paths = [accuracy_plot(rows, out / "rmse.png"), cost_plot(rows, out / "cost.png")]
    for problem in dict.fromkeys(r["problem"] for r in rows):
        levels = {r["noise_test"] for r in rows if r["problem"] == problem}
        if len(levels) > 1:
            paths.append(noise_plot(rows, problem, out / f"noise_{problem}.png"))
        paths.append(calibration_plot(result.calibration, problem,
                                      out / f"calibration_{problem}.png"))
    return paths
