"""The reference posteriors that learned posteriors are measured against.

:func:`reference_on`: a registered reference posterior (kind ``"reference"``: the exact
linear-Gaussian posterior, the MCMC ones) named by a
:class:`~invdiff.experiment.config.ComponentSpec`, computed on measurements. A reference with
a ``cache`` parameter (the MCMC ones) gets a cache folder, so a rerun reads its chains back.
Which reference an experiment uses is the run layer's choice
(:attr:`invdiff.experiment.run.Experiment.reference_spec`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from invdiff.errors import ConfigError
from invdiff.interfaces import ReferenceResult
from invdiff.plugins import create, get_registry


@dataclass
class Reference(ReferenceResult):
    """A :class:`ReferenceResult` with the registry ``kind`` (name) that made it; mean and std
    in float32, as the samples are scored."""

    kind: str = ""


def build_reference(spec: Any, cache: Path | None = None) -> Any:
    """The reference component of ``spec``; a ``cache`` folder goes to references that take
    one (unless the spec sets its own)."""
    params = dict(spec.params)
    model = get_registry().get("reference", spec.name).params
    if cache is not None and model is not None and "cache" in model.model_fields:
        params.setdefault("cache", str(cache))
    return create("reference", spec.name, **params)


def reference_on(spec: Any, components: tuple[Any, Any, Any],
                 y: torch.Tensor, y_clean: torch.Tensor | None = None,
                 cache: Path | None = None) -> Reference | None:
    """The reference posterior ``spec`` (a :class:`~invdiff.experiment.config.ComponentSpec`:
    ``name``, ``params``) names, for measurements ``y (M, *y_shape)`` of the
    problem ``components`` (prior, forward model, noise model); None without a spec. A
    reference that does not fit the problem is a :class:`ConfigError` saying why."""
    if spec is None:
        return None
    ref = build_reference(spec, cache)
    why = ref.fits(*components)
    if why is not None:
        raise ConfigError(f"reference {spec.name!r} does not fit this problem: {why}")
    res = ref(*components, y, y_clean=y_clean)
    return Reference(index=list(res.index), mean=res.mean.float(),
                     std=None if res.std is None else res.std.float(), seconds=res.seconds,
                     samples=res.samples, info=dict(res.info), kind=spec.name)
