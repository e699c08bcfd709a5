"""Write the study's results: ``results.csv`` (tidy, one row per cell), ``results.md`` (tables
per question, with the command that produced them), ``calibration.json`` and PNG plots."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from invdiff.io import atomic_write_text

from .runner import StudyResult

COLUMNS = ("problem", "net", "objective", "sampler", "noise_param", "noise_train", "noise_test",
           "missing", "weights",
           "n_test", "n_samples", "nfe", "seconds", "train_seconds", "train_steps",
           "rmse_truth", "bias", "mean_std", "coverage_50", "coverage_90", "reference", "n_ref",
           "rmse_truth_refset", "ref_rmse_truth", "rmse_ref", "std_ratio", "std_corr",
           "ref_seconds", "sbc_chi2_p", "sbc_ks", "tarp_dev")


def fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def md_table(rows: Iterable[dict[str, Any]], cols: Sequence[str]) -> str:
    rows = list(rows)
    if not rows:
        return "(no rows)"
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def csv_columns(rows: list[dict[str, Any]]) -> list[str]:
    """:data:`COLUMNS`, then every other number or text the cells report (the metrics plugins
    add, memorisation distances, ...), sorted by name."""
    extra = sorted({k for r in rows for k, v in r.items() if k not in COLUMNS
                    and isinstance(v, int | float | str) and not isinstance(v, bool)})
    return [*COLUMNS, *extra]


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    cols = csv_columns(rows)
    lines = [",".join(cols)]
    for r in rows:
        lines.append(",".join(_csv_cell(r.get(c)) for c in cols))
    atomic_write_text(path, "\n".join(lines) + "\n")


def _csv_cell(v: Any) -> str:
    s = fmt(v) if not isinstance(v, float) else ("" if math.isnan(v) else repr(v))
    return s if "," not in s else f'"{s}"'


def _diagonal(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Well-specified cells of complete measurements."""
    return [r for r in rows if r["noise_train"] == r["noise_test"] and _complete(r)]


def _complete(row: dict[str, Any]) -> bool:
    return row.get("missing", "none") == "none"


def gap_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The cells of measurements with gaps, each after the complete cell of its model and
    sampler."""
    gaps = [r for r in rows if not _complete(r)]
    keys = {(r["problem"], r["net"], r["sampler"], r["noise_test"]) for r in gaps}
    full = [r for r in _diagonal(rows) if (r["problem"], r["net"], r["sampler"],
                                           r["noise_test"]) in keys]
    order = {"none": ""}
    return sorted(full + gaps, key=lambda r: (r["problem"], r["net"], r["sampler"],
                                              r["noise_test"],
                                              order.get(r.get("missing"), r.get("missing"))))


def cost_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per diagonal cell with a sampled reference (MCMC): seconds per new measurement of each,
    and after how many measurements the training cost is paid back."""
    out = []
    for r in _diagonal(rows):
        if not r.get("ref_sampled") or not r.get("ref_seconds"):
            continue
        saved = r["ref_seconds"] - r["seconds"]
        out.append({**r, "speedup": r["ref_seconds"] / r["seconds"],
                    "break_even": r["train_seconds"] / saved if saved > 0 else None})
    return out


#: the peer section of a report: (heading, the peers' problems, notes) or None
PeerSection = tuple[str, Sequence[str], Sequence[str]]


def peer_rows(rows: list[dict[str, Any]], problems: Sequence[str]) -> list[dict[str, Any]]:
    """The peers' rows with, beside them, every well-specified cell of the same problem and
    noise level on complete measurements (the peers run at each problem's first level)."""
    peers = [r for r in rows if r.get("peer") and r["problem"] in problems]
    levels = {(r["problem"], r["noise_test"]) for r in peers}
    cells = [r for r in _diagonal(rows) if (r["problem"], r["noise_test"]) in levels
             and not r.get("peer")]
    order = {p: i for i, p in enumerate(problems)}
    return sorted(cells + peers, key=lambda r: (order.get(r["problem"], 0), bool(r.get("peer"))))


