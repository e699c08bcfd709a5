r"""The one sampling loop shared by every noise-ladder sampler.

A ladder sampler draws from :math:`p(x \mid y)` with a score function
:math:`s(x, y, \sigma) \approx \nabla_x \log p_\sigma(x \mid y)` on a decreasing ladder
:math:`\sigma_1 > \dots > \sigma_L`, where :math:`p_\sigma(\cdot \mid y)` is the posterior
convolved with :math:`\mathcal N(0, \sigma^2 I)`. Every sampler here runs the same loop:

1. start M*n chains (n samples of each of the M measurements) from
   :math:`x \sim \mathcal N(0, \sigma_1^2 I)` (``init="gaussian"``: :math:`p_{\sigma_1}` when
   :math:`\sigma_1` dwarfs the data) or :math:`U(-1, 1)^D` (``init="uniform"``: the NCSN
   start, centred for zero-mean normalised data);
2. for each level :math:`i = 1 \dots L`: the sampler's :meth:`LadderSampler.level` moves the
   chains from (about) :math:`p_{\sigma_i}` towards :math:`p_{\sigma_{i+1}}`;
3. optionally a final denoising step, Tweedie's formula
   :math:`x \leftarrow x + \sigma_L^2 s(x, y, \sigma_L) = \mathbb E[x_0 \mid x_{\sigma_L}]`,
   which removes the residual noise of scale :math:`\sigma_L`.

A concrete sampler is the few lines of its :meth:`~LadderSampler.level`, built from two shared
moves: :meth:`Chains.langevin` (a Langevin step
:math:`x \leftarrow x + a\, s + \sqrt{2a}\, z`, the whole of annealed Langevin dynamics and the
corrector of predictor-corrector) and :meth:`Chains.score` / :meth:`Chains.noise` for anything
else (the reverse-diffusion predictor).

Mechanics owned here, once: input checks, batching of M*n chains with at most ``chunk_size``
chains per score call (memory cap), seeding (the noise of a step is drawn for all chains at once
from the one generator, so samples do not depend on ``chunk_size``), nfe counting, a tqdm
progress bar, a divergence check after every move (:class:`~invdiff.errors.SamplingError`
naming level, sigma and step) and the wall-clock time. Shapes: x is ``(N, *x_shape)`` with
N = M*n chains ordered measurement-major (chain ``m*n + j`` is sample j of measurement m).
"""

from __future__ import annotations

import abc
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from invdiff.checks import as_batch, check_finite, randn
from invdiff.data.masking import check_gaps
from invdiff.errors import ConfigError, DataError, SamplingError
from invdiff.interfaces import Sampler, SampleResult, ScoreFn
from invdiff.params import DEFAULT_CHUNK_SIZE
from invdiff.sampling.sigmas import check_ladder

__all__ = ["Chains", "LadderSampler", "snr_step_size"]

#: A Langevin step size: a float, or a rule ``(s (N, ...), z (N, ...)) -> a (N,)`` per chain.
StepSize = float | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

INITS = ("gaussian", "uniform")


def snr_step_size(s: torch.Tensor, z: torch.Tensor, snr: float) -> torch.Tensor:
    r"""Song et al. (2021)'s corrector step size for a target signal-to-noise ratio r.

    :math:`a = 2 (r \lVert z \rVert / \lVert s \rVert)^2` per chain, so that the drift
    :math:`a \lVert s \rVert` is :math:`\sqrt{2} r` times the noise :math:`\sqrt{2a}\lVert z
    \rVert`. ``s``, ``z``: ``(N, *x_shape)``; returns ``(N,)``. A chain whose score is exactly
    zero (at the mode) gets a = 0 instead of a division by zero.
    """
    s_norm = s.flatten(1).norm(dim=1)
    z_norm = z.flatten(1).norm(dim=1)
    ratio = torch.where(s_norm > 0, z_norm / s_norm.clamp_min(torch.finfo(s.dtype).tiny), 0.0)
    return 2.0 * (snr * ratio).square()


