"""What a run's numbers and figures mean, in words: field labels, metric descriptions and
units, and a one-line calibration verdict.

The core knows no physics: the physical names come from the components themselves, through
optional ``label`` and ``units`` attributes of the prior (x) and the forward model (y), with
neutral fallbacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: nominal level -> the range of empirical coverage read as calibrated. Pixels of one field
#: are correlated, so a few held-out fields scatter well beyond binomial noise: the ranges
#: are wide on purpose and flag only clearly over-wide or over-narrow posteriors.
CALIBRATED = {"coverage_50": (0.5, 0.40, 0.60), "coverage_90": (0.9, 0.85, 0.97)}


@dataclass(frozen=True)
class FieldLabel:
    """A field's physical name and units, for axis labels, colorbars and captions."""

    label: str
    units: str

    def __str__(self) -> str:
        return f"{self.label} [{self.units}]" if self.units else self.label


def _label(component: Any, label: str, units: str) -> FieldLabel:
    return FieldLabel(str(getattr(component, "label", None) or label),
                      str(getattr(component, "units", None) or units))


def field_labels(prior: Any = None, forward_model: Any = None) -> dict[str, FieldLabel]:
    """``{"x": ..., "y": ...}`` from the components' ``label`` / ``units``, else neutral."""
    return {"x": _label(prior, "x", ""), "y": _label(forward_model, "measurement y", "")}


def describe_metrics(metrics: dict[str, Any],
                     labels: dict[str, FieldLabel] | None = None) -> dict[str, Any]:
    """The ``descriptions`` and ``units`` blocks of ``metrics.json`` for the keys present, and
    what the ``reference`` posterior was (these blocks make the file self-describing)."""
    labels = labels or field_labels()
    x_units = labels["x"].units or "units of x"
    x = labels["x"].label
    known = {
        "mean_std": (f"mean over pixels and measurements of the posterior std of {x}", x_units),
        "rmse_truth": (f"RMS error of the posterior mean against the true {x}", x_units),
        "coverage_50": ("fraction of pixels whose true value lies in the central 50% "
                        "credible interval (calibrated: about 0.5; higher: too wide)",
                        "fraction of pixels"),
        "coverage_90": ("the same for the central 90% interval (calibrated: about 0.9)",
                        "fraction of pixels"),
        "uncertain_fraction": ("share of pixels where the posterior is uncertain (its std "
                               "above a tenth of the field's largest)", "fraction of pixels"),
        "coverage_50_uncertain": ("coverage_50 on the uncertain pixels only: a certain "
                                  "background is covered at any width, so this is the one to "
                                  "read", "fraction of pixels"),
        "coverage_90_uncertain": ("coverage_90 on the uncertain pixels only",
                                  "fraction of pixels"),
        "coverage_50_uncertain_ref": ("coverage_50 on the pixels the reference posterior finds "
                                      "uncertain (the measurements it covers)",
                                      "fraction of pixels"),
        "coverage_90_uncertain_ref": ("coverage_90 on the pixels the reference posterior finds "
                                      "uncertain", "fraction of pixels"),
        "crps": ("continuous ranked probability score per pixel, averaged (a proper scoring "
                 "rule: rewards a posterior both sharp and calibrated; lower is better)",
                 x_units),
        "crps_uncertain": ("the CRPS on the uncertain pixels", x_units),
        "energy_score": ("energy score per field (the multivariate CRPS; norms as RMS per "
                         "pixel; lower is better)", x_units),
        "rmse_ref": ("RMS difference of the posterior mean from the reference posterior mean",
                     x_units),
        "mean_err_std": ("RMS over pixels of (mean - reference mean) / reference std: the "
                         "mean's error in reference standard deviations (0 is perfect)",
                         "reference std"),
        "std_ratio": ("mean posterior std / mean reference std (1 is perfect; >1 too wide)",
                      "ratio"),
        "std_corr": ("correlation over pixels of the posterior and reference std fields "
                     "(1: the uncertainty sits where the reference puts it)", "correlation"),
        "ref_rmse_truth": (f"RMS error of the reference posterior mean against the true {x} "
                           "(the best a posterior mean can do on average)", x_units),
        "bias": (f"mean over pixels and measurements of posterior mean - true {x}", x_units),
        "rmse_truth_refset": ("rmse_truth on the measurements the reference covers (compare "
                              "with ref_rmse_truth)", x_units),
        "ref_measurements": ("the held-out measurements the reference posterior covers", ""),
        "ref_seconds": ("wall-clock time of the reference posterior per measurement", "s"),
        "world_size": ("processes that shared the sampling (torchrun ranks)", "processes"),
        "sampler": ("the posterior sampler", ""),
        "n_samples": ("posterior samples per measurement", "samples"),
        "n_measurements": ("held-out measurements sampled", "measurements"),
        "nfe": ("score-network evaluations per chain (the cost)", "evaluations"),
        "seconds": ("wall-clock time of the sampling", "s"),
        "checkpoint": ("the model sampled", ""),
        "checkpoint_sha256": ("SHA-256 of the checkpoint file", ""),
        "sampling_config": ("the sampling settings", ""),
        "raw": ("the same metrics before the spread calibration (the calibrated posterior has "
                "the same mean, so its RMSE and mean error are the raw ones)", ""),
        "calibration": ("the spread calibration applied to every sample: mean + scale * "
                        "(sample - mean), scale fitted by CRPS on validation pairs the net never "
                        "trained on; what it guarantees and what it cannot do", ""),
    }
    for key in metrics:  # the reference's own diagnostics (R-hat, ESS, ...) as it names them
        if key.startswith("ref_") and key not in known:
            known[key] = (f"reference posterior diagnostic {key[4:]!r}", "")
    present = [k for k in metrics if k in known]
    reference = metrics.get("reference")
    ref_text = (_reference_help(reference) if reference else
                "none: no reference posterior fits this problem; only the truth is compared with")
    return {"descriptions": {k: known[k][0] for k in present},
            "units": {k: known[k][1] for k in present if known[k][1]},
            "fields": {"x": str(labels["x"]), "y": str(labels["y"])},
            "reference_description": ref_text}


