"""pluggy hook specifications of invdiff (entry-point group ``invdiff``).

A plugin is a module (named by an entry point in the ``invdiff`` group) that implements some of
these hooks with :data:`hookimpl`. Each hook receives a ``register`` callback::

    register(name, factory, params=None, help="")

* ``name``: the component name users pass to :func:`invdiff.create` (unique per kind);
* ``factory``: a callable, or an ``"module:attribute"`` string imported only when the component
  is built, so that listing plugins never imports torch or other heavy libraries;
* ``params``: a pydantic model of the factory's keyword arguments (validated before the call);
* ``help``: one line shown by ``invdiff plugins``.

``register_metrics`` registers problem-specific metrics (:class:`invdiff.interfaces.Metric`):
each is built with its default parameters and applied where its ``applies`` says it fits
(:func:`invdiff.evaluation.problem_metrics.problem_metrics`).

This module imports nothing heavy: the CLI imports it to list plugins.
"""

from __future__ import annotations

import pluggy

PROJECT = "invdiff"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_priors(register):
    """Register Prior components: ``register(name, factory, params, help)``."""


@hookspec
def register_forward_models(register):
    """Register ForwardModel components."""


@hookspec
def register_noise_models(register):
    """Register NoiseModel components."""


@hookspec
def register_score_nets(register):
    """Register ScoreNet components."""


@hookspec
def register_samplers(register):
    """Register Sampler components."""


@hookspec
def register_references(register):
    """Register ReferencePosterior components (exact or MCMC posteriors to measure against)."""


@hookspec
def register_metrics(register):
    """Register Metric components: problem-specific numbers computed from posterior samples and
    the truth (e.g. the IoU of a segmented inclusion); see :class:`invdiff.interfaces.Metric`."""


@hookspec
def register_objectives(register):
    """Register training Objective components (denoising score matching is built in)."""
