"""Old import paths of modules that moved into the folders by role, kept working.

``import invdiff.posterior`` (say) gives the module that now lives at
``invdiff.sampling.posterior``, the very same module object, so attributes, ``monkeypatch``
and ``isinstance`` all behave as before. A path in :data:`DEPRECATED` warns once per import
with a :class:`DeprecationWarning` naming the new path; those paths go in the next release.
:data:`STABLE` paths are part of the documented API and stay.

The mechanism is one meta path finder (installed by ``import invdiff``), not a file per old
name, so the package's folders show only where things live now.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

#: old path -> new path; importing the old one warns.
DEPRECATED = {
    "invdiff.pipeline": "invdiff.experiment.run",
    "invdiff.simulation": "invdiff.data.simulation",
    "invdiff.dask_executor": "invdiff.data.dask_executor",
    "invdiff.distributed": "invdiff.training.distributed",
    "invdiff.logging_tb": "invdiff.training.tensorboard",
    "invdiff.model": "invdiff.training.model",
    "invdiff.posterior": "invdiff.sampling.posterior",
    "invdiff.sigmas": "invdiff.sampling.sigmas",
    "invdiff.metrics": "invdiff.evaluation.metrics",
    "invdiff.report": "invdiff.evaluation.verdicts",
    "invdiff.figures": "invdiff.evaluation.figures",
    "invdiff.mcmc": "invdiff.evaluation.mcmc",
    "invdiff.mcmc_diagnostics": "invdiff.evaluation.mcmc_diagnostics",
    "invdiff.lock": "invdiff.experiment.lock",
    "invdiff.testing_scorenet": "invdiff.testing.scorenet",
    "invdiff.evaluation.preset": "invdiff.study.preset",
    "invdiff.evaluation.runner": "invdiff.study.runner",
    "invdiff.evaluation.driver": "invdiff.study.driver",
    "invdiff.evaluation.peer": "invdiff.study.peer",
    "invdiff.evaluation.report": "invdiff.study.report",
    "invdiff.evaluation.plots": "invdiff.study.plots",
}
#: old path -> new path; documented entry points that keep working without a warning.
STABLE = {
    "invdiff.config": "invdiff.experiment.config",
    "invdiff.checkpoint": "invdiff.training.checkpoint",
}


class _Alias(importlib.abc.Loader):
    """Loads an old path as the module at its new path."""

    def __init__(self, new: str, warn: bool) -> None:
        self.new, self.warn = new, warn

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        if self.warn:
            warnings.warn(f"{spec.name} has moved to {self.new}; import it from there (the "
                          f"old path goes in the next release)", DeprecationWarning,
                          stacklevel=2)
        return importlib.import_module(self.new)

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module at the new path is loaded already."""


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Finds the old paths of :data:`DEPRECATED` and :data:`STABLE`."""

    def find_spec(self, fullname: str, path=None, target=None):
        new = DEPRECATED.get(fullname) or STABLE.get(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Alias(new, fullname in DEPRECATED))


def install() -> None:
    """Put the finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())
