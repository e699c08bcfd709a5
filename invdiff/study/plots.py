"""PNG plots of the study (matplotlib, Agg backend), each answering one question:

* ``rmse.png``: how far is each cell's posterior mean from the truth (per problem, against the
  reference posterior's own error);
* ``std_ratio_<problem>.png``: is the posterior as wide as the reference posterior (1 = exact,
  above 1 too wide), each cell a point, by net and sampler, one panel per noise level;
* ``calibration_<problem>.png``: expected coverage, one small panel per net (and noise level),
  one curve per sampler;
* ``noise_<problem>.png``: accuracy against the noise level (problems with several levels);
* ``cost.png``: seconds per new measurement by sampler and net, one panel per problem, with
  the MCMC reference's seconds for comparison.

Colours stand for nets and markers for samplers in every figure; legends sit outside the
axes. :func:`read_result` rebuilds a :class:`~invdiff.study.runner.StudyResult` from a study's
``results.csv`` and ``calibration.json``, so the figures of a finished study can be drawn
again without running it."""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from .runner import StudyResult

_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink",
           "tab:olive", "tab:cyan")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=100, bbox_inches="tight")
    _plt().close(fig)
    return path


def _num(v: Any) -> float | None:
    """A finite float, or None for a missing or non-finite value."""
    if v is None or v == "" or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _unique(values) -> list:
    return list(dict.fromkeys(values))


def _styles(rows: list[dict[str, Any]]) -> tuple[dict[str, str], dict[str, str]]:
    """Colour per net and marker per sampler, in the order the rows name them."""
    nets = _unique(r["net"] for r in rows)
    samplers = _unique(r["sampler"] for r in rows)
    return ({n: _COLORS[i % len(_COLORS)] for i, n in enumerate(nets)},
            {s: _MARKERS[i % len(_MARKERS)] for i, s in enumerate(samplers)})


def _well_specified(rows: list[dict[str, Any]], problem: str | None = None) -> list[dict]:
    return [r for r in rows if r["noise_train"] == r["noise_test"]
            and (problem is None or r["problem"] == problem)]


def _noise_label(row: dict[str, Any]) -> str:
    """``noise level 0.05``, ``noise snr0 300``: the noise parameter the levels are of."""
    param = row.get("noise_param") or ""
    return f"noise {param} {row['noise_test']:g}".replace("  ", " ")


def _legend(fig: Any, handles: list, labels: list[str], title: str | None = None) -> None:
    """One legend for the whole figure, below the panels (never over the data)."""
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 5),
                   fontsize=8, title=title, title_fontsize=8, frameon=False)


def _net_handles(colors: dict[str, str]) -> tuple[list, list[str]]:
    from matplotlib.lines import Line2D

    return ([Line2D([], [], color=c, marker="o", ls="") for c in colors.values()],
            list(colors))


def _sampler_handles(markers: dict[str, str], color: str = "0.3") -> tuple[list, list[str]]:
    from matplotlib.lines import Line2D

    return ([Line2D([], [], color=color, marker=m, ls="") for m in markers.values()],
            list(markers))


def _dots(ax: Any, cells: list[dict[str, Any]], key: str, samplers: list[str],
          colors: dict[str, str], markers: dict[str, str], label_fmt: str | None = None) -> None:
    """One point per cell at x = its sampler, nets side by side around it."""
    nets = _unique(r["net"] for r in cells)
    width = 0.6 / max(len(nets), 1)
    for j, net in enumerate(nets):
        for r in cells:
            v = _num(r.get(key))
            if r["net"] != net or v is None:
                continue
            x = samplers.index(r["sampler"]) + (j - (len(nets) - 1) / 2) * width
            ax.plot(x, v, marker=markers[r["sampler"]], color=colors[net], ms=7, ls="")
            if label_fmt:
                ax.annotate(format(v, label_fmt), (x, v), xytext=(5, 0),
                            textcoords="offset points", fontsize=7, va="center")
    ax.set_xticks(range(len(samplers)), samplers, fontsize=8, rotation=20, ha="right")
    ax.set_xlim(-0.6, len(samplers) - 0.4)
    ax.grid(axis="y", alpha=0.3)


