"""Hook implementations. Factories are 'module:attribute' strings: imported only when built,
so `invdiff plugins` never imports torch."""

from invdiff.hookspecs import hookimpl
from invdiff_example.params import DiscParams, LaplaceParams


@hookimpl
def register_priors(register):
    register("example-disc", "invdiff_example.components:DiscPrior", DiscParams,
             "one disc of random centre, radius and contrast on a constant background")


@hookimpl
def register_noise_models(register):
    register("example-laplace", "invdiff_example.components:LaplaceNoise", LaplaceParams,
             "additive Laplace noise of scale b")
