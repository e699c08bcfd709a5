"""Flow matching: the contract, the algebra that makes it a score model, and every sampler on
the exact Gaussian velocity field of the reference problem."""

from __future__ import annotations

import pytest
import torch

import invdiff
from invdiff.reference import make_problem
from invdiff.testing import check_objective


@pytest.mark.parametrize("time_sampling", ["uniform", "logit-normal"])
def test_contract(time_sampling):
    check_objective(invdiff.create("objective", "flow-matching", time_sampling=time_sampling))


def test_the_loss_is_the_velocity_regression_and_a_weighted_dsm():
    """||v_theta - (z - x)||^2 with v_theta = -(sigma + sigma^2) s - x~, which equals
    (1 + sigma)^2 ||sigma s + z||^2."""
    fm = invdiff.create("objective", "flow-matching")
    g = torch.Generator().manual_seed(0)
    x, z = torch.randn(6, 1, 4, 4, generator=g), torch.randn(6, 1, 4, 4, generator=g)
    sigma = torch.tensor([0.01, 0.1, 0.5, 1.0, 7.0, 60.0])
    s = torch.randn(6, 1, 4, 4, generator=g)
    net = lambda x_ve, y, sig: s  # noqa: E731 - any score
    t = (sigma / (1 + sigma)).reshape(-1, 1, 1, 1)
    x_t = (1 - t) * x + t * z
    x_ve = x_t / (1 - t)
    sv = sigma.reshape(-1, 1, 1, 1)
    v_pred = -(sv + sv**2) * s - x_ve
    want = (v_pred - (z - x)).flatten(1).square().sum(1)
    dsm = ((1 + sv) ** 2 * (sv * s + z) ** 2).flatten(1).sum(1)
    got = fm.terms(net, x, torch.zeros(6, 1, 4, 4), sigma, z)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got, dsm, rtol=1e-4, atol=1e-4)


def test_levels_cover_the_ladder_range_as_uniform_t():
    fm = invdiff.create("objective", "flow-matching")
    sigmas = torch.logspace(1, -2, 20)
    sigma, _ = fm.draw(torch.zeros(20000, 1, 2, 2), sigmas, torch.Generator().manual_seed(1))
    t = sigma.double() / (1 + sigma.double())
    lo, hi = 0.01 / 1.01, 10 / 11
    assert float(t.min()) >= lo - 1e-6 and float(t.max()) <= hi + 1e-6
    # uniform on [lo, hi]: its mean and quartiles (independent of the implementation)
    assert abs(float(t.mean()) - (lo + hi) / 2) < 0.01
    q = torch.quantile(t, torch.tensor([0.25, 0.75], dtype=t.dtype))
    assert torch.allclose(q, torch.tensor([lo + (hi - lo) / 4, lo + 3 * (hi - lo) / 4],
                                          dtype=t.dtype), atol=0.01)


class ExactVelocityScore:
    """The score a perfectly trained flow-matching net stands for on a linear-Gaussian
    posterior N(m, S): the exact velocity E[z - x | x_t] on the linear path, computed by
    Gaussian conditioning in t, turned into a score with s = -(v + x~) / (sigma + sigma^2)."""

    def __init__(self, posterior, y: torch.Tensor) -> None:
        self.m = posterior.mean(y.double()).flatten(1)  # (M, D)
        self.S = posterior.cov.double()
        self.x_shape = posterior.x_shape

    def __call__(self, x: torch.Tensor, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        n_per = x.shape[0] // self.m.shape[0]
        m = self.m.repeat_interleave(n_per, 0)
        x_ve = x.flatten(1).double()
        sig = sigma.double().reshape(-1, 1)
        t = sig / (1 + sig)
        x_t = x_ve * (1 - t)
        eye = torch.eye(self.S.shape[0], dtype=torch.float64)
        tt = t.reshape(-1, 1, 1)
        c = (1 - tt) ** 2 * self.S + tt**2 * eye  # C_t = (1-t)^2 S + t^2 I, per chain
        r = torch.linalg.solve(c, (x_t - (1 - t) * m).unsqueeze(-1)).squeeze(-1)
        e_x = m + (1 - t) * r @ self.S.T
        v = t * r - e_x  # E[z | x_t] - E[x | x_t]
        out = -(v + x_ve) / (sig + sig**2)
        return out.reshape(x.shape).to(x.dtype)


def test_the_exact_velocity_is_the_exact_noised_score():
    prob = make_problem(n=4, noise_level=0.2)
    g = torch.Generator().manual_seed(2)
    y = prob.noise_model(prob.forward_model(prob.prior.sample(1, generator=g)), generator=g)
    fm_score = ExactVelocityScore(prob.posterior, y)
    x = torch.randn(3, *prob.posterior.x_shape, generator=g, dtype=torch.float64)
    sigma = torch.tensor([0.05, 1.0, 20.0], dtype=torch.float64)
    want = prob.posterior.noised_score(x, y.double().expand(3, *y.shape[1:]), sigma)
    torch.testing.assert_close(fm_score(x, y.expand(3, *y.shape[1:]), sigma), want,
                               rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("sampler, params", [
    ("annealed-langevin", {"steps_per_level": 5}),
    ("predictor-corrector", {}),
    ("heun", {"steps": 25}),
    ("dpm-2m", {"steps": 24}),
])
def test_every_sampler_samples_the_flow_matching_model(sampler, params):
    """The exact flow-matching model of the reference problem, sampled by each shipped
    sampler: the posterior mean within 0.25 exact std and the std within 15% (the samplers'
    own accuracy on the exact score is in docs/samplers.md)."""
    from invdiff.sampling.sigmas import geometric

    prob = make_problem(n=4, noise_level=0.2)
    g = torch.Generator().manual_seed(4)
    y = prob.noise_model(prob.forward_model(prob.prior.sample(1, generator=g)), generator=g)
    score = ExactVelocityScore(prob.posterior, y)
    post = invdiff.sample_posterior(score, y, sampler=sampler, n=400,
                                    sigmas=geometric(20.0, 0.01, 60),
                                    x_shape=prob.posterior.x_shape, progress=False,
                                    generator=torch.Generator().manual_seed(5), **params)
    exact_mean = prob.posterior.mean(y.double()).float()
    exact_std = prob.posterior.std.float()
    err = ((post.mean - exact_mean) / exact_std).abs().max()
    ratio = float(post.std.mean() / exact_std.mean())
    assert float(err) < 0.25 and abs(ratio - 1) < 0.15, (float(err), ratio)