def peer_part(rows: list[dict[str, Any]], peer: PeerSection | None) -> list[str]:
    title, problems, notes = peer or ("Peer: none on the same simulations", [], [])
    return [f"## {title}", "", *[f"- {n}" for n in notes], "",
            md_table(peer_rows(rows, problems),
                     ("problem", "net", "sampler", "noise_test", "nfe", "train_seconds",
                      "seconds", "rmse_truth", "rmse_ref", "std_ratio", "std_corr",
                      "coverage_50", "coverage_90", "sbc_ks")), ""]


def markdown(result: StudyResult, preset_name: str, command: str, header: Sequence[str],
             peer: PeerSection | None, plots: Sequence[str]) -> str:
    rows = result.rows
    mis = [r for r in rows if r["noise_train"] != r["noise_test"]]
    mis_keys = {(r["problem"], r["noise_test"]) for r in mis}
    mis_context = [r for r in _diagonal(rows) if (r["problem"], r["noise_test"]) in mis_keys]
    ref_rows = [r for r in _diagonal(rows) if r["reference"]]
    parts = [
        f"# Benchmark study: preset `{preset_name}`", "", f"Command: `{command}`", "",
        *header, "",
        "Columns: `seconds` = sampling seconds per measurement (all its samples), `nfe` = "
        "score evaluations per chain, `rmse_truth` = RMSE of the posterior mean against the "
        "truth, `bias` = mean of (posterior mean - truth), `coverage_50/90` = fraction of true "
        "pixels inside the central 50%/90% intervals, `sbc_ks` = KS distance of the SBC ranks "
        "from uniform. Noise levels are values of `noise_param`.", "",
        "## All cells", "",
        md_table(rows, ("problem", "net", "sampler", "noise_train", "noise_test", "missing",
                        "nfe",
                        "seconds", "train_seconds", "rmse_truth", "bias", "coverage_50",
                        "coverage_90", "sbc_ks")), "",
        "## Against the reference posterior (well-specified cells)", "",
        "`rmse_truth_refset` (cSDM) and `ref_rmse_truth` (reference) are over the same "
        "measurements (the reference's `n_ref`); `rmse_ref` = RMSE between the two means; "
        "`std_corr` = correlation of the std fields. References (kind `reference`): "
        "linear-gaussian = closed form, inclusion-mcmc = inclusion-parameter MCMC, "
        "spheroid-mcmc = spheroid-parameter MCMC with the exact phase likelihood, "
        "oce-algebraic = OCE stress/strain estimate (no std).", "",
        md_table(ref_rows, ("problem", "net", "sampler", "noise_test", "reference", "n_ref",
                            "rmse_truth_refset", "ref_rmse_truth", "rmse_ref", "std_ratio",
                            "std_corr")), "",
        "## Measurements with gaps", "",
        "Held-out measurements with entries missing (`missing`: `random-F` hides a fraction F "
        "of the pixels at random, `block-F` one block covering F of the field), sampled by "
        "models trained with `training.masking`, against the reference posterior given the "
        "measured entries; `none` is the same model on the complete measurements.", "",
        md_table(gap_rows(rows), ("problem", "net", "sampler", "noise_test", "missing",
                                  "rmse_truth", "coverage_90", "rmse_ref", "mean_err_std",
                                  "std_ratio", "std_corr")), "",
        "## Misspecified noise", "",
        "A model trained at `noise_train` sampled on measurements at `noise_test`, next to the "
        "model trained at `noise_test` (same measurements).", "",
        md_table(sorted(mis + mis_context, key=lambda r: (r["problem"], r["noise_test"],
                                                          r["net"], r["sampler"])),
                 ("problem", "net", "sampler", "noise_train", "noise_test", "rmse_truth",
                  "bias", "coverage_50", "coverage_90")), "",
        "## Calibration on held-out simulations", "",
        "Expected coverage at the nominal levels (pixelwise, pooled), SBC rank uniformity "
        "(chi-square p-value treating pixels as independent, so read it as a statistic) and "
        "TARP's largest coverage error of whole fields (`tarp_dev`, 0 = calibrated; few "
        "measurements make it coarse).", "",
        md_table(_calibration_rows(result), ("cell", "sbc_chi2_p", "sbc_ks", "tarp_dev",
                                             "coverage")), "",
        *uncertain_part(rows),
        "## Cost: amortized sampling against the MCMC reference", "",
        "`break_even`: measurements after which training + sampling is cheaper than MCMC.", "",
        md_table(cost_rows(rows), ("problem", "net", "sampler", "noise_test", "seconds",
                                   "ref_seconds", "speedup", "train_seconds", "break_even")),
        "", *peer_part(rows, peer),
        "## Trainings", "",
        md_table(result.trainings, ("problem", "net", "noise_train", "steps", "seconds",
                                    "parameters", "n_levels", "val_loss_ema")), "",
    ]
    if result.notes:
        parts += ["## Notes", "", *[f"- {n}" for n in result.notes], ""]
    parts += ["## Plots", "", *[f"![{p}]({p})" for p in plots], ""]
    return "\n".join(parts)


