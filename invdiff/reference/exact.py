"""Closed-form posterior of a linear-Gaussian problem and the exact score of its noised version.

Prior x ~ N(m0, C), measurement y = A x + e with e ~ N(0, s^2 I). Then (Kalman form, no C^-1)

    G = A C A^T + s^2 I,   K = C A^T G^-1,
    m(y) = m0 + K (y - A m0),   S = C - K A C,

and the posterior noised by N(0, sigma^2 I) (the target of denoising score matching) is
N(m(y), S + sigma^2 I), whose score is ``-(S + sigma^2 I)^-1 (x - m(y))``. With S = U L U^T the
inverse is applied as U diag(1 / (L + sigma^2)) U^T, one eigendecomposition for every sigma.
A measurement with gaps (NaN entries, not measured) conditions on its measured entries only:
A, y and the noise rows where y is NaN are dropped (one gain and eigendecomposition per pattern).
Everything is computed in float64 and returned in the caller's dtype and device.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from invdiff.checks import as_batch, randn
from invdiff.data.masking import check_gaps
from invdiff.errors import ConfigError
from invdiff.interfaces import ReferencePosterior, ReferenceResult


@dataclass
class _Given:
    """The posterior given the measured rows ``rows`` (P,) bool of y: the operator ``a``
    (P_o, D) of those rows, the gain ``gain`` (D, P_o), the covariance ``cov`` (D, D) and its
    eigendecomposition (all float64)."""

    rows: torch.Tensor
    a: torch.Tensor
    gain: torch.Tensor
    cov: torch.Tensor
    evals: torch.Tensor
    evecs: torch.Tensor


class LinearGaussianPosterior:
    """The exact posterior N(m(y), S) of a linear-Gaussian problem.

    Shapes: ``x_shape`` = (C, H, W) with D = C*H*W; ``y_shape`` with P entries.

    Measurements with gaps (NaN = not measured, :mod:`invdiff.data.masking`): the posterior of
    x given only the measured entries, i.e. the same formulas with the rows of A and y where y
    is NaN dropped (each pattern of gaps is computed once and kept).
    """

    def __init__(
        self,
        prior_mean: torch.Tensor,
        prior_cov: torch.Tensor,
        operator: torch.Tensor,
        noise_std: float,
        x_shape: tuple[int, ...],
        y_shape: tuple[int, ...],
    ) -> None:
        self.x_shape, self.y_shape = tuple(x_shape), tuple(y_shape)
        self._m0 = prior_mean.double()
        self._c = prior_cov.double()
        self._a = operator.double()
        self.noise_std = float(noise_std)
        self._parts: dict[bytes, _Given] = {}
        full = self.given(torch.ones(self._a.shape[0], dtype=torch.bool))
        self.cov, self._gain = full.cov, full.gain
        self._evals, self._evecs = full.evals, full.evecs

    def given(self, rows: torch.Tensor) -> _Given:
        """The posterior given only the entries ``rows`` ((P,) bool, True = measured) of y."""
        rows = torch.as_tensor(rows, dtype=torch.bool).reshape(-1).cpu()
        key = rows.numpy().tobytes()
        if key not in self._parts:
            a, c = self._a[rows], self._c
            g = a @ c @ a.T + self.noise_std**2 * torch.eye(a.shape[0], dtype=torch.float64)
            gain = torch.linalg.solve(g, a @ c).T  # K = C A^T G^-1 (C, G symmetric)
            cov = c - gain @ a @ c
            cov = 0.5 * (cov + cov.T)
            evals, evecs = torch.linalg.eigh(cov)
            self._parts[key] = _Given(rows, a, gain, cov, evals.clamp_min(0.0), evecs)
        return self._parts[key]

    @property
    def std(self) -> torch.Tensor:
        """Marginal posterior std of a complete measurement, shaped ``x_shape`` (float64)."""
        return self.cov.diagonal().clamp_min(0).sqrt().reshape(self.x_shape)

    def std_of(self, y: torch.Tensor) -> torch.Tensor:
        """Marginal posterior std ``(M, *x_shape)`` (float64) of each measurement in ``y``:
        that of a complete one, or given only its measured entries."""
        y_flat = self._flat(y)
        out = torch.empty(y_flat.shape[0], self._m0.numel(), dtype=torch.float64)
        for part, idx in self._groups(y_flat):
            out[idx] = part.cov.diagonal().clamp_min(0).sqrt()
        return out.reshape(-1, *self.x_shape)

    def mean(self, y: torch.Tensor) -> torch.Tensor:
        """Posterior mean ``(M, *x_shape)`` for ``y (M, *y_shape)`` (or one y; NaN entries are
        not measured)."""
        y = as_batch(y, self.y_shape, "y")
        m = self._mean_flat(self._flat(y))
        return m.reshape(-1, *self.x_shape).to(device=y.device, dtype=y.dtype)

    def _flat(self, y: torch.Tensor) -> torch.Tensor:
        y = check_gaps(as_batch(torch.as_tensor(y), self.y_shape, "y"), True, "y")
        return y.flatten(1).double().cpu()

    def _groups(self, y_flat: torch.Tensor) -> list[tuple[_Given, torch.Tensor]]:
        """``(posterior given a pattern of measured entries, measurements with it)``."""
        measured = ~torch.isnan(y_flat)
        if bool(measured.all()):
            return [(self.given(measured[0]), torch.arange(len(y_flat)))]
        patterns, which = torch.unique(measured, dim=0, return_inverse=True)
        return [(self.given(p), (which == k).nonzero()[:, 0]) for k, p in enumerate(patterns)]

    def _mean_flat(self, y_flat: torch.Tensor) -> torch.Tensor:
        out = torch.empty(y_flat.shape[0], self._m0.numel(), dtype=torch.float64)
        for part, idx in self._groups(y_flat):
            yo = y_flat[idx][:, part.rows]
            out[idx] = self._m0 + (yo - self._m0 @ part.a.T) @ part.gain.T
        return out

    def sample(
        self, y: torch.Tensor, n: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Exact posterior samples ``(M, n, *x_shape)`` in y's dtype and device."""
        y = as_batch(y, self.y_shape, "y")
        y_flat = self._flat(y)
        m = self._mean_flat(y_flat)  # (M, D)
        z = randn((m.shape[0], n, m.shape[1]), generator, m)
        x = torch.empty_like(z)
        for part, idx in self._groups(y_flat):
            root = part.evecs * part.evals.sqrt()
            x[idx] = m[idx, None, :] + z[idx] @ root.T
        return x.reshape(m.shape[0], n, *self.x_shape).to(device=y.device, dtype=y.dtype)

    def noised_score(self, x: torch.Tensor, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """``-(S + sigma^2 I)^-1 (x - m(y))`` for ``x (B, *x_shape)``, ``y (B, *y_shape)``,
        ``sigma (B,)`` (S and m those given the measured entries of each y); returned like x."""
        b = x.shape[0]
        mean, groups = self._cached_mean(y.reshape(b, -1))
        d = x.reshape(b, -1).double().cpu() - mean
        s2 = sigma.reshape(-1).double().cpu().square()
        if s2.numel() == 1:
            s2 = s2.expand(b)
        out = torch.empty_like(d)
        for part, idx in groups:
            coeff = (d[idx] @ part.evecs) / (part.evals[None, :] + s2[idx, None])
            out[idx] = -(coeff @ part.evecs.T)
        return out.reshape(x.shape).to(device=x.device, dtype=x.dtype)

    def _cached_mean(self, y_flat: torch.Tensor) -> tuple[torch.Tensor, list]:
        # Samplers call the score many times with the same y: reuse m(y) when y is unchanged.
        y64 = y_flat.double().cpu()
        cache = getattr(self, "_mean_cache", None)
        if (cache is None or cache[0].shape != y64.shape
                or not torch.equal(cache[0].nan_to_num(7.5), y64.nan_to_num(7.5))
                or not torch.equal(cache[0].isnan(), y64.isnan())):
            cache = (y64.clone(), self._mean_flat(y64), self._groups(y64))
            self._mean_cache = cache
        return cache[1], cache[2]

    def score_fn(self) -> ExactScore:
        """The exact noised score as a callable with the ScoreNet signature."""
        return ExactScore(self)


class ExactScore:
    """Callable ``(x, y, sigma) -> score`` of a :class:`LinearGaussianPosterior`.

    Carries ``x_shape`` and ``y_shape`` so samplers know what to draw; takes measurements with
    gaps (NaN = not measured), as a model trained with ``training.masking`` does.
    """

    #: NaN entries of y are "not measured" (the posterior given the measured entries)
    masking = True

    def __init__(self, posterior: LinearGaussianPosterior) -> None:
        self.posterior = posterior
        self.x_shape, self.y_shape = posterior.x_shape, posterior.y_shape

    def __call__(self, x: torch.Tensor, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.posterior.noised_score(x, y, sigma)


def not_linear_gaussian(prior, forward_model, noise_model) -> str | None:
    """None if the problem is linear-Gaussian (so :func:`exact_posterior` applies), else why
    not. Checks attributes only: nothing is computed."""
    for obj, attrs, role in (
        (prior, ("mean_vector", "covariance_matrix"), "prior"),
        (forward_model, ("matrix",), "forward model"),
    ):
        if not all(hasattr(obj, a) for a in attrs):
            return (f"the {role} {type(obj).__name__} is not linear-Gaussian (it lacks "
                    f"{' / '.join(attrs)}); the exact posterior exists only for the reference "
                    f"components gaussian-field + blur + gaussian noise")
    if getattr(noise_model, "std", None) is None:
        return ("the exact posterior needs additive Gaussian noise with an absolute std; "
                "relative noise (level=...) makes the likelihood non-Gaussian. Use "
                "GaussianNoise(std=...) or invdiff.reference.make_problem(noise_level=...), "
                "which converts a level to a std")
    return None


def exact_posterior(prior, forward_model, noise_model) -> LinearGaussianPosterior:
    """The closed-form posterior of a linear-Gaussian problem.

    Needs a prior with ``mean_vector()`` and ``covariance_matrix()`` (e.g. ``gaussian-field``),
    a forward model with ``matrix()`` (e.g. ``blur``) and additive Gaussian noise with an
    absolute ``std``.
    """
    why = not_linear_gaussian(prior, forward_model, noise_model)
    if why is not None:
        raise ConfigError(why)
    x_shape = tuple(prior.shape)
    return LinearGaussianPosterior(
        prior.mean_vector(),
        prior.covariance_matrix(),
        forward_model.matrix(),
        float(noise_model.std),
        x_shape,
        tuple(forward_model.output_shape(x_shape)),
    )


class LinearGaussianReference(ReferencePosterior):
    """The reference ``linear-gaussian``: the closed form :func:`exact_posterior` as a
    registered reference (mean and std of every measurement, exact samples on request)."""

    def __init__(self, n_samples: int = 0) -> None:
        self.n_samples = n_samples

    def fits(self, prior, forward_model, noise_model) -> str | None:
        return not_linear_gaussian(prior, forward_model, noise_model)

    def __call__(self, prior, forward_model, noise_model, y, y_clean=None) -> ReferenceResult:
        t0 = time.perf_counter()
        post = exact_posterior(prior, forward_model, noise_model)
        mean = post.mean(y.double())  # NaN entries of y: given the measured ones only
        samples = (post.sample(y.double(), self.n_samples, torch.Generator().manual_seed(0))
                   if self.n_samples else None)
        return ReferenceResult(index=list(range(len(y))), mean=mean,
                               std=post.std_of(y).to(mean), samples=samples,
                               seconds=(time.perf_counter() - t0) / len(y))
