"""Registers the OCE components (torch-free: factories are import strings)."""

from __future__ import annotations

from invdiff.hookspecs import hookimpl
from invdiff.params import MCMCReferenceParams, Params
from invdiff_oce.params import (
    InclusionMetricParams,
    OCEPhaseNoiseParams,
    OCEPhaseParams,
    TumourSpheroidParams,
)


@hookimpl
def register_priors(register):
    register("tumour-spheroid", "invdiff_oce.spheroid:TumourSpheroidPrior", TumourSpheroidParams,
             "elliptical spheroid (stiff rim, soft core) in a hydrogel under a compliant layer")


@hookimpl
def register_forward_models(register):
    register("oce-phase", "invdiff_oce.forward:OCEPhaseForward", OCEPhaseParams,
             "plane-strain FEM compression, OCT phase difference wrapped to (-pi, pi]")


@hookimpl
def register_noise_models(register):
    register("oce-phase-noise", "invdiff_oce.noise:OCEPhaseNoise", OCEPhaseNoiseParams,
             "speckle/SNR-dependent OCT phase noise with strain decorrelation")


@hookimpl
def register_references(register):
    register("spheroid-mcmc", "invdiff_oce.reference:SpheroidMCMCReference", MCMCReferenceParams,
             "spheroid-parameter MCMC with the exact phase likelihood (unsmoothed speckle)")
    register("oce-algebraic", "invdiff_oce.reference:AlgebraicReference", Params,
             "stress/strain point estimate under the compliant layer (no std)")


@hookimpl
def register_metrics(register):
    register("oce-inclusion-iou", "invdiff_oce.metrics:InclusionIoU", InclusionMetricParams,
             "iou: IoU of the thresholded inclusion, posterior mean vs truth (spheroid prior)")
    register("oce-spheroid-modulus", "invdiff_oce.metrics:SpheroidModulusError",
             InclusionMetricParams,
             "spheroid_rel_err: relative error of the spheroid's mean modulus (posterior mean)")
    register("oce-gel-modulus", "invdiff_oce.metrics:GelModulusError", Params,
             "gel_rel_err: relative error of the gel modulus (body median, posterior mean)")
