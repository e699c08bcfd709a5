"""Experiments: a TOML config run end to end.

* ``config``: :class:`ExperimentConfig` and its loading (no torch import);
* ``parts``: :class:`ExperimentParts`, each part of a config built once (components, data,
  ladder, sampler, reference, model), the run folder's typed paths (:class:`RunPaths`) and the
  reuse rule;
* ``run``: :class:`Experiment`, the run layer: the stages (simulate, train, sample, run) on
  those parts, and ``run_simulate(cfg)`` ... ``run_run(cfg)`` for scripts;
* ``demo``: the embedded demo configs; ``lock``: one run per output folder.

Names load lazily.
"""

from __future__ import annotations

from invdiff.lazy import lazy_exports

_EXPORTS = {
    "ExperimentConfig": "invdiff.experiment.config",
    "load_config": "invdiff.experiment.config",
    "Experiment": "invdiff.experiment.run",
    "RunPaths": "invdiff.experiment.parts",
    "ExperimentParts": "invdiff.experiment.parts",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