def accuracy_plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """RMSE of the posterior mean against the truth, one panel per problem (well-specified
    cells at each problem's first level), each cell a point (colour: net, x: sampler), with
    the reference posterior's RMSE (on its own measurements) as a dashed line."""
    plt = _plt()
    colors, markers = _styles(rows)
    problems = _unique(r["problem"] for r in rows)
    fig, axes = plt.subplots(1, len(problems), figsize=(3.6 * len(problems), 3.4),
                             squeeze=False, layout="constrained")
    for ax, problem in zip(axes[0], problems, strict=True):
        sel = _well_specified(rows, problem)
        if not sel:
            ax.set_visible(False)
            continue
        first = sel[0]["noise_test"]
        sel = [r for r in sel if r["noise_test"] == first]
        _dots(ax, sel, "rmse_truth", _unique(r["sampler"] for r in sel), colors, markers)
        refs = [_num(r.get("ref_rmse_truth")) for r in sel]
        refs = [v for v in refs if v is not None]
        if refs:
            ax.axhline(refs[0], ls="--", color="k", lw=1)
        ax.set_ylim(bottom=0)
        ax.set_title(f"{problem}, {_noise_label(sel[0])}", fontsize=9)
        ax.set_ylabel("posterior-mean RMSE vs truth", fontsize=8)
    from matplotlib.lines import Line2D

    handles, labels = _net_handles(colors)
    handles.append(Line2D([], [], color="k", ls="--", lw=1))
    labels.append("reference posterior (on its measurements)")
    _legend(fig, handles, labels)
    return _save(fig, path)


def std_ratio_plot(rows: list[dict[str, Any]], problem: str, path: Path) -> Path:
    """Posterior std over the reference posterior's std (1 = exact, above 1 too wide), each
    well-specified cell a labelled point (colour: net, x: sampler), one panel per noise level;
    a log scale when the cells span more than a factor of 3."""
    plt = _plt()
    colors, markers = _styles(rows)
    cells = [r for r in _well_specified(rows, problem) if _num(r.get("std_ratio")) is not None]
    levels = _unique(r["noise_test"] for r in cells) or [None]
    fig, axes = plt.subplots(1, len(levels), figsize=(3.8 * len(levels), 3.6), squeeze=False,
                             layout="constrained", sharey=True)
    values = [_num(r["std_ratio"]) for r in cells]
    log = bool(values) and max(values) / max(min(values), 1e-12) > 3
    for ax, level in zip(axes[0], levels, strict=True):
        sel = [r for r in cells if r["noise_test"] == level]
        _dots(ax, sel, "std_ratio", _unique(r["sampler"] for r in cells), colors, markers,
              label_fmt=".3g")
        ax.axhline(1.0, color="k", lw=1, ls=":")
        if log:
            from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
        ref = sel[0]["reference"] if sel else ""
        ax.set_title(f"{problem}" + (f", {_noise_label(sel[0])}" if sel else "")
                     + (f" (vs {ref})" if ref else ""), fontsize=9)
    axes[0][0].set_ylabel("std ratio to the reference (1 = exact)", fontsize=8)
    if not cells:
        axes[0][0].text(0.5, 0.5, "no cell with a reference std", ha="center",
                        transform=axes[0][0].transAxes)
    _legend(fig, *_net_handles(colors), title="net")
    return _save(fig, path)


