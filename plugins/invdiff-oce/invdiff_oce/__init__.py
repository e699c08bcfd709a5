"""invdiff plugin for compression optical coherence elastography (OCE) of tumour spheroids.

* prior ``tumour-spheroid``: :class:`TumourSpheroidPrior`, shear modulus (kPa) of an elliptical
  spheroid (stiff rim, soft necrotic core) in a hydrogel under a compliant layer;
* forward model ``oce-phase``: :class:`OCEPhaseForward`, plane-strain FEM (elasticity plugin)
  then the OCT phase difference 4 pi n u_z / lambda_0, wrapped to (-pi, pi];
* noise model ``oce-phase-noise``: :class:`OCEPhaseNoise`, speckle- and depth-dependent OCT
  phase noise with strain-induced decorrelation;
* :mod:`invdiff_oce.algebraic`: the conventional estimate modulus = stress / strain with the
  stress read from the compliant layer;
* :mod:`invdiff_oce.likelihood` / :mod:`invdiff_oce.reference`: the exact likelihood for
  unsmoothed speckle and the MCMC reference posterior over the spheroid's parameters;
* metrics ``oce-inclusion-iou``, ``oce-spheroid-modulus``, ``oce-gel-modulus``
  (:mod:`invdiff_oce.metrics`): IoU of the thresholded inclusion and the spheroid's and gel's
  modulus errors of the posterior mean, added to the results of spheroid problems.

Attributes load lazily so that listing plugins never imports torch.
"""

from __future__ import annotations

from invdiff.lazy import lazy_exports

_EXPORTS = {
    "TumourSpheroidPrior": "invdiff_oce.spheroid",
    "OCEPhaseForward": "invdiff_oce.forward",
    "OCEPhaseNoise": "invdiff_oce.noise",
    "algebraic_estimate": "invdiff_oce.algebraic",
    "OCELikelihood": "invdiff_oce.likelihood",
    "reference_posterior": "invdiff_oce.reference",
    "wrap": "invdiff_oce.phase",
    "axial_phase_gradient": "invdiff_oce.phase",
    "phase_resultant": "invdiff_oce.circular",
    "circular_std": "invdiff_oce.circular",
    "inclusion_iou": "invdiff_oce.metrics",
    "spheroid_rel_err": "invdiff_oce.metrics",
    "gel_rel_err": "invdiff_oce.metrics",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
