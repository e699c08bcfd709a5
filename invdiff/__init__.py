"""invdiff: conditional score-based diffusion models for inverse problems in mechanics.

The public API is imported lazily, so that ``import invdiff`` (and ``invdiff --help``) does not
import torch. See ``docs/architecture.md`` and ``docs/writing-plugins.md``.
"""

from __future__ import annotations

from invdiff import _moved
from invdiff.lazy import lazy_exports

_moved.install()  # old module paths (invdiff.posterior, ...) keep working

__version__ = "0.1.0"

_EXPORTS = {
    # registry (torch-free)
    "create": "invdiff.plugins",
    "available": "invdiff.plugins",
    "hookimpl": "invdiff.hookspecs",
    # contracts
    "Prior": "invdiff.interfaces",
    "ForwardModel": "invdiff.interfaces",
    "NoiseModel": "invdiff.interfaces",
    "ScoreNet": "invdiff.interfaces",
    "Sampler": "invdiff.interfaces",
    "SampleResult": "invdiff.interfaces",
    # errors
    "InvdiffError": "invdiff.errors",
    "PluginError": "invdiff.errors",
    "UnknownComponentError": "invdiff.errors",
    "ConfigError": "invdiff.errors",
    "DataError": "invdiff.errors",
    "CheckpointError": "invdiff.errors",
    "SamplingError": "invdiff.errors",
    # data, training, sampling
    "simulate": "invdiff.data.simulation",
    "Dataset": "invdiff.data.dataset",
    "Normalization": "invdiff.data.dataset",
    "load_dataset": "invdiff.data.dataset",
    "Trainer": "invdiff.training.trainer",
    "TrainingConfig": "invdiff.training.config",
    "load_model": "invdiff.experiment.inference",
    "infer": "invdiff.experiment.inference",
    "calibrate": "invdiff.evaluation.recalibration",
    "Calibration": "invdiff.evaluation.recalibration",
    "sample_posterior": "invdiff.sampling.posterior",
    "Posterior": "invdiff.sampling.posterior",
    # experiments
    "Experiment": "invdiff.experiment.run",
    "load_config": "invdiff.experiment.config",
}

__getattr__, _names = lazy_exports(__name__, _EXPORTS)
__all__ = [*_names, "__version__"]
