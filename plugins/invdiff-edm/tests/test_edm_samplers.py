"""ODE samplers (heun, dpm-2m) against exact Gaussian posteriors and closed-form recursions."""

from __future__ import annotations

import math

import pytest
import torch

import invdiff
from invdiff.data import Normalization
from invdiff.errors import ConfigError
from invdiff.reference.diagnostics import (
    REFERENCE_PROBLEMS,
    IsotropicScore,
    gaussian_accuracy,
    reference_case,
)
from invdiff.sampling.sigmas import geometric
from invdiff.testing import check_sampler
from invdiff.training.model import ScoreModel

N_SAMPLES = 1000  # per measurement; M = 2 measurements -> 2000 chains
LADDER = geometric(10.0, 0.01, 10)  # supplies only the schedule's ends (10 and 0.01)


def make(name: str, **params):
    return invdiff.create("sampler", name, progress=False, **params)


# The 16 x 16 blur + mask problem (the default reference problem; half its posterior
# eigenvalues are ~1e-4, i.e. std 0.01 = sigma_min, which is what makes the last step matter)
# and the 10 x 10 subsampled one.
PROBLEMS = {"blur-mask-16": dict(n=16, mask_fraction=0.5), **REFERENCE_PROBLEMS}


@pytest.mark.parametrize(
    ("problem", "name", "params", "nfe", "std_tol"),
    [
        # Heun at 50 evaluations: measured +1.5 to +2.0% (its discretisation error)
        ("blur-mask-16", "heun", {}, 50, 0.03),
        ("subsample-10", "heun", {"rho": None}, 50, 0.03),
        # DPM-Solver++(2M): measured +0.8% at 25 evaluations, +1.4% at 13
        ("blur-mask-16", "dpm-2m", {}, 25, 0.02),
        ("blur-mask-16", "dpm-2m", {"steps": 12}, 13, 0.03),
        ("subsample-10", "dpm-2m", {}, 25, 0.02),
    ],
)
def test_matches_exact_posterior_at_fixed_nfe(problem, name, params, nfe, std_tol, torch_device):
    prob, y = reference_case(**PROBLEMS[problem])
    y = y.to(torch_device)
    post = prob.posterior
    res = make(name, **params).sample(post.score_fn(), y, LADDER, N_SAMPLES,
                                      generator=torch.Generator(torch_device).manual_seed(1))
    assert res.samples.device.type == torch_device.type
    assert res.nfe == nfe
    # Compared with the posterior N(m, S) itself: the ODE runs to sigma = 0.
    acc = gaussian_accuracy(res.samples, post.mean(y), post.cov)
    # Monte Carlo error: mean error ~ 1/sqrt(1000) = 0.032 posterior stds (RMS); per-pixel std
    # ratio ~ 1/sqrt(2 * 2000) = 1.6%, so the max over <= 256 pixels carries ~ 5% of noise; the
    # pixel mean of the ratio much less (~0.3%), so std_tol tests the solver's own bias.
    assert acc.mean_error <= 0.1, acc.mean_error
    assert abs(acc.mean_std_ratio - 1) <= std_tol, acc.mean_std_ratio
    assert acc.max_std_error <= 0.09, acc.std_ratio


def test_shifted_start_removes_the_mean_bias():
    """Started from N(0, sigma_max^2 I) the ODE keeps about |m| / sigma_max of its offset (0.17
    posterior stds here); the shifted start x + D(x, sigma_max) removes it."""
    prob, y = reference_case(**PROBLEMS["blur-mask-16"])
    post = prob.posterior
    errs = {}
    for shift in (False, True):
        res = make("dpm-2m", shift_start=shift).sample(
            post.score_fn(), y, LADDER, 500, generator=torch.Generator().manual_seed(0))
        errs[shift] = gaussian_accuracy(res.samples, post.mean(y), post.cov).mean_error
    assert errs[False] > 0.12 and errs[True] < 0.06, errs


# -- closed-form recursions on N(0, v I) --------------------------------------------------------
def _expected_var(name: str, v: float, sigmas: list[float], shift: bool, final: str | None):
    """Output variance of a deterministic ODE sampler on N(0, v) (each direction 1-D, score
    -x / (v + sigma^2), denoiser D = v x / (v + sigma^2)) from x ~ N(0, sigma_max^2)."""
    den = lambda g, s: g * v / (v + s * s)
    g = 1.0 + (v / (v + sigmas[0] ** 2) if shift else 0.0)  # x + D(x)
    prev = None
    for a, b in zip(sigmas, sigmas[1:], strict=False):
        if name == "heun":
            d1 = (g - den(g, a)) / a
            ge = g + (b - a) * d1
            d2 = (ge - den(ge, b)) / b
            g = g + 0.5 * (b - a) * (d1 + d2)
        else:
            h, dn = math.log(a / b), den(g, a)
            dh = dn if prev is None else dn + h / (2 * prev[1]) * (dn - prev[0])
            prev = (dn, h)
            g = (b / a) * g + (1 - b / a) * dh
    s = sigmas[-1]
    if final is not None:
        g *= 1 - (0.5 if final == "ode" else 1.0) * s * s / (v + s * s)
    return g * g * sigmas[0] ** 2


