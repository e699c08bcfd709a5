"""Experiments: a TOML config run end to end.

* ``config``: :class:`ExperimentConfig` and its loading (no torch import);
* ``run``: :class:`Experiment`, the run layer: each component of a config built once, the
  run folder's typed paths, the stages (simulate, train, sample) and what they reuse;
* ``stages``: the stages as functions of a config (``run_simulate`` ... ``run_run``);
* ``demo``: the embedded demo configs; ``lock``: one run per output folder.

Names load lazily.
"""

from __future__ import annotations

from invdiff.lazy import lazy_exports

_EXPORTS = {
    "ExperimentConfig": "invdiff.experiment.config",
    "load_config": "invdiff.experiment.config",
    "Experiment": "invdiff.experiment.run",
    "RunPaths": "invdiff.experiment.run",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
