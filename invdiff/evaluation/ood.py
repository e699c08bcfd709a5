r"""Is a measurement like the ones the model was trained on? A typicality test in y space.

The verdict depends on the training measurements and the model's y normalisation only, never
on the network, so it holds however well (or badly) the net is trained.

Fit (:meth:`Typicality.fit`), on N training measurements normalised as the net sees them and
flattened to D numbers: their mean :math:`\mu`, the top k principal directions
:math:`u_i` with variances :math:`\lambda_i` (k = min(D, N/4, 64)), and the mean variance
:math:`\bar\lambda_r` of what is left. The score of a measurement y is

.. math::

    s(y) = \sum_{i \le k} \frac{(u_i^\top (y - \mu))^2}{\lambda_i}
         + \frac{\lVert (I - U U^\top)(y - \mu) \rVert^2}{\bar\lambda_r},

a Mahalanobis distance that is about :math:`\chi^2` with about D degrees of freedom for a
Gaussian-like population. In high dimension typical measurements lie on a shell: a
measurement far outside it (other units, 10x the noise, another kind of specimen) scores far
too high, and one far inside it (a measurement scaled towards the mean, such as a field in mm
read as m) far too low. So the test is two-sided (Nalisnick et al. 2019, "Detecting
out-of-distribution inputs to deep generative models using typicality"): the thresholds are
the ``alpha/2`` and ``1 - alpha/2`` quantiles of the scores of held-out measurements the fit
did not see (:meth:`Typicality.calibrate`), so about a fraction ``alpha`` of measurements from
the training distribution is flagged (the false-alarm rate; ``alpha = 0.01`` by default).

Measurements with gaps (NaN = not measured): the score is the same distance under the fitted
covariance :math:`\Sigma = \bar\lambda_r I + U\,\mathrm{diag}(\lambda - \bar\lambda_r)\,U^\top`
restricted to the measured entries O, :math:`c_O^\top \Sigma_{OO}^{-1} c_O` (Woodbury, k x k),
and its thresholds and percentile come from the held-out measurements scored on the same
entries (:meth:`Typicality.assess`), so a gap changes neither the false-alarm rate nor the
meaning of the percentile.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from invdiff.errors import DataError

__all__ = ["Typicality"]


@dataclass
class Typicality:
    """A fitted typicality test (module docstring). Tensors are float64 on the CPU."""

    mean: torch.Tensor  # (D,)
    components: torch.Tensor  # (k, D), orthonormal rows
    variances: torch.Tensor  # (k,)
    residual_variance: float
    lower: float = float("-inf")
    upper: float = float("inf")
    held_out: torch.Tensor | None = None  # calibration scores, sorted
    alpha: float = 0.01
    held_out_y: torch.Tensor | None = None  # calibration measurements (N, D), for gaps

    @classmethod
    def fit(cls, y: torch.Tensor, max_components: int = 64) -> Typicality:
        """Fit on measurements ``y (N, *y_shape)`` (normalised as the net sees them)."""
        z = _flat(y)
        n, d = z.shape
        if n < 8:
            raise DataError(f"the typicality test needs at least 8 training measurements, "
                            f"got {n}")
        mean = z.mean(0)
        k = max(1, min(d, n // 4, max_components))
        _, s, vh = torch.linalg.svd(z - mean, full_matrices=False)
        var = s.square() / (n - 1)
        floor = float(var.max()) * 1e-10 + 1e-30  # directions with no spread stay finite
        comps, lam = vh[:k], var[:k].clamp_min(floor)
        rest = var[k:]
        resid = float(rest.sum() / max(d - k, 1)) if d > k else floor
        return cls(mean, comps, lam, max(resid, floor))

    def score(self, y: torch.Tensor) -> torch.Tensor:
        """``s(y)`` of measurements ``y (M, *y_shape)``: ``(M,)`` (NaN entries: the distance
        over the measured ones, module docstring)."""
        z = _flat(y)
        measured = ~torch.isnan(z)
        if not bool(measured.all()):
            out = torch.empty(len(z), dtype=torch.float64)
            for pattern, idx in _patterns(measured):
                out[idx] = self._score_on(z[idx][:, pattern], pattern)
            return out
        c = z - self.mean
        proj = c @ self.components.T
        inside = (proj.square() / self.variances).sum(1)
        rest = (c.square().sum(1) - proj.square().sum(1)).clamp_min(0)
        return inside + rest / self.residual_variance

    def _score_on(self, z: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
        """``c_O^T Sigma_OO^-1 c_O`` of measurements ``z (m, |O|)`` on the entries ``pattern``."""
        c = z - self.mean[pattern]
        d = self.variances - self.residual_variance
        keep = d > 0  # components below the residual level add nothing to Sigma
        u = self.components[keep][:, pattern].T  # (|O|, k')
        inner = torch.diag(self.residual_variance / d[keep]) + u.T @ u
        proj = c @ u
        corr = (proj * torch.linalg.solve(inner, proj.T).T).sum(1)
        return (c.square().sum(1) - corr).clamp_min(0) / self.residual_variance

    def assess(self, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Score, percentile (0-100) among the held-out scores, flag and thresholds of each
        measurement in ``y (M, *y_shape)``, each ``(M,)``; a measurement with gaps is compared
        with the held-out measurements scored on its measured entries."""
        if self.held_out is None:
            raise DataError("calibrate the typicality test on held-out measurements first")
        scores = self.score(y)
        z = _flat(y)
        measured = ~torch.isnan(z)
        lower = torch.full((len(z),), self.lower, dtype=torch.float64)
        upper = torch.full((len(z),), self.upper, dtype=torch.float64)
        pct = self.percentile(scores)
        for pattern, idx in _patterns(measured):
            if bool(pattern.all()) or self.held_out_y is None:
                continue
            held = self._score_on(self.held_out_y[:, pattern], pattern).sort().values
            q = torch.tensor([self.alpha / 2, 1 - self.alpha / 2], dtype=held.dtype)
            lower[idx], upper[idx] = (v.item() for v in torch.quantile(held, q))
            below = torch.searchsorted(held, scores[idx], right=True)
            pct[idx] = 100.0 * below.double() / len(held)
        return {"score": scores, "percentile": pct, "flag": (scores < lower) | (scores > upper),
                "lower": lower, "upper": upper}

    def calibrate(self, y: torch.Tensor, alpha: float = 0.01) -> Typicality:
        """Set the thresholds at the ``alpha/2`` and ``1 - alpha/2`` quantiles of the scores of
        held-out measurements ``y (M, *y_shape)`` (not those of :meth:`fit`)."""
        if not 0 < alpha < 1:
            raise DataError(f"alpha must lie in (0, 1), got {alpha}")
        s = self.score(y).sort().values
        if len(s) < 2:
            raise DataError("the typicality test needs at least 2 held-out measurements")
        q = torch.tensor([alpha / 2, 1 - alpha / 2], dtype=s.dtype)
        lo, hi = torch.quantile(s, q).tolist()
        self.lower, self.upper, self.held_out, self.alpha = lo, hi, s, alpha
        self.held_out_y = _flat(y)
        return self

    def percentile(self, scores: torch.Tensor) -> torch.Tensor:
        """The percentile (0-100) of each score among the held-out scores."""
        if self.held_out is None:
            raise DataError("calibrate the typicality test on held-out measurements first")
        below = torch.searchsorted(self.held_out, scores.double(), right=True)
        return 100.0 * below.double() / len(self.held_out)

    def flags(self, scores: torch.Tensor) -> torch.Tensor:
        """True where a score lies outside the held-out thresholds."""
        return (scores < self.lower) | (scores > self.upper)


def _flat(y: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(y).detach().to("cpu", torch.float64).flatten(1)


def _patterns(measured: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(pattern (D,) bool, rows with it)`` for each pattern of measured entries."""
    patterns, which = torch.unique(measured, dim=0, return_inverse=True)
    return [(p, (which == k).nonzero()[:, 0]) for k, p in enumerate(patterns)]
