"""The five roles of the method and the result a sampler returns.

Shapes are channels-first: one x is ``(C, H, W)``, a batch ``(B, C, H, W)``; likewise y.

* ``Prior``          x ~ p(x)
* ``ForwardModel``   y_clean = F(x)            (a black box: no gradients are needed)
* ``NoiseModel``     y ~ p(y | y_clean)
* ``ScoreNet``       s(x, y, sigma) ~ grad_x log p_sigma(x | y), with
                     p_sigma(x | y) = int p(x0 | y) N(x; x0, sigma^2 I) dx0
* ``Sampler``        draws from p(x | y) given any score callable and a decreasing ladder
* ``ReferencePosterior``  p(x | y) by a route independent of any network (a closed form, MCMC
                     over a parametric prior's parameters): what the cSDM is measured against
* ``Metric``         a problem-specific number of posterior samples against the truth (the IoU
                     of a segmented inclusion, the error of a region's modulus)

Concrete components live in plugins; these base classes only fix the contract (and the
contract kit :mod:`invdiff.testing` checks it). A prior or forward model may also say what its
field is physically with two optional string attributes, ``label`` (e.g. "shear modulus mu")
and ``units`` (e.g. "relative to the background"); figures and ``metrics.json`` show them
(:func:`invdiff.evaluation.verdicts.field_labels`) and fall back to "x" / "measurement y" without
them. Subclassing is optional: anything with the same methods works (duck typing), which keeps
third-party code free of import-time coupling.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

#: A score function: ``score(x (B, *x_shape), y (B, *y_shape), sigma (B,)) -> (B, *x_shape)``.
ScoreFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

__all__ = [
    "Prior",
    "ForwardModel",
    "NoiseModel",
    "ScoreNet",
    "Sampler",
    "SampleResult",
    "ScoreFn",
    "ReferencePosterior",
    "ReferenceResult",
    "Metric",
]


class Prior(abc.ABC):
    """A distribution over fields x of shape :attr:`shape` = ``(C, H, W)``."""

    @property
    @abc.abstractmethod
    def shape(self) -> tuple[int, ...]:
        """Shape of one x, channels first."""

    @abc.abstractmethod
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Draw ``n`` fields: a tensor ``(n, *shape)``.

        With a seeded ``generator`` the result is reproducible. ``device`` defaults to the
        generator's device (CPU when no generator is given).
        """


class ForwardModel(abc.ABC):
    """The noise-free physics ``y_clean = F(x)``, batched over the first dimension."""

    @abc.abstractmethod
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``x (B, *x_shape)`` to ``y_clean (B, *y_shape)``."""

    @abc.abstractmethod
    def output_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        """``y_shape`` for one x of shape ``x_shape``."""


class NoiseModel(abc.ABC):
    """The measurement ``y ~ p(y | y_clean)``; output has the shape of the input."""

    @abc.abstractmethod
    def __call__(
        self, y_clean: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw one noisy measurement per clean one: ``(B, *y_shape) -> (B, *y_shape)``."""


