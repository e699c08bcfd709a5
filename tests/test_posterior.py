"""The shared sampling loop (run over every registered ladder sampler) and sample_posterior."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import invdiff
from invdiff.data import Normalization
from invdiff.errors import ConfigError, DataError, SamplingError, UnknownComponentError
from invdiff.reference.diagnostics import (
    IsotropicScore,
    gaussian_accuracy,
    reference_case,
)
from invdiff.reference.exact import LinearGaussianPosterior
from invdiff.sampling.posterior import Posterior, quantile, sample_posterior
from invdiff.sampling.sigmas import geometric
from invdiff.training.model import ScoreModel

# Adding a ladder sampler means adding one line here: every generic check runs over the list.
SAMPLERS = {
    "annealed-langevin": dict(steps_per_level=2),
    "predictor-corrector": dict(corrector_steps=1),
    # ODE samplers run their own schedule; 4 geometric levels between the ladder's ends
    "heun": dict(steps=4, rho=None),
    "dpm-2m": dict(steps=4),
}
NFE = {  # independent count of score calls per chain for L levels, final denoising on
    "annealed-langevin": lambda L: 2 * L + 1,
    "predictor-corrector": lambda L: 2 * L,
    # own schedule (L is ignored): shifted start + 3 steps + final step
    "heun": lambda L: 1 + 3 * 2 + 1,
    "dpm-2m": lambda L: 1 + 3 + 1,
}
#: where a NaN score at sigma < 1.5 stops a sampler on the ladder (4, 2, 1, 0.5); the ladder
#: samplers and dpm-2m first evaluate sigma = 1 at level 3, Heun in the corrector of level 2
NAN_AT = {"heun": r"noise level 2 of 4 \(index 1, sigma = 2\), step 2 of that level "
                  r"\(Heun corrector\)"}


@pytest.fixture(scope="module")
def small():
    """A 4x4 reference problem, two measurements and its exact score."""
    prob, y = reference_case(n=4, mask_fraction=1.0)
    return prob, y, prob.posterior.score_fn()


def make(name: str, **params):
    return invdiff.create("sampler", name, **{"progress": False, **SAMPLERS[name], **params})


def run(sampler, score, y, n=5, seed=0, sigmas=None):
    sigmas = geometric(5.0, 0.05, 6) if sigmas is None else sigmas
    return sampler.sample(score, y, sigmas, n, generator=torch.Generator().manual_seed(seed))


class CountingScore:
    """Wraps a score; records the batch size of every call."""

    def __init__(self, score):
        self.score, self.batches = score, []
        self.x_shape, self.y_shape = score.x_shape, score.y_shape

    def __call__(self, x, y, sigma):
        self.batches.append(x.shape[0])
        assert sigma.shape == (x.shape[0],) and y.shape[0] == x.shape[0]
        return self.score(x, y, sigma)


# -- the loop ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SAMPLERS)
def test_seeded_and_independent_of_chunk_size(name, small):
    prob, y, score = small
    counting = CountingScore(score)
    full = run(make(name), score, y)
    chunked = run(make(name, chunk_size=3), counting, y)
    # noise is drawn for all chains at once, so chunking changes only how the score is batched
    torch.testing.assert_close(chunked.samples, full.samples, rtol=1e-5, atol=1e-6)
    assert max(counting.batches) == 3 and sum(counting.batches) == 10 * full.nfe
    assert full.nfe == NFE[name](6) == chunked.nfe
    assert not torch.equal(run(make(name), score, y, seed=1).samples, full.samples)
    assert full.samples.shape == (2, 5, 1, 4, 4) and full.seconds >= 0
    assert full.info["sampler"] == name


@pytest.mark.parametrize("name", SAMPLERS)
def test_measurement_major_chain_order(name, small):
    """Sample j of measurement m must come from y[m]: swap the measurements, get the swap."""
    prob, y, score = small
    a = run(make(name), score, y, n=200).samples.mean(1)
    b = run(make(name), score, y.flip(0), n=200).samples.mean(1)
    m = prob.posterior.mean(y)
    err = lambda s, ref: float((s - ref).abs().max())
    assert err(a, m) < 0.5 and err(b, m.flip(0)) < 0.5 and err(b, m) > 1.0


@pytest.mark.parametrize("name", SAMPLERS)
def test_dtype_follows_y_and_module_mode_restored(name, small):
    prob, y, score = small

    class Net(torch.nn.Module):
        x_shape, y_shape = score.x_shape, score.y_shape

        def forward(self, x, y, sigma):
            assert not self.training, "sampling must run the network in eval mode"
            return score(x, y, sigma)

    net = Net().train()
    res = run(make(name), net, y.double())
    assert res.samples.dtype == torch.float64 and net.training


@pytest.mark.parametrize("name", SAMPLERS)
def test_x_shape_from_parameter_or_clear_error(name, small):
    prob, y, score = small
    bare = lambda x, y, sigma: score(x, y, sigma)  # no x_shape attribute
    with pytest.raises(ConfigError, match="x_shape"):
        run(make(name), bare, y)
    res = run(make(name, x_shape=(1, 4, 4)), bare, y)
    torch.testing.assert_close(res.samples, run(make(name), score, y).samples)
    with pytest.raises(ConfigError, match="differs"):
        run(make(name, x_shape=(1, 2, 8)), score, y)


@pytest.mark.parametrize("name", SAMPLERS)
@pytest.mark.parametrize(
    ("sigmas", "match"),
    [
        (torch.tensor([0.1, 1.0, 2.0]), "decreasing"),
        (torch.tensor([[1.0, 0.1]]), "1-D"),
        (torch.tensor([1.0, -0.1]), "positive"),
        (torch.tensor([1.0, float("nan")]), "finite"),
    ],
)
def test_bad_sigmas(name, sigmas, match, small):
    prob, y, score = small
    with pytest.raises(ConfigError, match=match):
        run(make(name), score, y, sigmas=sigmas)


@pytest.mark.parametrize("name", SAMPLERS)
def test_bad_y_and_n(name, small):
    prob, y, score = small
    with pytest.raises(DataError, match=r"y has shape \(2, 1, 3, 4\)"):
        run(make(name), score, y[..., :3, :])
    bad = y.clone()
    bad[1, 0, 2, 2] = float("inf")
    with pytest.raises(DataError, match="infinite"):
        run(make(name), score, bad)
    bad[1, 0, 2, 2] = float("nan")  # a gap: only for scores that take them (masking)
    with pytest.raises(DataError, match="training.masking"):
        run(make(name), CountingScore(score), bad)  # (no masking attribute: complete y)
    with pytest.raises(ConfigError, match="n_samples"):
        run(make(name), score, y, n=0)
    # a single y (without batch dimension) is one measurement
    assert run(make(name), score, y[0]).samples.shape == (1, 5, 1, 4, 4)


@pytest.mark.parametrize("name", SAMPLERS)
def test_nan_score_names_level_sigma_and_step(name, small):
    prob, y, score = small
    sigmas = torch.tensor([4.0, 2.0, 1.0, 0.5])

    def nan_below_one(x, y_, sigma):
        out = score(x, y_, sigma)
        return out * float("nan") if float(sigma[0]) < 1.5 else out

    nan_below_one.x_shape = score.x_shape
    where = NAN_AT.get(name, r"noise level 3 of 4 \(index 2, sigma = 1\), step 1")
    with pytest.raises(SamplingError, match=where):
        run(make(name), nan_below_one, y, sigmas=sigmas)


@pytest.mark.parametrize("name", SAMPLERS)
def test_uniform_init(name):
    """With a zero score and a tiny step the chains stay where they started: U(-1, 1)."""
    zero = lambda x, y, sigma: torch.zeros_like(x)
    # (the ODE samplers' shifted start x + D(x) would double x under a zero score)
    extra = {"shift_start": False} if hasattr(make(name), "shift_start") else {}
    s = make(name, init="uniform", x_shape=(1, 8, 8), final_denoise=False, **extra)
    if name == "annealed-langevin":
        s.eps = 1e-12
    sigmas = torch.tensor([1e-6, 1e-7]) if name == "predictor-corrector" else None
    res = run(s, zero, torch.zeros(1, 1), n=50, sigmas=sigmas)
    x = res.samples
    assert float(x.abs().max()) <= 1.0 + 1e-4 and float(x.std()) == pytest.approx(
        1 / np.sqrt(3), rel=0.05)


def test_bad_sampler_parameters_and_unknown_name():
    with pytest.raises(ConfigError, match="snr"):
        invdiff.create("sampler", "predictor-corrector", snr=-1.0)
    with pytest.raises(ConfigError, match="unknown parameter"):
        invdiff.create("sampler", "annealed-langevin", step_size=0.1)
    with pytest.raises(UnknownComponentError, match="annealed-langevin"):
        invdiff.create("sampler", "ddim")


def test_progress_bar_can_be_silenced(small, capsys):
    prob, y, score = small
    run(make("predictor-corrector", progress=True), score, y)
    assert "predictor-corrector" in capsys.readouterr().err
    run(make("predictor-corrector"), score, y)
    assert capsys.readouterr().err == ""


# -- sample_posterior --------------------------------------------------------------------------
class ExactNet(torch.nn.Module):
    """A 'network' that is the exact score of a linear-Gaussian posterior (no parameters)."""

    def __init__(self, posterior: LinearGaussianPosterior) -> None:
        super().__init__()
        self.posterior = posterior
        self.x_shape, self.y_shape = posterior.x_shape, posterior.y_shape

    def forward(self, x, y, sigma):
        return self.posterior.noised_score(x, y, sigma)


def test_sample_posterior_denormalises_to_the_physical_posterior():
    """Physical problem: prior N(b, a^2 C), y = A x + e (A row-normalised, so A b1 = b1).
    In normalised units x_n = (x - b)/a, y_n = (y - b)/c it is prior N(0, C), operator
    (a/c) A, noise s/c: a model trained there must give, after denormalisation, the physical
    posterior that make_problem computes directly (a separate construction)."""
    a, b, c = 3.0, 5.0, 2.0
    prob, y = reference_case(n=6, mask_fraction=1.0, mean=b, variance=a**2)
    phys = prob.posterior
    op = prob.forward_model.matrix()
    cov_n = prob.prior.covariance_matrix() / a**2
    post_n = LinearGaussianPosterior(torch.zeros(36, dtype=torch.float64), cov_n, (a / c) * op,
                                     prob.noise_model.std / c, phys.x_shape, phys.y_shape)
    norm = Normalization(torch.tensor([b]), torch.tensor([a]), torch.tensor([b]),
                         torch.tensor([c]))
    model = ScoreModel(ExactNet(post_n), norm, geometric(10.0, 0.01, 200))
    # predictor only, run down to sigma = 0: it targets the posterior itself, N(m, S)
    post = sample_posterior(model, y, "predictor-corrector", n=1000, progress=False,
                            corrector_steps=0, final_denoise=False,
                            generator=torch.Generator().manual_seed(0))
    assert post.samples.shape == (2, 1000, 1, 6, 6) and post.nfe == 200
    acc = gaussian_accuracy(post.samples, phys.mean(y), phys.cov)
    # MC: mean error ~ 1/sqrt(1000) = 0.03 posterior stds; std ratio per pixel ~ 1/sqrt(4000)
    # = 1.6%, max over 36 pixels ~ 4%; the predictor's bias is ~ +1.5% at L = 200
    assert acc.mean_error <= 0.1, acc.mean_error
    assert acc.max_std_error <= 0.07, acc.std_ratio
    torch.testing.assert_close(post.mean, post.samples.mean(1))
    torch.testing.assert_close(post.std, post.samples.std(1))


def test_sample_posterior_inputs(small, tmp_path):
    prob, y, score = small
    with pytest.raises(ConfigError, match="sigmas"):
        sample_posterior(score, y, n=3, progress=False)
    with pytest.raises(UnknownComponentError, match="predictor-corrector"):
        sample_posterior(score, y, "no-such-sampler", sigmas=geometric(5.0, 0.05, 4))
    sampler = make("annealed-langevin")
    with pytest.raises(ConfigError, match="sampler name"):
        sample_posterior(score, y, sampler, sigmas=geometric(5.0, 0.05, 4), snr=0.2)
    post = sample_posterior(score, y, sampler, n=41, sigmas=geometric(5.0, 0.05, 4),
                            generator=torch.Generator().manual_seed(0))
    assert post.quantiles.shape == (5, 2, 1, 4, 4) and post.quantile_levels[2] == 0.5
    torch.testing.assert_close(post.quantiles[2], post.samples.median(1).values)
    path = post.save(tmp_path / "post.npz")
    back = Posterior.load(path)
    assert torch.equal(back.samples, post.samples) and back.nfe == post.nfe == 9
    assert back.info["sampler"] == "annealed-langevin" and len(back.info["sigmas"]) == 4


def test_quantile_and_credible_interval_match_numpy():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(3, 101, 2, 5, generator=g, dtype=torch.float64)
    q = (0.0, 0.05, 0.37, 0.5, 1.0)
    want = np.quantile(s.numpy(), q, axis=1)
    np.testing.assert_allclose(quantile(s, q).numpy(), want, rtol=0, atol=1e-12)
    post = Posterior.from_samples(s)
    lo, hi = post.credible_interval(0.9)
    np.testing.assert_allclose(lo.numpy(), np.quantile(s.numpy(), 0.05, axis=1), atol=1e-12)
    np.testing.assert_allclose(hi.numpy(), np.quantile(s.numpy(), 0.95, axis=1), atol=1e-12)
    # standard normal draws: ~90% of them inside the 90% interval of the others
    inside = ((s >= lo[:, None]) & (s <= hi[:, None])).double().mean()
    assert 0.85 < float(inside) < 0.95
    with pytest.raises(ConfigError, match="credible level"):
        post.credible_interval(1.5)


def test_isotropic_score_matches_closed_form():
    """The test helper itself: d/dx log N(x; 0, (v + sigma^2) I) = -x / (v + sigma^2)."""
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    sigma = torch.tensor([0.1, 1.0, 3.0], dtype=torch.float64)
    var = 0.7 + sigma.reshape(-1, 1, 1, 1) ** 2
    logp = (-0.5 * x.square() / var).sum()
    (grad,) = torch.autograd.grad(logp, x)
    torch.testing.assert_close(IsotropicScore(0.7)(x, None, sigma), grad)