def _per_chain(a: float | torch.Tensor, x: torch.Tensor) -> float | torch.Tensor:
    """A step size broadcastable to x: floats stay floats, ``(N,)`` becomes ``(N, 1, ...)``."""
    if isinstance(a, torch.Tensor):
        return a.to(dtype=x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
    return a


@dataclass
class Chains:
    """The state of one sampling run: M*n chains, their measurements and the cost so far.

    x: ``(N, *x_shape)`` current states; y: ``(M, *y_shape)`` measurements (chain c sees
    ``y[c // n_samples]``); sigmas: the ladder as Python floats.
    """

    x: torch.Tensor
    y: torch.Tensor
    n_samples: int
    sigmas: list[float]
    score_fn: ScoreFn
    generator: torch.Generator | None = None
    chunk_size: int | None = None
    bar: Any = None
    nfe: int = 0
    level: int = 0
    step: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    #: what a solver carries from one level to the next within a run (e.g. a multistep
    #: solver's previous denoiser output); starts empty for every run
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def n_levels(self) -> int:
        return len(self.sigmas)

    def sigma(self, i: int) -> float:
        """sigma_{i+1} in the paper's 1-based notation (0-based index ``i``); 0 past the end."""
        return self.sigmas[i] if i < len(self.sigmas) else 0.0

    def score(self, sigma: float) -> torch.Tensor:
        """``s(x, y, sigma)`` for every chain, at most ``chunk_size`` chains per call; +1 nfe."""
        x = self.x
        n = x.shape[0]
        size = self.chunk_size or n
        chain_ids = torch.arange(n, device=x.device)
        parts = []
        for start in range(0, n, size):
            ids = chain_ids[start : start + size]
            xc = x[start : start + size]
            yc = self.y.index_select(0, ids // self.n_samples)
            sig = torch.full((xc.shape[0],), sigma, dtype=x.dtype, device=x.device)
            out = self.score_fn(xc, yc, sig)
            if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(xc.shape):
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ConfigError(
                    f"the score function returned {got} for x of shape {tuple(xc.shape)}; a "
                    f"score must be shaped like x (is x_shape right for this score?)"
                )
            parts.append(out.to(dtype=x.dtype))
        self.nfe += 1
        if self.bar is not None:
            self.bar.update(1)
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def noise(self) -> torch.Tensor:
        """Standard normal noise like x, drawn for all chains at once (chunk-independent)."""
        return randn(self.x.shape, self.generator, self.x)

    def move(self, x_new: torch.Tensor, what: str = "") -> None:
        """Accept the new states; stop with :class:`SamplingError` if any chain diverged."""
        self.step += 1
        # one cheap reduction per move; the per-chain search runs only when something is off
        if not bool(torch.isfinite(x_new.sum())):
            self._diverged(x_new, what)
        self.x = x_new

    def _diverged(self, x_new: torch.Tensor, what: str) -> None:
        bad = ~torch.isfinite(x_new.flatten(1)).all(dim=1)
        if bool(bad.any()):
            first = int(bad.nonzero()[0, 0])
            i = self.level
            where = (
                "the final denoising step"
                if what == "denoise"
                else f"noise level {i + 1} of {self.n_levels} (index {i}, sigma = "
                f"{self.sigma(i):.4g}), step {self.step} of that level ({what})"
            )
            raise SamplingError(
                f"{int(bad.sum())} of {x_new.shape[0]} chains became NaN or Inf at {where}; "
                f"the first is sample {first % self.n_samples} of measurement "
                f"{first // self.n_samples}. Use a "
                f"smaller step size (eps / snr), check the score model on this sigma range, "
                f"or start the ladder at a sigma the model was trained on."
            )

    def langevin(self, sigma: float, step_size: StepSize) -> None:
        r"""One Langevin step at noise level sigma: :math:`x \leftarrow x + a s + \sqrt{2a} z`.

        Annealed Langevin dynamics (Song & Ermon 2019, Alg. 1) uses a fixed a per level; the
        predictor-corrector's corrector (Song et al. 2021, Alg. 4) sets a per chain from a
        target signal-to-noise ratio (:func:`snr_step_size`).
        """
        s = self.score(sigma)
        z = self.noise()
        a = step_size(s, z) if callable(step_size) else step_size
        a = _per_chain(a, self.x)
        self.move(self.x + a * s + (2.0 * a) ** 0.5 * z, "Langevin step")

    def denoise(self) -> None:
        r"""Tweedie's formula at sigma_L: :math:`x \leftarrow x + \sigma_L^2 s(x, y, \sigma_L)`."""
        sigma = self.sigmas[-1]
        self.move(self.x + sigma**2 * self.score(sigma), "denoise")


class LadderSampler(Sampler):
    """A sampler on a noise ladder: the shared loop; subclasses implement :meth:`level`.

    Parameters common to every ladder sampler:

    * ``x_shape``: shape of one x; defaults to ``score.x_shape`` (ConfigError if neither);
    * ``init``: ``"gaussian"`` (N(0, sigma_1^2 I)) or ``"uniform"`` (U(-1, 1)) start;
    * ``chunk_size``: at most this many chains per score call (default 256; None: all at
      once). Peak memory is then the chains' state, a few tensors of M*n*D numbers, plus the
      network's activations for ``chunk_size`` chains, which no longer grow with M*n;
    * ``final_denoise``: end with Tweedie's step x + sigma_L^2 s(x, y, sigma_L);
    * ``progress``: show a tqdm bar over score evaluations.
    """

    #: name used in progress bars and ``SampleResult.info``
    name = "ladder"

    def __init__(
        self,
        x_shape: tuple[int, ...] | None = None,
        init: str = "gaussian",
        chunk_size: int | None = DEFAULT_CHUNK_SIZE,
        final_denoise: bool = True,
        progress: bool = True,
    ) -> None:
        if init not in INITS:
            raise ConfigError(f"init must be one of {INITS}, got {init!r}")
        if chunk_size is not None and chunk_size < 1:
            raise ConfigError(f"chunk_size must be a positive number of chains, got {chunk_size}")
        self.x_shape = None if x_shape is None else tuple(int(s) for s in x_shape)
        self.init, self.chunk_size = init, chunk_size
        self.final_denoise, self.progress = final_denoise, progress

    # -- what a concrete sampler provides ------------------------------------------------------
    @abc.abstractmethod
    def level(self, chains: Chains, i: int) -> None:
        """Move ``chains`` at level ``i`` (0-based; noise ``chains.sigma(i)``)."""

    @abc.abstractmethod
    def nfe_per_chain(self, n_levels: int) -> int:
        """Score evaluations per chain for a ladder of ``n_levels`` (the progress bar's total)."""

    def prepare(self, sigmas: torch.Tensor) -> dict[str, Any]:
        """Per-run settings derived from the ladder (e.g. a step size); stored in
        ``chains.settings`` and ``SampleResult.info``."""
        return {}

    def finish(self, chains: Chains) -> None:
        """The final step after the last level when ``final_denoise`` is on: Tweedie's step
        :meth:`Chains.denoise` unless a sampler ends otherwise (it then counts that step in
        :meth:`nfe_per_chain` itself)."""
        chains.denoise()

    # -- the loop ------------------------------------------------------------------------------
    def sample(
        self,
        score: ScoreFn,
        y: torch.Tensor,
        sigmas: torch.Tensor,
        n_samples: int,
        generator: torch.Generator | None = None,
    ) -> SampleResult:
        """Samples ``(M, n_samples, *x_shape)`` of p(x | y_m) for ``y (M, *y_shape)``."""
        x_shape = self._x_shape(score)
        y = self._check_y(score, y)
        sigmas = check_ladder(torch.as_tensor(sigmas).detach()).to("cpu", torch.float64)
        if not isinstance(n_samples, int) or n_samples < 1:
            raise ConfigError(f"n_samples must be a positive int, got {n_samples!r}")
        settings = self.prepare(sigmas)
        dtype = y.dtype if y.is_floating_point() else torch.get_default_dtype()
        chains = Chains(
            x=self._start((y.shape[0] * n_samples, *x_shape), float(sigmas[0]), generator,
                          y.to(dtype)),
            y=y.to(dtype), n_samples=n_samples, sigmas=sigmas.tolist(), score_fn=score,
            generator=generator, chunk_size=self.chunk_size, settings=settings,
        )
        total = self.nfe_per_chain(len(chains.sigmas))
        t0 = time.perf_counter()
        with torch.no_grad(), _eval_mode(score), tqdm(
            total=total, desc=self.name, unit="nfe", disable=not self.progress, leave=False
        ) as chains.bar:
            for i in range(chains.n_levels):
                chains.level, chains.step = i, 0
                self.level(chains, i)
            if self.final_denoise:
                self.finish(chains)
        if chains.x.device.type == "cuda":
            torch.cuda.synchronize(chains.x.device)
        seconds = time.perf_counter() - t0
        info = {"sampler": self.name, "sigmas": sigmas, "init": self.init,
                "final_denoise": self.final_denoise, "chunk_size": self.chunk_size, **settings}
        samples = chains.x.reshape(y.shape[0], n_samples, *x_shape)
        return SampleResult(samples=samples, nfe=chains.nfe, seconds=seconds, info=info)

    def _x_shape(self, score: ScoreFn) -> tuple[int, ...]:
        from_score = getattr(score, "x_shape", None)
        if self.x_shape is None and from_score is None:
            raise ConfigError(
                f"{self.name}: the shape of x is unknown: the score has no x_shape attribute; "
                f"pass x_shape=(C, H, W) to the sampler"
            )
        if self.x_shape is not None and from_score is not None:
            if tuple(from_score) != self.x_shape:
                raise ConfigError(
                    f"{self.name}: x_shape={self.x_shape} differs from the score's x_shape "
                    f"{tuple(from_score)}; drop the x_shape parameter or fix it"
                )
        return self.x_shape if self.x_shape is not None else tuple(from_score)

    @staticmethod
    def _check_y(score: ScoreFn, y: torch.Tensor) -> torch.Tensor:
        y_shape = getattr(score, "y_shape", None)
        if y_shape is not None:
            y = as_batch(y, tuple(y_shape), "y")
        elif not isinstance(y, torch.Tensor) or y.dim() < 2:
            raise DataError(
                "y must be a tensor (M, *y_shape) of M measurements; add a leading batch "
                "dimension for a single one (y[None])"
            )
        if y.shape[0] < 1:
            raise DataError("y holds no measurement (M = 0)")
        if getattr(score, "masking", False):  # NaN = not measured (invdiff.data.masking)
            return check_gaps(y, True, "y")
        if bool(torch.isnan(y).any()):  # a gap given to a score that cannot take one
            check_gaps(y, False, "y")
        return check_finite(y, "y")

    def _start(
        self,
        shape: tuple[int, ...],
        sigma_1: float,
        generator: torch.Generator | None,
        like: torch.Tensor,
    ) -> torch.Tensor:
        if self.init == "gaussian":
            return sigma_1 * randn(shape, generator, like)
        dev = generator.device if generator is not None else like.device
        u = torch.rand(shape, generator=generator, dtype=like.dtype, device=dev)
        return (2.0 * u - 1.0).to(like.device)


@contextlib.contextmanager
def _eval_mode(score: Any) -> Iterator[None]:
    """Put a torch module in eval mode while sampling (dropout off), then restore its mode."""
    if isinstance(score, torch.nn.Module) and score.training:
        score.eval()
        try:
            yield
        finally:
            score.train()
    else:
        yield
