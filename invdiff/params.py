"""Parameter models shared across plugins (pydantic; no torch import).

* :class:`Params`: the base of every component's parameter model (unknown keys are errors);
* :class:`ScoreNetParams`: what every conditional score net takes (shapes, speed switches);
* :class:`LadderParams`: what every sampler built on :class:`invdiff.sampling.LadderSampler`
  takes.

Plugins subclass these, so the registry can validate parameters without importing torch.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Params(BaseModel):
    """Base of component parameter models: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


Shape3 = tuple[int, int, int]


class ScoreNetParams(Params):
    """Shapes of one x and one y (channels first) and the speed switches."""

    x_shape: Shape3 = Field(description="shape of one x: (channels, H, W)")
    y_shape: Shape3 = Field(description="shape of one y: (channels, Hy, Wy)")
    channels_last: bool = Field(False, description="run convolutions in channels_last layout")
    bf16: bool = Field(False, description="bfloat16 autocast inside forward (output in x's dtype)")


#: Chains per score call by default: the network's activations are those of a batch of 256,
#: however many chains run (4096 chains of the demo's U-Net at 16 x 16: 1177 MB peak in one
#: call, 401 MB in calls of 256, the same samples; benchmarks/sampling_memory.py).
DEFAULT_CHUNK_SIZE = 256
#: What sampling uses unless told otherwise (the config's [sampling] section and
#: invdiff.sample_posterior alike): the sampler, posterior samples per measurement, CPU threads.
DEFAULT_SAMPLER = "annealed-langevin"
DEFAULT_N_SAMPLES = 100
DEFAULT_THREADS = 1
#: Validation pairs a run fits its spread calibration on (invdiff.calibrate; 0: none)
DEFAULT_CALIBRATION_PAIRS = 32
#: T of the NCSNv2 ladder rule and of annealed Langevin: Langevin steps per noise level
DEFAULT_STEPS_PER_LEVEL = 5


class LadderParams(Params):
    """Parameters of the shared sampling loop."""

    x_shape: tuple[int, ...] | None = Field(
        None, description="shape of one x (C, H, W); default: the score's x_shape"
    )
    init: Literal["gaussian", "uniform"] = Field(
        "gaussian", description="start: N(0, sigma_1^2 I) or U(-1, 1)"
    )
    chunk_size: int | None = Field(
        DEFAULT_CHUNK_SIZE, ge=1, description="at most this many chains per score call: bounds "
        "the network's activation memory whatever the number of chains (None: all at once)"
    )
    final_denoise: bool = Field(True, description="end with x + sigma_L^2 s(x, y, sigma_L)")
    progress: bool = Field(True, description="show a progress bar")


#: The MCMC references' chains unless told otherwise: ensemble steps and walkers.
DEFAULT_MCMC_STEPS = 2000
DEFAULT_MCMC_WALKERS = 32


class MCMCReferenceParams(Params):
    """Parameters of the MCMC references
    (:class:`invdiff.evaluation.mcmc.ParameterMCMCReference`)."""

    n_ref: int = Field(2, ge=1, description="measurements that get a chain (the first n_ref)")
    n_steps: int = Field(DEFAULT_MCMC_STEPS, ge=4, description="ensemble steps per chain")
    n_walkers: int = Field(DEFAULT_MCMC_WALKERS, ge=4,
                           description="walkers (even, at least 2 d + 2)")
    burn_in: int | None = Field(None, ge=0, description="discarded steps (None: n_steps // 2)")
    seed: int = Field(0, ge=0, description="chain m uses seed + m")
    cache: str | None = Field(None, description="folder caching each chain's summary")
    progress: bool = Field(False, description="show a progress bar per chain")