def _reference_help(name: str) -> str:
    """What the registered reference posterior ``name`` is (its one-line help)."""
    from invdiff.plugins import get_registry

    try:
        help_ = get_registry().get("reference", name).help
    except Exception:  # noqa: BLE001 - a description must never fail the metrics
        help_ = ""
    return f"{name}: {help_}" if help_ else name


def calibration_verdict(metrics: dict[str, Any]) -> str | None:
    """One line when the credible intervals' coverage of the truth is clearly off, else None.

    Read on the uncertain pixels (those the reference posterior finds uncertain, where there is
    one, else the posterior's own): a certain background is covered at any width and makes
    pooled coverage look too wide. 50% coverage outside [0.40, 0.60] or 90% coverage outside
    [0.85, 0.97] is reported, with the direction: above nominal means the posterior is too
    wide there, below too narrow.
    """
    suffix = next((s for s in ("_uncertain_ref", "_uncertain", "")
                   if metrics.get(f"coverage_90{s}") is not None
                   and metrics.get(f"coverage_90{s}") == metrics.get(f"coverage_90{s}")), "")
    where = {"_uncertain_ref": " on the pixels the reference finds uncertain",
             "_uncertain": " on the uncertain pixels", "": ""}[suffix]
    off = []
    for key, (nominal, lo, hi) in CALIBRATED.items():
        value = metrics.get(key + suffix)
        if value is not None and not lo <= value <= hi:
            off.append((key, nominal, value))
    if not off:
        return None
    wide = sum(value > nominal for _, nominal, value in off) > len(off) / 2
    parts = " and ".join(f"the central {nominal:.0%} interval holds {value:.0%} of the true "
                         f"values" for _, nominal, value in off)
    cal = metrics.get("calibration")
    after = (f" after the spread calibration (x{cal['scale']:g}, fitted on {cal['n_pairs']} "
             f"validation pairs)" if isinstance(cal, dict) else "")
    return (f"calibration is off{where}{after}: {parts}; the posterior is too "
            f"{'wide' if wide else 'narrow'} there (calibrated intervals hold about their "
            f"nominal share)")
