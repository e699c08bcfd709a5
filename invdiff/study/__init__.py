"""The benchmark study: problems x nets x samplers against reference posteriors.

Run from a preset (``invdiff study smoke``, or :func:`study` in Python). Modules by role:

* ``preset``: the TOML presets (shipped: ``smoke``, ``cpu``, ``cpu-paper``, ``cpu-gaps``, ``gpu``,
  ``gpu-short``);
* ``runner``: train once per (problem, noise level, net), score every cell through the run
  layer's :func:`~invdiff.evaluation.score.sample_and_score`, cache the cells;
* ``peer``: peer methods (sbi NPSE, BayesFlow) on the same simulations (optional);
* ``report`` and ``plots``: ``results.csv``, ``results.md``, ``calibration.json``, PNGs;
* ``driver``: all of it in one call, :func:`study`.

Names load lazily.
"""

from __future__ import annotations

from invdiff.lazy import lazy_exports

_EXPORTS = {
    "study": "invdiff.study.driver",
    "Preset": "invdiff.study.preset",
    "load_preset": "invdiff.study.preset",
    "preset_names": "invdiff.study.preset",
    "StudyResult": "invdiff.study.runner",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