@pytest.mark.parametrize("name", ["heun", "dpm-2m"])
@pytest.mark.parametrize(("shift", "final"), [(True, "ode"), (False, "tweedie"), (True, None)])
def test_variance_follows_the_solver_recursion(name, shift, final):
    v = 0.3
    params = dict(steps=5, rho=3.0, shift_start=shift, final_denoise=final is not None)
    if final is not None:
        params["final_step"] = final
    res = make(name, **params).sample(IsotropicScore(v), torch.zeros(1, 1, dtype=torch.float64),
                                      torch.tensor([4.0, 0.2], dtype=torch.float64), 20000,
                                      generator=torch.Generator().manual_seed(0))
    sig = res.info["sigmas"].tolist()
    # 320000 draws (16 independent directions): relative MC error of the variance ~ 0.25%
    assert float(res.samples.var()) == pytest.approx(_expected_var(name, v, sig, shift, final),
                                                     rel=0.015)


def test_many_steps_converge_to_the_exact_flow():
    """With fine steps both solvers reach the exact flow: on N(0, v) it scales x by
    sqrt((v + sigma^2) / (v + sigma_max^2)), so from the shifted start (1 + v / (v +
    sigma_max^2)) sigma_max z the variance at 0 is that squared times sigma_max^2 v / (v +
    sigma_max^2), up to the last step's O(a^2) error, a = sigma_min^2 / (v + sigma_min^2)."""
    v, smax, smin = 0.5, 5.0, 1e-3
    g0 = 1 + v / (v + smax**2)
    exact = g0**2 * smax**2 * v / (v + smax**2)
    for name in ("heun", "dpm-2m"):
        res = make(name, steps=100, rho=None, sigma_max=smax, sigma_min=smin).sample(
            IsotropicScore(v), torch.zeros(1, 1, dtype=torch.float64), None, 5000,
            generator=torch.Generator().manual_seed(0))
        # 80000 draws: relative MC error of the variance ~ 0.5%
        assert float(res.samples.var()) == pytest.approx(exact, rel=0.02), name


# -- cost, schedule, contract -------------------------------------------------------------------
class CountingScore:
    """Wraps a score; counts calls and records the largest sigma asked for."""

    def __init__(self, score):
        self.score, self.calls, self.sigma_max = score, 0, 0.0
        self.x_shape, self.y_shape = score.x_shape, score.y_shape

    def __call__(self, x, y, sigma):
        self.calls += 1
        self.sigma_max = max(self.sigma_max, float(sigma.max()))
        return self.score(x, y, sigma)


@pytest.mark.parametrize(
    ("name", "params", "nfe"),
    [
        ("heun", dict(steps=7), 1 + 6 * 2 + 1),
        ("heun", dict(steps=7, shift_start=False, final_denoise=False), 6 * 2),
        ("heun", dict(steps=7, s_churn=5.0), 1 + 6 * 2 + 1),
        ("dpm-2m", dict(steps=7), 1 + 6 + 1),
        ("dpm-2m", dict(steps=7, shift_start=False), 6 + 1),
    ],
)
def test_nfe_is_counted_exactly(name, params, nfe):
    prob, y = reference_case(n=4, mask_fraction=1.0)
    score = CountingScore(prob.posterior.score_fn())
    res = make(name, **params).sample(score, y, geometric(5.0, 0.05, 3), 3,
                                      generator=torch.Generator().manual_seed(0))
    assert res.nfe == score.calls == nfe
    # churn raises the level, but never above the schedule's top
    assert score.sigma_max == pytest.approx(5.0)


def test_churn_is_stochastic_and_seeded():
    prob, y = reference_case(n=4, mask_fraction=1.0)
    score = prob.posterior.score_fn()

    def run(seed, **p):
        return make("heun", steps=6, **p).sample(
            score, y, geometric(5.0, 0.05, 3), 4, generator=torch.Generator().manual_seed(seed))

    churned = run(0, s_churn=10.0).samples
    assert torch.equal(churned, run(0, s_churn=10.0).samples)
    assert not torch.allclose(churned, run(0).samples)  # same start, the churn noise differs
    # no churn where s_tmin excludes every level: the ODE itself
    torch.testing.assert_close(run(0, s_churn=10.0, s_tmin=100.0).samples, run(0).samples)


