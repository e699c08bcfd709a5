"""Registers the reference components through the plugin manager, like any plugin."""

from __future__ import annotations

from invdiff.hookspecs import hookimpl
from invdiff.reference.params import (
    BlurParams,
    GaussianFieldParams,
    GaussianNoiseParams,
    LinearGaussianReferenceParams,
)


@hookimpl
def register_priors(register):
    register("gaussian-field", "invdiff.reference.prior:GaussianFieldPrior",
             GaussianFieldParams, "Gaussian random field, squared-exponential covariance")


@hookimpl
def register_forward_models(register):
    register("blur", "invdiff.reference.forward:LinearBlur", BlurParams,
             "linear Gaussian blur with optional pixel mask / subsampling")


@hookimpl
def register_noise_models(register):
    register("gaussian", "invdiff.reference.noise:GaussianNoise", GaussianNoiseParams,
             "additive Gaussian noise, absolute std or relative to the clean RMS")


@hookimpl
def register_references(register):
    register("linear-gaussian", "invdiff.reference.exact:LinearGaussianReference",
             LinearGaussianReferenceParams, "closed-form posterior of a linear-Gaussian problem")
