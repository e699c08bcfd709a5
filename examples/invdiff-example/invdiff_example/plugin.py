"""Hook implementations. Factories are 'module:attribute' strings: imported only when built,
so `invdiff plugins` never imports torch."""

from invdiff.hookspecs import hookimpl
from invdiff_example.params import BoxBlurParams, DiscParams, EulerParams, LaplaceParams


@hookimpl
def register_priors(register):
    register("example-disc", "invdiff_example.components:DiscPrior", DiscParams,
             "one disc of random centre, radius and contrast on a constant background")


@hookimpl
def register_noise_models(register):
    register("example-laplace", "invdiff_example.components:LaplaceNoise", LaplaceParams,
             "additive Laplace noise of scale b")


@hookimpl
def register_forward_models(register):
    register("example-boxblur", "invdiff_example.components:BoxBlur", BoxBlurParams,
             "mean over k x k blocks (a low-resolution measurement)")


@hookimpl
def register_samplers(register):
    register("example-euler", "invdiff_example.components:ProbabilityFlowEuler", EulerParams,
             "Euler steps of the probability-flow ODE on the noise ladder")