def test_karras_schedule():
    from invdiff_edm import karras_sigmas

    s = karras_sigmas(80.0, 0.002, 18, rho=7.0)
    i = torch.arange(18, dtype=torch.float64)
    ref = (80 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7  # Karras Eq. 5
    torch.testing.assert_close(s, ref, rtol=1e-12, atol=0)
    assert float(s[0]) == 80.0 and float(s[-1]) == 0.002
    g = karras_sigmas(10.0, 0.01, 4, rho=None)
    torch.testing.assert_close(g, torch.tensor([10.0, 1.0, 0.1, 0.01], dtype=torch.float64))
    # inf (what a TOML config can write for None) is the same geometric schedule
    torch.testing.assert_close(karras_sigmas(10.0, 0.01, 4, rho=math.inf), g)
    with pytest.raises(ConfigError, match="sigma_max > sigma_min"):
        karras_sigmas(0.1, 1.0, 5)


def test_schedule_ends_default_to_the_ladder_and_can_be_set():
    prob, y = reference_case(n=4, mask_fraction=1.0)
    score = prob.posterior.score_fn()
    res = make("dpm-2m", steps=5).sample(score, y, geometric(5.0, 0.05, 30), 2)
    assert res.info["sigmas"][0] == pytest.approx(5.0) and res.info["sigmas"][-1] == pytest.approx(
        0.05) and len(res.info["sigmas"]) == 5
    res = make("heun", steps=5, sigma_max=3.0).sample(score, y, geometric(5.0, 0.05, 30), 2)
    assert res.info["sigma_max"] == 3.0 and res.info["sigma_min"] == pytest.approx(0.05)
    # no ladder given: EDM's range for a plain callable
    res = make("heun", steps=5).sample(score, y, None, 2)
    assert (res.info["sigma_max"], res.info["sigma_min"]) == (80.0, 0.002)
    with pytest.raises(ConfigError, match="must exceed"):
        make("heun", sigma_min=6.0).sample(score, y, geometric(5.0, 0.05, 30), 2)


class ExactNet(torch.nn.Module):
    """The exact score as a parameter-free module (stands in for a trained net)."""

    def __init__(self, posterior) -> None:
        super().__init__()
        self.posterior = posterior
        self.x_shape, self.y_shape = posterior.x_shape, posterior.y_shape

    def forward(self, x, y, sigma):
        return self.posterior.noised_score(x, y, sigma)


def test_refuses_sigma_outside_the_trained_ladder():
    prob, y = reference_case(n=4, mask_fraction=1.0)
    post = prob.posterior
    one = torch.ones(1)
    model = ScoreModel(ExactNet(post), Normalization(0 * one, one, 0 * one, one),
                       geometric(5.0, 0.05, 20))
    # defaults from the model's own ladder are fine (float32 round-off included)
    res = invdiff.sample_posterior(model, y, "heun", n=4, progress=False, steps=4,
                                   on_ladder=False)
    assert res.nfe == 8
    # called directly without a ladder, the model's own ladder gives the ends
    res = make("dpm-2m", steps=4).sample(model, y, None, 2)
    assert res.info["sigma_max"] == pytest.approx(5.0) and res.info["sigma_min"] == pytest.approx(
        0.05)
    for bad in (dict(sigma_max=10.0), dict(sigma_min=0.01)):
        with pytest.raises(ConfigError, match=r"trained on \[0\.05, 5\]"):
            invdiff.sample_posterior(model, y, "dpm-2m", n=4, progress=False, **bad)


class SnappedScore:
    """The exact score, but at the nearest level of a ladder (in log sigma) to the sigma asked
    for: the worst case of a net that knows only its training levels."""

    def __init__(self, score, ladder):
        self.score, self.log_ladder = score, ladder.double().log()
        self.x_shape, self.y_shape = score.x_shape, score.y_shape

    def __call__(self, x, y, sigma):
        i = (sigma.double().log()[:, None] - self.log_ladder[None]).abs().argmin(1)
        return self.score(x, y, self.log_ladder[i].exp().to(sigma))


def test_on_ladder_asks_a_net_only_at_its_training_levels():
    """On a 60-level ladder (ratio 1.12) a score that only knows its levels puts dpm-2m's
    std 4.8% off (measured); with the levels moved onto the ladder it is within 1%."""
    prob, y = reference_case(**REFERENCE_PROBLEMS["blur-mask-8"])
    post = prob.posterior
    ladder = geometric(10.0, 0.01, 60).double()
    score = SnappedScore(post.score_fn(), ladder)
    ratio = {}
    for on in (False, True):
        res = make("dpm-2m", on_ladder=on).sample(score, y, ladder, N_SAMPLES,
                                                  generator=torch.Generator().manual_seed(0))
        ratio[on] = gaussian_accuracy(res.samples, post.mean(y), post.cov).mean_std_ratio
        if on:  # every level is one of the ladder's, and there are fewer than 24
            assert torch.isin(res.info["sigmas"], ladder).all() and res.nfe <= 25
    assert abs(ratio[False] - 1) > 0.03 and abs(ratio[True] - 1) <= 0.02, ratio


def test_on_ladder_by_default_for_a_score_model():
    prob, y = reference_case(n=4, mask_fraction=1.0)
    one = torch.ones(1)
    trained = geometric(5.0, 0.05, 8)
    model = ScoreModel(ExactNet(prob.posterior), Normalization(0 * one, one, 0 * one, one),
                       trained)
    res = invdiff.sample_posterior(model, y, "dpm-2m", n=2, progress=False)
    assert res.info["on_ladder"] is True
    torch.testing.assert_close(res.info["sigmas"], trained.double())  # 24 points onto 8 levels
    assert res.nfe == 7 + 1 + 1
    # a plain callable: the continuous schedule; churn keeps the default off the ladder too
    res = make("dpm-2m").sample(prob.posterior.score_fn(), y, trained, 2)
    assert res.info["on_ladder"] is False and len(res.info["sigmas"]) == 24
    res = invdiff.sample_posterior(model, y, "heun", n=2, progress=False, s_churn=1.0)
    assert res.info["on_ladder"] is False
    with pytest.raises(ConfigError, match="churn"):
        make("heun", s_churn=1.0, on_ladder=True)


def test_bad_parameters():
    with pytest.raises(ConfigError, match="final_step"):
        make("heun", final_step="euler")
    with pytest.raises(ConfigError, match="steps"):
        make("dpm-2m", steps=1)
    with pytest.raises(ConfigError, match="s_churn"):
        make("heun", s_churn=-1.0)
    from invdiff_edm import Heun

    with pytest.raises(ConfigError, match="rho"):
        Heun(rho=-2.0)
    with pytest.raises(ConfigError, match="s_noise"):
        Heun(s_noise=0.0)


@pytest.mark.parametrize("params", [dict(name="heun"), dict(name="heun", s_churn=5.0),
                                    dict(name="dpm-2m")])
def test_contract(params):
    params = dict(params)
    check_sampler(make(params.pop("name"), steps=6, **params))


def test_geometric_schedule_from_a_toml_config():
    """TOML has no null: ``rho = inf`` asks for the geometric schedule."""
    import tomllib

    params = tomllib.loads("steps = 4\nrho = inf\n")
    prob, y = reference_case(n=4, mask_fraction=1.0)
    res = make("heun", **params).sample(prob.posterior.score_fn(), y, geometric(10.0, 0.01, 2),
                                        2)
    torch.testing.assert_close(res.info["sigmas"],
                               torch.tensor([10.0, 1.0, 0.1, 0.01], dtype=torch.float64))


#: the reference experiment (configs/reference-unet.toml) cut down to seconds at 8 x 8,
#: sampled with dpm-2m (rho = inf: the geometric schedule)
TINY_RUN = ["problem.prior.params={n = 8, length_scale = 0.15}",
            "problem.forward_model.params={n = 8, blur = 1.0, mask_fraction = 0.6}",
            "data.n_train=64", "data.n_val=16", "data.n_test=2", "training.steps=2",
            "training.batch_size=16", "training.val_every=2", "training.checkpoint_every=2",
            "net.params={base_width = 8, channel_mult = [1], num_res_blocks = 1, "
            "norm_groups = 4}", "ladder.sigma_1=5.0", "ladder.sigma_L=0.05", "ladder.n_levels=6",
            "sampling.n_samples=4", 'sampling.sampler.name="dpm-2m"',
            "sampling.sampler.params={steps = 24, rho = inf}", "output.figures=false"]


def test_a_trained_model_is_sampled_on_its_ladder_from_a_config(tmp_path):
    """A config names the sampler; the trained model's 6 levels take the 24-level schedule:
    5 steps + shifted start + final step."""
    from pathlib import Path

    from invdiff.experiment import run as pipeline
    from invdiff.experiment.config import load_config

    root = Path(__file__).resolve().parents[3]
    cfg = load_config(root / "configs" / "reference-unet.toml",
                      overrides=[*TINY_RUN, f'output.dir="{tmp_path / "run"}"'])
    pipeline.run_train(cfg, progress=False)
    metrics = pipeline.run_sample(cfg, progress=False)
    assert metrics["nfe"] == 5 + 1 + 1
    assert metrics["rmse_truth"] == metrics["rmse_truth"]  # computed, not NaN