class ScoreNet(torch.nn.Module):
    """A conditional score network ``s(x, y, sigma) ~ grad_x log p_sigma(x | y)``.

    ``forward(x (B, *x_shape), y (B, *y_shape), sigma (B,)) -> (B, *x_shape)``.
    Subclasses set :attr:`x_shape` and :attr:`y_shape` so that checkpoints and the contract kit
    can build matching inputs.
    """

    x_shape: tuple[int, ...]
    y_shape: tuple[int, ...]

    @abc.abstractmethod
    def forward(self, x: torch.Tensor, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Return the score estimate, shaped like ``x``."""


@dataclass
class SampleResult:
    """What a sampler returns.

    samples: ``(M, n_samples, *x_shape)`` for M measurements.
    nfe: score evaluations per chain (one chain = one sample of one measurement).
    seconds: wall time of the sampling loop.
    info: free-form extras (step sizes, ladder, ...).
    """

    samples: torch.Tensor
    nfe: int
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)


class Sampler(abc.ABC):
    """Draws posterior samples from a score function on a decreasing noise ladder.

    Optional attribute ``steps_per_level``: Langevin steps per noise level; when a sampler has
    it, the ladder heuristic (:func:`invdiff.sampling.sigmas.suggest`) sizes the ladder for it.
    """

    @abc.abstractmethod
    def sample(
        self,
        score: ScoreFn,
        y: torch.Tensor,
        sigmas: torch.Tensor,
        n_samples: int,
        generator: torch.Generator | None = None,
    ) -> SampleResult:
        """Sample ``p(x | y_m)`` for each of the ``M`` measurements in ``y (M, *y_shape)``.

        ``score`` is a :class:`ScoreNet` or any callable with its signature; ``sigmas`` is a
        strictly decreasing 1-D tensor ``sigma_1 > ... > sigma_L``.
        """


@dataclass
class ReferenceResult:
    """A reference posterior of some of M measurements.

    index: which measurements (positions in the ``y`` given) it covers, K of them;
    mean: ``(K, *x_shape)``; std: ``(K, *x_shape)``, or None for a point estimate;
    samples: ``(K, n, *x_shape)`` where the reference has them (else None);
    seconds: wall time per measurement; info: extras (R-hat, ESS, forward solves, ...).
    """

    index: list[int]
    mean: torch.Tensor
    std: torch.Tensor | None
    seconds: float
    samples: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)


class ReferencePosterior(abc.ABC):
    """The posterior p(x | y) of a problem computed without a network.

    Registered under the kind ``"reference"``. A prior names the reference that fits it in
    its attribute ``reference`` (a registry name); a config may name another.
    """

    def fits(self, prior: Any, forward_model: Any, noise_model: Any) -> str | None:
        """None if this reference applies to the problem, else why not (one sentence that
        says what to change)."""
        return None

    @abc.abstractmethod
    def __call__(
        self,
        prior: Any,
        forward_model: Any,
        noise_model: Any,
        y: torch.Tensor,
        y_clean: torch.Tensor | None = None,
    ) -> ReferenceResult:
        """The reference posterior for measurements ``y (M, *y_shape)`` (physical units).

        ``y_clean`` ``(M, *y_shape)``: the noise-free measurements where known (simulated
        data); a noise model relative to the clean signal needs them for its exact std.
        """


class Objective(abc.ABC):
    r"""A training objective for a conditional score network, in normalised units.

    Registered under the kind ``"objective"`` (hook ``register_objectives``) and chosen by
    ``training.objective``. Whatever it optimises, the trained net is read as a score
    :math:`s(\tilde x, y, \sigma) \approx \nabla \log p_\sigma(\tilde x \mid y)` of the VE
    state :math:`\tilde x = x + \sigma z`, so every sampler samples every objective's model.
    Per training step the trainer calls :meth:`draw` for the global batch (one seeded
    generator) and :meth:`terms` on its shard; validation calls :meth:`terms` with fixed levels
    and noise.
    """

    name: str = ""

    def prepare(self, net: Any, config: Any) -> None:  # noqa: B027 - optional hook
        """Read what the run sets (the :class:`~invdiff.training.TrainingConfig`) and the net,
        once, before training. Default: nothing."""

    @property
    def weighting(self) -> str:
        """A short name of how levels are weighted, for the run's summary."""
        return self.name

    @abc.abstractmethod
    def draw(self, x: torch.Tensor, sigmas: torch.Tensor,
             generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Levels ``sigma (B,)`` within the ladder ``sigmas`` and noise ``z`` shaped like
        ``x (B, *x_shape)``."""

    @abc.abstractmethod
    def terms(self, net: Any, x: torch.Tensor, y: torch.Tensor, sigma: torch.Tensor,
              z: torch.Tensor) -> torch.Tensor:
        """The loss of each example ``(B,)`` (summed over pixels, at least float32) for the
        VE states ``x + sigma z``."""


class Metric(abc.ABC):
    """A problem-specific metric of posterior samples against the truth.

    Registered under the kind ``"metric"`` (hook ``register_metrics``). Every registered metric
    is built with its default parameters, asked whether it fits the problem (:meth:`applies`)
    and, if so, called on the samples of the held-out measurements
    (:func:`invdiff.evaluation.problem_metrics.problem_metrics`); its numbers become columns of
    ``metrics.json`` and of the study's results.

    ``name``: the prefix its column names share (e.g. ``"iou"`` for ``{"iou": ...}``,
    ``"spheroid"`` for ``{"spheroid_rel_err": ...}``); column names of different metrics must
    not clash.
    """

    name: str

    def applies(self, prior: Any, forward_model: Any, noise_model: Any) -> bool:
        """Whether this metric makes sense for the problem (e.g. only for one prior). Keep it
        cheap: it is asked for every problem. Default: always."""
        return True

    @abc.abstractmethod
    def __call__(
        self,
        samples: torch.Tensor,
        truth: torch.Tensor,
        prior: Any,
        forward_model: Any,
        noise_model: Any,
    ) -> dict[str, float]:
        """Named numbers, each averaged over the M measurements.

        ``samples``: posterior samples ``(M, n, *x_shape)`` in physical units (the units of
        the prior's x); ``truth``: the true fields ``(M, *x_shape)``. The inputs are not
        modified. Returns ``{column name: float}``, the same keys on every call.
        """
