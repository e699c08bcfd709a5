"""Evaluation: how good a posterior is, against the truth and a reference posterior.

Modules by role:

* ``metrics``: accuracy and coverage of posterior samples (the one metrics module);
* ``calibration``: SBC ranks and TARP;
* ``references``: the registered reference posteriors, computed on measurements;
* ``mcmc``, ``mcmc_diagnostics``: the parametric MCMC references and their convergence checks;
* ``score``: :func:`sample_and_score`, the one way every command samples and scores;
* ``verdicts`` and ``figures``: what the numbers mean, in words and pictures.

The study that runs all of this over problems x nets x samplers is :mod:`invdiff.study`.
Attributes load lazily, so importing this package stays cheap.
"""

from __future__ import annotations

import warnings

from invdiff.lazy import lazy_exports

_EXPORTS = {
    "reference_on": "invdiff.evaluation.references",
    "calibration_summary": "invdiff.evaluation.calibration",
    "tarp_coverage": "invdiff.evaluation.calibration",
    "sbc_ranks": "invdiff.evaluation.calibration",
    "sample_and_score": "invdiff.evaluation.score",
}
#: study names that lived here before the study got its own package (one more release)
_MOVED = {"study": "invdiff.study.driver", "Preset": "invdiff.study.preset",
          "load_preset": "invdiff.study.preset", "preset_names": "invdiff.study.preset",
          "StudyResult": "invdiff.study.runner"}

_lazy, __all__ = lazy_exports(__name__, _EXPORTS)


def __getattr__(name: str):
    if name in _MOVED:
        import importlib

        warnings.warn(f"invdiff.evaluation.{name} has moved to invdiff.study.{name}",
                      DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(_MOVED[name]), name)
    return _lazy(name)