#: the uncertain-pixel and spread-calibration columns: raw_* before the calibration
UNCERTAIN_COLUMNS = ("problem", "net", "sampler", "noise_test", "uncertain_fraction",
                     "coverage_90", "coverage_90_uncertain", "coverage_90_uncertain_ref",
                     "crps_uncertain", "energy_score")
CALIBRATED_COLUMNS = ("problem", "net", "sampler", "noise_test", "calibration_scale",
                      "raw_std_ratio", "std_ratio", "raw_coverage_90_uncertain",
                      "coverage_90_uncertain", "raw_coverage_90_uncertain_ref",
                      "coverage_90_uncertain_ref", "raw_crps", "crps")


def uncertain_part(rows: list[dict[str, Any]]) -> list[str]:
    """Coverage where the posterior is uncertain, proper scores, and, for cells with a spread
    calibration, raw and calibrated side by side."""
    diag = [r for r in _diagonal(rows) if not r.get("peer")]
    calibrated = [r for r in diag if r.get("calibration_scale") is not None]
    part = ["## Coverage where it matters, proper scores", "",
            "Pooled coverage counts a certain background, which any width covers; "
            "`coverage_90_uncertain` counts only the pixels where the posterior's std is above "
            "a tenth of the field's largest (`uncertain_fraction` of them), "
            "`coverage_90_uncertain_ref` those the reference finds uncertain. `crps_uncertain` "
            "(per pixel) and `energy_score` (per field) are proper scoring rules: lower is "
            "better, and widening a posterior cannot improve them.", "",
            md_table(diag, UNCERTAIN_COLUMNS), ""]
    if calibrated:
        part += ["## Spread calibration: raw and calibrated", "",
                 "Each model's spread is calibrated per sampler on validation pairs it never "
                 "trained on (`calibration_scale` c: samples move to mean + c (x - mean), c "
                 "fitted by CRPS on the uncertain pixels; docs/calibration.md). The cells above "
                 "report the calibrated posterior; `raw_*` is the same number before it.", "",
                 md_table(calibrated, CALIBRATED_COLUMNS), ""]
    return part


def _calibration_rows(result: StudyResult) -> list[dict[str, Any]]:
    out = []
    for key, c in result.calibration.items():
        _, _, _, train, test = key.split("/")
        if train != test:
            continue
        cov = " ".join(f"{lv:g}:{v:.2f}" for lv, v in zip(c["levels"], c["coverage"],
                                                         strict=True))
        out.append({"cell": key, "sbc_chi2_p": c["sbc_chi2_p"], "sbc_ks": c["sbc_ks"],
                    "tarp_dev": c.get("tarp_dev"), "coverage": cov})
    return out


def write_all(result: StudyResult, out: Path, preset_name: str, command: str,
              header: Sequence[str], peer: PeerSection | None = None) -> list[Path]:
    """results.csv, calibration.json, the plots and results.md into ``out``."""
    from .plots import make_plots

    out.mkdir(parents=True, exist_ok=True)
    write_csv(result.rows, out / "results.csv")
    atomic_write_text(out / "calibration.json", json.dumps(result.calibration, indent=1))
    plots = make_plots(result, out)
    text = markdown(result, preset_name, command, header, peer, [p.name for p in plots])
    atomic_write_text(out / "results.md", text)
    return [out / "results.csv", out / "results.md", out / "calibration.json", *plots]
