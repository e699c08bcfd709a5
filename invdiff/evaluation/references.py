"""Held-out measurements and the reference posteriors they are measured against.

Held-out set at test noise level L (:func:`held_out`): the truths x and clean measurements of
the pipeline's held-out pairs (``data/test.npz`` of a data config), with fresh measurement noise
from the noise model at level L, drawn with one seeding rule, seed = 7919 + round(1e6 L). Every
net, sampler and training level is thus tested on the same truths, and a model trained at
L' != L sees exactly the measurements a model trained at L sees.

References (:func:`reference_on`): a registered reference posterior (kind ``"reference"``)
named by a :class:`~invdiff.experiment.config.ComponentSpec`, computed on the held-out
measurements. A
reference with a ``cache`` parameter (the MCMC ones) gets a cache folder, so a rerun reads its
chains back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from invdiff.data import load_dataset
from invdiff.errors import ConfigError, DataError
from invdiff.experiment import stages as pipeline
from invdiff.experiment.config import ComponentSpec, ExperimentConfig
from invdiff.interfaces import ReferenceResult
from invdiff.plugins import create, get_registry

HELD_OUT_SEED = 7_919  # the held-out noise draws: seed + round(1e6 L)


@dataclass
class HeldOut:
    """Held-out pairs at one test noise level: x, y, y_clean ``(M, ...)``, physical units."""

    problem: str
    level: float
    x: torch.Tensor
    y: torch.Tensor
    y_clean: torch.Tensor
    components: tuple[Any, Any, Any]  # prior, forward model, noise model at this level


@dataclass
class Reference(ReferenceResult):
    """A :class:`ReferenceResult` with the registry ``kind`` (name) that made it; mean and std
    in float32, as the samples are scored."""

    kind: str = ""


def held_out(data_cfg: ExperimentConfig, level_cfg: ExperimentConfig, level: float,
             problem: str = "") -> HeldOut:
    """The held-out pairs of ``data_cfg`` with noise drawn by ``level_cfg``'s noise model at
    test level ``level`` (module docstring)."""
    test = load_dataset(pipeline.output_paths(data_cfg)["test"])
    if test.y_clean is None:
        raise DataError(f"{problem or data_cfg.name}: the held-out set has no clean "
                        f"measurements; simulate it again with this version of invdiff")
    prior, fwd, noise = pipeline.build_problem(level_cfg)
    g = torch.Generator().manual_seed(HELD_OUT_SEED + round(1e6 * level))
    y = noise(test.y_clean, generator=g)
    return HeldOut(problem, level, test.x, y, test.y_clean, (prior, fwd, noise))


def build_reference(spec: ComponentSpec, cache: Path | None = None) -> Any:
    """The reference component of ``spec``; a ``cache`` folder goes to references that take
    one (unless the spec sets its own)."""
    params = dict(spec.params)
    model = get_registry().get("reference", spec.name).params
    if cache is not None and model is not None and "cache" in model.model_fields:
        params.setdefault("cache", str(cache))
    return create("reference", spec.name, **params)


def reference_on(spec: ComponentSpec | None, components: tuple[Any, Any, Any],
                 y: torch.Tensor, y_clean: torch.Tensor | None = None,
                 cache: Path | None = None) -> Reference | None:
    """The reference posterior ``spec`` names, for measurements ``y (M, *y_shape)`` of the
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


def config_reference(cfg: ExperimentConfig, prior: Any) -> ComponentSpec | None:
    """The reference of an experiment: ``sampling.reference`` if the config names one (the
    name ``"none"``: no reference), else the one the prior names (its ``reference``
    attribute)."""
    spec = cfg.sampling.reference
    if spec is not None:
        return None if spec.name == "none" else spec
    name = getattr(prior, "reference", None)
    return ComponentSpec(name=name) if name else None