def noise_plot(rows: list[dict[str, Any]], problem: str, path: Path) -> Path:
    """Well-specified cells against the noise level: RMSE (cSDM and reference, on the
    reference's measurements) and the correlation of the std fields with the reference's."""
    plt = _plt()
    colors, markers = _styles(rows)
    diag = _well_specified(rows, problem)
    by_cell: dict[tuple[str, str], list] = defaultdict(list)
    for r in diag:
        by_cell[(r["net"], r["sampler"])].append(r)
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.4), layout="constrained")
    handles, labels = [], []
    for (net, sampler), rs in by_cell.items():
        rs.sort(key=lambda r: r["noise_test"])
        lv = [r["noise_test"] for r in rs]
        rmse = [_num(r.get("rmse_truth_refset")) or _num(r["rmse_truth"]) for r in rs]
        (h,) = a.plot(lv, rmse, marker=markers[sampler], color=colors[net], lw=1, ms=5)
        corr = [_num(r.get("std_corr")) for r in rs]
        if any(c is not None for c in corr):
            b.plot(lv, [math.nan if c is None else c for c in corr], marker=markers[sampler],
                   color=colors[net], lw=1, ms=5)
        handles.append(h)
        labels.append(f"{net} / {sampler}")
    ref = sorted({(r["noise_test"], _num(r.get("ref_rmse_truth"))) for r in diag
                  if _num(r.get("ref_rmse_truth")) is not None})
    if ref:
        (h,) = a.plot([p[0] for p in ref], [p[1] for p in ref], "ks--", lw=1, ms=5)
        handles.append(h)
        labels.append(f"reference ({diag[0]['reference']})")
    param = diag[0]["noise_param"] if diag else "noise"
    for ax in (a, b):
        ax.set_xlabel(f"noise ({param})", fontsize=8)
        ax.grid(alpha=0.3)
    a.set_ylabel("posterior-mean RMSE vs truth", fontsize=8)
    b.set_ylabel("corr(std field, reference std field)", fontsize=8)
    a.set_title(f"{problem}: accuracy", fontsize=9)
    b.set_title(f"{problem}: where the uncertainty is", fontsize=9)
    _legend(fig, handles, labels)
    return _save(fig, path)


def calibration_plot(calibration: dict[str, dict[str, Any]], problem: str, path: Path) -> Path:
    """Expected coverage (nominal against empirical; below the diagonal = too narrow, above =
    too wide) of the problem's well-specified cells as small multiples: one panel per net and
    noise level, one curve per sampler."""
    plt = _plt()
    cells = []
    for key, c in calibration.items():
        parts = key.split("/")
        if len(parts) != 5 or parts[0] != problem or parts[3] != parts[4]:
            continue
        cells.append((parts[1], parts[2], parts[4], c))
    nets = _unique(c[0] for c in cells) or [""]
    samplers = _unique(c[1] for c in cells)
    levels = _unique(c[2] for c in cells) or [""]
    markers = {s: _MARKERS[i % len(_MARKERS)] for i, s in enumerate(samplers)}
    scolors = {s: _COLORS[i % len(_COLORS)] for i, s in enumerate(samplers)}
    fig, axes = plt.subplots(len(levels), len(nets), figsize=(2.9 * len(nets) + 0.4,
                                                              2.7 * len(levels) + 0.6),
                             squeeze=False, sharex=True, sharey=True, layout="constrained")
    for i, level in enumerate(levels):
        for j, net in enumerate(nets):
            ax = axes[i][j]
            ax.plot([0, 1], [0, 1], color="k", lw=1, ls=":")
            for n, s, lv, c in cells:
                if n == net and lv == level:
                    ax.plot(c["levels"], c["coverage"], marker=markers[s], color=scolors[s],
                            ms=3, lw=1)
            ax.set_title(f"{net}" + (f", noise {level}" if len(levels) > 1 else ""),
                         fontsize=8)
            ax.set_aspect("equal")
            ax.grid(alpha=0.3)
            if i == len(levels) - 1:
                ax.set_xlabel("nominal coverage", fontsize=8)
            if j == 0:
                ax.set_ylabel("empirical coverage", fontsize=8)
    fig.suptitle(f"{problem}: expected coverage (diagonal: calibrated; above: too wide; "
                 "below: too narrow)", fontsize=9)
    from matplotlib.lines import Line2D

    _legend(fig, [Line2D([], [], color=scolors[s], marker=markers[s]) for s in samplers],
            samplers, title="sampler")
    return _save(fig, path)


