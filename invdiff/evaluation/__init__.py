"""Evaluation: how well a posterior sampler does, against the truth and a reference posterior.

The study is a matrix problems x nets x samplers run from a preset (``invdiff study smoke``,
or :func:`study` in Python). Modules by role:

* ``preset``: the TOML presets (shipped: ``smoke``, ``cpu``, ``gpu``, ``gpu-short``);
* ``references``: held-out sets (one seeding rule) and the registered reference posteriors;
* ``calibration``: SBC ranks and TARP (coverage itself is in :mod:`invdiff.metrics`, the one
  metrics module, shared with ``invdiff sample``);
* ``runner``: train once per (problem, noise level, net), sample every cell, cache the cells;
* ``peer``: sbi's NPSE on the same simulations (optional);
* ``report`` and ``plots``: ``results.csv``, ``results.md``, ``calibration.json``, PNGs;
* ``driver``: all of it in one call, :func:`study`.

Attributes load lazily, so importing this package stays cheap.
"""

from __future__ import annotations

from invdiff.lazy import lazy_exports

_EXPORTS = {
    "study": "invdiff.evaluation.driver",
    "Preset": "invdiff.evaluation.preset",
    "load_preset": "invdiff.evaluation.preset",
    "preset_names": "invdiff.evaluation.preset",
    "StudyResult": "invdiff.evaluation.runner",
    "held_out": "invdiff.evaluation.references",
    "reference_on": "invdiff.evaluation.references",
    "calibration_summary": "invdiff.evaluation.calibration",
    "tarp_coverage": "invdiff.evaluation.calibration",
    "sbc_ranks": "invdiff.evaluation.calibration",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