def cost_plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """Sampling seconds per new measurement (all its samples), one panel per problem: each
    (sampler, net) a point (the median over the problem's noise levels; log scale), the score
    evaluations per sample in the sampler's label, and the MCMC reference's seconds per
    measurement on a row of its own where the reference is sampled."""
    plt = _plt()
    colors, markers = _styles(rows)
    problems = _unique(r["problem"] for r in rows)
    fig, axes = plt.subplots(1, len(problems), figsize=(3.9 * len(problems), 3.2),
                             squeeze=False, layout="constrained")
    for ax, problem in zip(axes[0], problems, strict=True):
        sel = _well_specified(rows, problem)
        samplers = _unique(r["sampler"] for r in sel)
        nets = _unique(r["net"] for r in sel)
        nfe = {r["sampler"]: r.get("nfe") for r in sel}
        height = 0.6 / max(len(nets), 1)
        for j, net in enumerate(nets):
            for s in samplers:
                secs = sorted(v for r in sel if r["net"] == net and r["sampler"] == s
                              and (v := _num(r.get("seconds"))) is not None)
                if not secs:
                    continue
                v = secs[len(secs) // 2]
                y = samplers.index(s) + (j - (len(nets) - 1) / 2) * height
                ax.plot(v, y, marker=markers[s], color=colors[net], ms=7, ls="")
                ax.annotate(f"{v:.3g} s", (v, y), xytext=(6, 0), textcoords="offset points",
                            fontsize=7, va="center")
        refs = sorted(v for r in sel if r.get("ref_sampled")
                      and (v := _num(r.get("ref_seconds"))) is not None)
        labels = [f"{s}\n({_nfe(nfe[s])} calls)" if _nfe(nfe[s]) else s for s in samplers]
        if refs:  # the reference's own row, below the samplers
            ref = refs[len(refs) // 2]
            ax.plot(ref, len(samplers), marker="X", color="tab:red", ms=8, ls="")
            ax.annotate(f"{ref:.3g} s", (ref, len(samplers)), xytext=(6, 0),
                        textcoords="offset points", fontsize=7, va="center", color="tab:red")
            labels.append(f"{sel[0]['reference']}\n(the reference)")
        ax.set_xscale("log")
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_ylim(len(labels) - 0.5, -0.5)
        ax.margins(x=0.25)
        ax.grid(axis="x", alpha=0.3, which="both")
        ax.set_xlabel("seconds per measurement", fontsize=8)
        ax.set_title(problem, fontsize=9)
    _legend(fig, *_net_handles(colors), title="net")
    return _save(fig, path)


def _nfe(v: Any) -> str:
    f = _num(v)
    return "" if f is None else f"{f:.0f}"


def make_plots(result: StudyResult, out: Path) -> list[Path]:
    """Every figure of a study into ``out``; returns their paths."""
    rows = [r for r in result.rows if r.get("missing", "none") in ("none", "", None)]
    if not rows:
        return []
    out = Path(out)
    paths = [accuracy_plot(rows, out / "rmse.png"), cost_plot(rows, out / "cost.png")]
    for problem in _unique(r["problem"] for r in rows):
        if any(_num(r.get("std_ratio")) is not None for r in _well_specified(rows, problem)):
            paths.append(std_ratio_plot(rows, problem, out / f"std_ratio_{problem}.png"))
        levels = {r["noise_test"] for r in rows if r["problem"] == problem}
        if len(levels) > 1:
            paths.append(noise_plot(rows, problem, out / f"noise_{problem}.png"))
        paths.append(calibration_plot(result.calibration, problem,
                                      out / f"calibration_{problem}.png"))
    return paths


_TEXT = {"problem", "net", "objective", "sampler", "noise_param", "missing", "weights",
         "reference"}
_SAMPLED = ("mcmc",)  # references whose cost is a sampled chain (their names end so)


def read_result(folder: str | Path) -> StudyResult:
    """A finished study's rows and calibration, read back from ``folder``'s ``results.csv``
    and ``calibration.json`` (enough to draw :func:`make_plots` again; the trainings table
    of ``results.md`` is not in these files)."""
    folder = Path(folder)
    rows = []
    with open(folder / "results.csv", newline="") as f:
        for raw in csv.DictReader(f):
            row: dict[str, Any] = {}
            for k, v in raw.items():
                if k in _TEXT:
                    row[k] = v
                else:
                    row[k] = _num(v) if v not in ("", None) else None
                    if row[k] is not None and float(row[k]).is_integer() and k in (
                            "nfe", "n_test", "n_samples", "n_ref", "train_steps"):
                        row[k] = int(row[k])
            row.setdefault("missing", "none")
            row["missing"] = row["missing"] or "none"
            row["ref_sampled"] = row.get("reference", "").endswith(_SAMPLED)
            rows.append(row)
    cal_path = folder / "calibration.json"
    calibration = json.loads(cal_path.read_text()) if cal_path.exists() else {}
    return StudyResult(rows=rows, calibration=calibration)
