"""Measurements with gaps (``training.masking``, :mod:`invdiff.data.masking`): the training
masks, the exact posterior given the measured entries against independent computations, a
masked model against it, the references and checks with gaps, and every refusal."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import invdiff
from invdiff.cli import main
from invdiff.data import Dataset, Normalization
from invdiff.data import masking as M
from invdiff.errors import ConfigError, DataError
from invdiff.evaluation.ood import Typicality
from invdiff.evaluation.ppc import posterior_predictive_check
from invdiff.experiment.config import load_config
from invdiff.experiment.run import run_run
from invdiff.reference import make_problem
from invdiff.sampling.sigmas import geometric
from invdiff.training import Trainer, TrainingConfig
from invdiff.training.checkpoint import load_model as load_checkpoint_model
from invdiff.training.model import ScoreModel
from tests.nets import TinyScoreNet, gaussian_datasets
from tests.test_pipeline import TINY

SIGMAS = geometric(5.0, 0.05, 10)
NAN = float("nan")


def _fractions(masks: torch.Tensor) -> torch.Tensor:
    return 1 - masks.float().flatten(1).mean(1)


# -- the masks ---------------------------------------------------------------------------------
def test_training_masks_follow_the_documented_rule(monkeypatch):
    """Scattered fractions uniform on [0, 0.5]; blocks in half the examples, rectangles of
    area uniform on [0, 1/4]; together [0, 0.625] of the field, mean about 0.30."""
    g = torch.Generator().manual_seed(0)
    f = _fractions(M.draw_training_masks(20_000, (16, 16), g))
    assert float(f.min()) < 0.01 and 0.6 < float(f.max()) < 0.8
    assert float(f.mean()) == pytest.approx(0.30, abs=0.01)
    monkeypatch.setattr(M, "BLOCK_PROBABILITY", 0.0)
    scattered = _fractions(M.draw_training_masks(20_000, (16, 16), g))
    q = torch.quantile(scattered, torch.tensor([0.1, 0.5, 0.9]))
    assert torch.allclose(q, torch.tensor([0.05, 0.25, 0.45]), atol=0.02), q
    monkeypatch.setattr(M, "BLOCK_PROBABILITY", 1.0)
    monkeypatch.setattr(M, "SCATTERED_FRACTION", (0.0, 0.0))
    blocks = M.draw_training_masks(4000, (16, 16), g)
    q = torch.quantile(_fractions(blocks), torch.tensor([0.25, 0.5, 0.75]))
    assert torch.allclose(q, torch.tensor([0.0625, 0.125, 0.1875]), atol=0.02), q
    for mask in blocks[:200, 0]:  # each hidden set is one rectangle
        rows, cols = (~mask).nonzero(as_tuple=True)
        if len(rows):
            box = ~mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
            assert bool(box.all()) and int(box.numel()) == len(rows)


def test_trainer_batches_carry_reproducible_masks_over_the_range(problem_data):
    """The trainer's own batches: one extra y channel holding the mask, the masked values set
    to 0, the fractions over the documented range; the same step draws the same masks (a
    resumed run needs no state), another step others; validation masks are fixed."""
    train, val = problem_data
    tr = Trainer(TinyScoreNet(y_shape=(2, 2, 2)), train, SIGMAS,
                 TrainingConfig(steps=5, batch_size=64, masking=True), val=val, progress=False)
    x, y_in = tr.batch(7)
    assert y_in.shape == (64, 2, 2, 2) and set(y_in[:, 1].unique().tolist()) <= {0.0, 1.0}
    assert bool((y_in[:, 0][y_in[:, 1] == 0] == 0).all())
    assert torch.equal(tr.batch(7)[1], y_in) and not torch.equal(tr.batch(8)[1], y_in)
    f = torch.cat([1 - tr.batch(k)[1][:, 1].flatten(1).mean(1) for k in range(60)])
    assert float(f.min()) == 0 and float(f.max()) >= 0.5 and 0.15 < float(f.mean()) < 0.45
    assert tr.validate() == tr.validate()


def test_scenarios_hide_what_they_say_by_one_seeded_rule():
    y = torch.randn(6, 2, 16, 16)
    r = M.apply_scenario(y, "random-0.3")
    assert torch.equal(torch.isnan(r[:, 0]), torch.isnan(r[:, 1]))  # whole pixels
    assert _fractions(M.observed_pixels(r)).tolist() == [round(0.3 * 256) / 256] * 6
    b = M.apply_scenario(y, "block-0.25")
    assert _fractions(M.observed_pixels(b)).tolist() == [0.25] * 6
    assert torch.equal(torch.isnan(M.apply_scenario(y, "random-0.3")), torch.isnan(r))
    assert not torch.equal(torch.isnan(r[0]), torch.isnan(r[1]))
    assert M.apply_scenario(y, "none") is y
    for bad in ("random", "block-1.5", "holes-0.2"):
        with pytest.raises(ConfigError, match="random-F"):
            M.parse_scenario(bad)


def test_masked_input_and_its_refusals():
    y = torch.tensor([[[[1.0, NAN], [3.0, 4.0]]]])
    out = M.masked_input(y)
    assert out.tolist() == [[[[1.0, 0.0], [3.0, 4.0]], [[1.0, 0.0], [1.0, 1.0]]]]
    hide_all = torch.zeros(1, 1, 2, 2, dtype=torch.bool)
    with pytest.raises(DataError, match="hides every entry"):
        M.masked_input(y, hide_all)
    with pytest.raises(DataError, match="all NaN"):
        M.check_gaps(torch.full((2, 1, 2, 2), NAN), True)
    with pytest.raises(DataError, match="infinite"):
        M.check_gaps(torch.tensor([[math.inf, 1.0]]), True)
    with pytest.raises(DataError, match="training.masking"):
        M.check_gaps(y, False)


def test_normalisation_statistics_ignore_nan():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, 1, 4, 4, generator=g), 3 + 2 * torch.randn(50, 2, 4, 4, generator=g)
    gappy = M.apply_scenario(y, "random-0.3")
    norm = Normalization.fit(x, gappy)
    for c in range(2):
        seen = gappy[:, c][~torch.isnan(gappy[:, c])].double()
        assert float(norm.y_mean[c]) == pytest.approx(float(seen.mean()), rel=1e-5)
        assert float(norm.y_std[c]) == pytest.approx(float(seen.std()), rel=1e-5)
    pix = norm.with_y_per_pixel(gappy)
    col = gappy[:, 1, 2, 3]
    assert float(pix.y_mean[1, 2, 3]) == pytest.approx(float(col[~col.isnan()].mean()), rel=1e-5)
    assert torch.isfinite(pix.y_std).all() and torch.isfinite(pix.y_mean).all()


# -- the exact posterior given the measured entries -------------------------------------------
def test_exact_masked_posterior_matches_information_form_in_numpy():
    """Kalman form with the missing rows dropped (invdiff) against the precision form with the
    missing rows' noise precision set to zero (numpy), and against the full Kalman form with
    their noise variance at 1e12 (the limit the gap is)."""
    prob = make_problem(n=5, blur=1.0, mask_fraction=0.8, noise_level=0.1, length_scale=0.3)
    post = prob.posterior
    g = torch.Generator().manual_seed(2)
    y = prob.noise_model(prob.forward_model(prob.prior.sample(3, generator=g).double()))
    y = M.apply_scenario(y, "block-0.25")
    y[2] = M.apply_scenario(y[2:3], "random-0.3", seed=9)[0]
    a, c = prob.forward_model.matrix().numpy(), prob.prior.covariance_matrix().double().numpy()
    m0, s2 = prob.prior.mean_vector().double().numpy(), prob.noise_model.std ** 2
    mean, std = post.mean(y).numpy().reshape(3, -1), post.std_of(y).numpy().reshape(3, -1)
    for k in range(3):
        yk = y[k].flatten().numpy()
        seen = ~np.isnan(yk)
        w = np.where(seen, 1 / s2, 0.0)
        prec = np.linalg.inv(c) + a.T @ (w[:, None] * a)
        cov = np.linalg.inv(prec)
        m = cov @ (np.linalg.solve(c, m0) + a.T @ (w * np.nan_to_num(yk)))
        assert np.allclose(mean[k], m, atol=1e-6) and np.allclose(std[k], np.sqrt(np.diag(cov)),
                                                                  atol=1e-6)
        var = np.where(seen, s2, 1e12)
        gain = c @ a.T @ np.linalg.inv(a @ c @ a.T + np.diag(var))
        assert np.allclose(mean[k], m0 + gain @ (np.nan_to_num(yk) - a @ m0), atol=1e-5)
    assert (std[0] >= post.std.numpy().ravel() - 1e-12).all()  # a gap never narrows it
    # exact samples and the exact noised score (an exact sampler) given the measured entries
    draws = post.sample(y, 4000, generator=g).reshape(3, 4000, -1)
    assert torch.allclose(draws.mean(1), torch.from_numpy(mean), atol=0.06)
    assert torch.allclose(draws.std(1), torch.from_numpy(std), rtol=0.06)
    sampled = invdiff.sample_posterior(post.score_fn(), y.float(), sampler="heun", n=400,
                                       sigmas=geometric(3.0, 0.01, 30), generator=g,
                                       progress=False)
    ratio = sampled.std.double().mean() / post.std_of(y).mean()
    assert float(ratio) == pytest.approx(1.0, abs=0.05)
    err = (sampled.mean.double() - post.mean(y)) / post.std_of(y)
    assert float(err.square().mean().sqrt()) < 0.1


# -- a masked model ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def problem():
    return make_problem(n=2, blur=0.5, mask_fraction=1.0, noise_level=0.3)


@pytest.fixture(scope="module")
def problem_data(problem):
    return gaussian_datasets(problem, n_train=2000, n_val=500, seed=1)


def _as_gaps(y_in: torch.Tensor) -> torch.Tensor:
    """The net's input back to a y with NaN where the mask channel is 0."""
    return torch.where(y_in[:, -1:] > 0.5, y_in[:, :-1], NAN)


def test_masked_model_plumbing_checkpoint_and_resume(problem_data, tmp_path):
    train, val = problem_data
    cfg = dict(steps=10, batch_size=64, checkpoint_every=5, val_every=5, masking=True,
               lr_decay="constant")

    def fit(steps, directory, resume=False):
        tr = Trainer(TinyScoreNet(y_shape=(2, 2, 2)), train, SIGMAS,
                     TrainingConfig(**(cfg | {"steps": steps})), val=val,
                     checkpoint_dir=directory, progress=False)
        return tr, tr.fit(resume=resume)

    tr, model = fit(10, tmp_path / "a")
    assert model.masking and model.y_shape == (1, 2, 2) and model.net.y_shape == (2, 2, 2)
    # the checkpoint records it (no experiment here: its training config says so)
    loaded = load_checkpoint_model(tmp_path / "a" / "final.pt", net=TinyScoreNet(y_shape=(2, 2, 2)))
    assert loaded.masking and loaded.y_shape == (1, 2, 2)
    y = val.y[:3].clone()
    y[0, 0, 0, 1] = NAN
    x, sigma = torch.randn(3, 1, 2, 2), torch.full((3,), 0.5)
    with torch.no_grad():
        assert torch.equal(loaded(x, y, sigma), loaded.net(x, M.masked_input(y), sigma))
        with pytest.raises(DataError, match="no measured entry"):
            loaded(x, torch.full_like(y, NAN), sigma)
    # resumed half way: bit-identical (the masks are drawn from (seed, step), no state)
    fit(5, tmp_path / "b")
    _, resumed = fit(10, tmp_path / "b", resume=True)
    for p, q in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)
    # the data's own NaN (a gappy training y) stays hidden under the drawn masks
    gappy = Dataset(train.x, M.apply_scenario(train.y, "random-0.3"), train.normalization)
    tr = Trainer(TinyScoreNet(y_shape=(2, 2, 2)), gappy, SIGMAS, TrainingConfig(**cfg),
                 progress=False)
    _, y_in = tr.batch(0)
    idx = tr.epoch_data(0)[0][:64]
    assert bool((y_in[:, 1][torch.isnan(gappy.y[idx.cpu(), 0])] == 0).all())


def test_masked_model_learns_the_exact_posterior_given_the_measured_entries(problem,
                                                                           problem_data):
    """A tiny MLP trained with masking (1500 steps, D = 4, 6 s) against the exact posterior of
    y with one of its four entries missing: the score within the unmasked test's tolerances
    (tests/test_training.py: 20/25/40% at sigma = 5 / 1.08 / 0.05; measured 8/24/37%), its
    validation loss within 10% of the way from the untrained net's to the exact score's
    (measured 0.986: exact 0.973, untrained 2.006), and its samples (heun, 2000 per
    measurement) with a mean error of 0.18 exact std (< 0.5) and a std ratio of 1.13 (in
    [0.8, 1.25]; the exact score through the same sampler: 1.01 on the 5 x 5 problem)."""
    train, val = problem_data
    tr = Trainer(TinyScoreNet(y_shape=(2, 2, 2), hidden=128), train, SIGMAS, TrainingConfig(
        steps=1500, batch_size=128, lr=3e-3, warmup_steps=20, ema_decay=0.99, val_every=500,
        checkpoint_every=10_000, seed=0, lr_decay="constant", masking=True), val=val,
        progress=False)
    norm, post = tr.normalization, problem.posterior
    sx, mx = float(norm.x_std), float(norm.x_mean)

    def exact_n(xn, y_in, s):  # the exact score in normalised units, on the net's input
        return sx * post.score_fn()(sx * xn + mx, norm.denormalize_y(_as_gaps(y_in)), s * sx)

    init, best = tr.validate(), tr.validate(exact_n)
    model = tr.fit()
    assert tr.history[-1]["val_loss_ema"] - best < 0.1 * (init - best)
    y = val.y[:200].clone()
    y[:, 0, 1, 0] = NAN
    g = torch.Generator().manual_seed(5)
    xn = norm.normalize_x(val.x[:200])
    for level, tol in ((5.0, 0.2), (float(SIGMAS[6]), 0.25), (float(SIGMAS[-1]), 0.4)):
        xt = xn + level * torch.randn(xn.shape, generator=g)
        sig = torch.full((200,), level)
        with torch.no_grad():
            s = model(xt, norm.normalize_y(y), sig)
        want = exact_n(xt, M.masked_input(norm.normalize_y(y)), sig)
        assert float((s - want).norm() / want.norm()) < tol, level
    some = y[:5]
    sampled = invdiff.sample_posterior(model, some, sampler="heun", n=2000,
                                       generator=g, progress=False)
    exact_std = post.std_of(some).float()
    err = (sampled.mean - post.mean(some).float()) / exact_std
    assert float(err.square().mean().sqrt()) < 0.5
    assert 0.8 < float(sampled.std.mean() / exact_std.mean()) < 1.25


# -- refusals ----------------------------------------------------------------------------------
def test_an_unmasked_model_refuses_gaps_naming_masking(problem_data):
    train, val = problem_data
    tr = Trainer(TinyScoreNet(), train, SIGMAS, TrainingConfig(steps=2, batch_size=64),
                 progress=False)
    model = tr.fit()
    assert not model.masking
    y = val.y[:2].clone()
    y[1, 0, 0, 0] = NAN
    for sampler in ("annealed-langevin", "predictor-corrector", "heun"):
        with pytest.raises(DataError, match="training.masking"):
            invdiff.sample_posterior(model, y, sampler=sampler, n=2, progress=False)
    with pytest.raises(DataError, match="training.masking"):  # a bare sampler, too
        invdiff.create("sampler", "annealed-langevin", progress=False).sample(
            model, y, SIGMAS, 2)


def test_bad_training_data_are_refused_before_any_file(problem_data, tmp_path):
    train, _ = problem_data
    nan_x = Dataset(train.x.clone(), train.y, train.normalization)
    nan_x.x[4, 0, 1, 1] = NAN
    for masking in (False, True):
        with pytest.raises(DataError, match="x must be complete"):
            Trainer(TinyScoreNet(y_shape=(1 + masking, 2, 2)), nan_x, SIGMAS,
                    TrainingConfig(masking=masking), checkpoint_dir=tmp_path / "ck",
                    progress=False)
    nan_y = Dataset(train.x, train.y.clone(), train.normalization)
    nan_y.y[3, 0, 0, 0] = NAN
    with pytest.raises(DataError, match="training.masking = true"):
        Trainer(TinyScoreNet(), nan_y, SIGMAS, TrainingConfig(), progress=False)
    empty = Dataset(train.x, train.y.clone(), train.normalization)
    empty.y[5] = NAN
    with pytest.raises(DataError, match="example 5 is all NaN"):
        Trainer(TinyScoreNet(y_shape=(2, 2, 2)), empty, SIGMAS, TrainingConfig(masking=True),
                progress=False)
    with pytest.raises(DataError, match="y_shape=\\(2, 2, 2\\)"):  # the net lacks the mask
        Trainer(TinyScoreNet(), train, SIGMAS, TrainingConfig(masking=True), progress=False)
    assert not (tmp_path / "ck").exists()
    with pytest.raises(ConfigError, match="C \\+ 1"):
        ScoreModel(TinyScoreNet(), train.normalization, SIGMAS, masking=True)


# -- invdiff infer -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def masked_run(tmp_path_factory):
    """A tiny masked run folder of the reference problem (its numbers mean nothing)."""
    root = tmp_path_factory.mktemp("masked")
    path = root / "tiny.toml"
    path.write_text(TINY.format(out=root / "run").replace("[training]",
                                                          "[training]\nmasking = true"))
    cfg = load_config(path)
    cfg.output.figures = False
    cfg.data.n_train, cfg.data.n_val = 160, 64
    run_run(cfg, progress=False)
    return root / "run"


def test_infer_takes_gaps_for_a_masked_model(masked_run, tmp_path, capsys):
    test = invdiff.load_dataset(masked_run / "data" / "test.npz")
    y = M.apply_scenario(test.y[:2], "block-0.25").numpy()
    np.save(tmp_path / "gaps.npy", y)
    out = tmp_path / "out"
    assert main(["infer", str(masked_run), str(tmp_path / "gaps.npy"), "--out", str(out),
                 "-q", "--n", "6"]) == 0
    assert len(list((out / "figures").glob("measurement_*.png"))) == 2
    with np.load(out / "posterior.npz") as f:
        assert np.isfinite(f["mean"]).all() and f["mean"].shape == (2, *test.x_shape)
        assert np.isnan(f["residual"][np.isnan(y)]).all()  # no residual where not measured
        assert np.isfinite(f["residual"][~np.isnan(y)]).all()
    np.save(tmp_path / "allnan.npy", np.full_like(y, np.nan))
    bad = tmp_path / "out-bad"
    assert main(["infer", str(masked_run), str(tmp_path / "allnan.npy"), "--out", str(bad),
                 "-q"]) == 2
    err = capsys.readouterr().err
    assert "all NaN" in err and "Traceback" not in err and not bad.exists()


# -- references and checks with gaps -----------------------------------------------------------
def test_typicality_of_a_gappy_measurement_is_the_marginal_distance():
    """Woodbury on the measured entries against a brute-force c_O^T Sigma_OO^-1 c_O; the
    thresholds of a pattern come from held-out measurements with that pattern, so the
    false-alarm rate stays alpha."""
    g = torch.Generator().manual_seed(0)
    d = 36
    mix = torch.randn(d, d, generator=g, dtype=torch.float64) / 6
    draw = lambda n: (torch.randn(n, d, generator=g, dtype=torch.float64) @ mix.T  # noqa: E731
                      ).reshape(n, 1, 6, 6)
    test = Typicality.fit(draw(400), max_components=10).calibrate(draw(2000), alpha=0.1)
    y = M.apply_scenario(draw(1000), "block-0.25")
    seen = ~torch.isnan(y[0].flatten())
    cov = (test.components.T * (test.variances - test.residual_variance)) @ test.components
    cov += test.residual_variance * torch.eye(d, dtype=torch.float64)
    c = y[0].flatten()[seen] - test.mean[seen]
    brute = c @ torch.linalg.solve(cov[seen][:, seen], c)
    judged = test.assess(y)
    assert float(judged["score"][0]) == pytest.approx(float(brute), rel=1e-8)
    assert 0.05 < float(judged["flag"].double().mean()) < 0.16
    full = test.assess(draw(1))
    assert float(full["lower"][0]) == test.lower and float(full["upper"][0]) == test.upper


def test_ppc_sums_over_the_measured_entries_only():
    prob = make_problem(n=4, noise_level=0.1)
    g = torch.Generator().manual_seed(1)
    y = prob.noise_model(prob.forward_model(prob.prior.sample(2, generator=g)), generator=g)
    samples = prob.posterior.sample(y, 8, generator=g).float()
    wild = y.clone()
    wild[:, 0, :2, :2] = 1e6  # absurd where it is then marked missing
    wild[:, 0, :2, :2] = NAN
    res = posterior_predictive_check(wild, samples, prob.forward_model, prob.noise_model)
    keep = ~torch.isnan(wild)
    clean = prob.forward_model(samples[:, 0])
    want = torch.where(keep, wild - clean, 0).double().square().flatten(1).sum(1)
    assert torch.allclose(res.discrepancy, want, rtol=1e-5)
    assert bool(torch.isnan(res.residual[~keep]).all())


def test_mcmc_likelihoods_use_the_measured_entries_only():
    from invdiff_elasticity import ElasticityFEM
    from invdiff_elasticity.inclusions import CircularInclusionPrior
    from invdiff_elasticity.mcmc import InclusionPosterior

    prior, fem = CircularInclusionPrior(n=8), ElasticityFEM(grid=8)
    g = torch.Generator().manual_seed(0)
    x = prior.sample(3, generator=g).double()
    y = fem(x[:1])[0]
    gap = M.apply_scenario(y[None], "block-0.25")[0]
    full, part = InclusionPosterior(y, 1e-4, prior, fem), InclusionPosterior(gap, 1e-4, prior, fem)
    seen = ~torch.isnan(gap)
    want = -0.5 * ((fem(x) - y)[:, seen]).square().sum(1) / 1e-8
    assert torch.allclose(part.log_likelihood(x), want)
    assert not torch.allclose(full.log_likelihood(x), want)
    with pytest.raises(DataError, match="all NaN"):
        InclusionPosterior(torch.full_like(y, NAN), 1e-4, prior, fem)
    # OCE: test_registered_mcmc_references_condition_on_the_measured_entries


def test_registered_mcmc_references_condition_on_the_measured_entries():
    """The study's path (``invdiff.create("reference", ...).parameter_posterior``) on a
    held-out measurement with a scenario's gaps: the log-likelihood is the one of the complete
    measurement summed over the measured entries only, for the elastography measurement (noise
    std from the complete clean y) and for OCE's wrapped phase (per pixel, also given as a
    phasor: a NaN pixel of either form is not measured, never a phase of 0)."""
    from invdiff_oce.phase import to_phasor, wrap

    g = torch.Generator().manual_seed(3)
    prior = invdiff.create("prior", "circular-inclusion", n=8)
    fem = invdiff.create("forward_model", "elasticity-fem", grid=8)
    noise = invdiff.create("noise_model", "gaussian", level=0.05)
    x = prior.sample(4, generator=g).double()
    clean = fem(x[:1])
    y = noise(clean, generator=g)
    gap = M.apply_scenario(y, "random-0.3")[0]
    ref = invdiff.create("reference", "inclusion-mcmc", n_ref=1)
    full = ref.parameter_posterior(prior, fem, noise, y[0], clean[0])
    part = ref.parameter_posterior(prior, fem, noise, gap, clean[0])
    seen = ~torch.isnan(gap)
    assert 0.6 < float(seen.double().mean()) < 0.8 and part.noise_std == full.noise_std
    s2 = full.noise_std**2
    per_entry = -0.5 * (fem(x) - y).square() / s2  # (4, 1, 8, 8): the complete likelihood's
    assert torch.allclose(full.log_likelihood(x), per_entry.flatten(1).sum(1))
    assert torch.allclose(part.log_likelihood(x), per_entry[:, seen].sum(1))

    sph = invdiff.create("prior", "tumour-spheroid", n=8)
    oce = invdiff.create("forward_model", "oce-phase", grid=8, pressure_kpa=0.002)
    phase_noise = invdiff.create("noise_model", "oce-phase-noise", speckle_smoothing=0.0)
    xs = sph.sample(4, generator=g).double()
    phase = phase_noise(oce(xs[:1]), generator=g)
    hole = M.apply_scenario(phase, "block-0.25")
    mcmc = invdiff.create("reference", "spheroid-mcmc", n_ref=1)
    lk = mcmc.parameter_posterior(sph, oce, phase_noise, phase[0], None).log_likelihood
    lk_hole = mcmc.parameter_posterior(sph, oce, phase_noise, hole[0], None).log_likelihood
    table = lk.table  # built once, shared by the chains and by other references of the noise
    assert len(mcmc._tables) == 1 and lk_hole.table is table
    other = invdiff.create("reference", "spheroid-mcmc", n_ref=2)
    assert other.parameter_posterior(sph, oce, phase_noise, hole[0], None).log_likelihood.table \
        is table
    phi = oce(xs)
    per_pixel = table.log_prob(wrap(phase.double() - phi)[:, 0], phase_noise.phase_ramp(phi)[:, 0])
    seen = ~torch.isnan(hole[0, 0])
    assert int((~seen).sum()) == 16  # a 4 x 4 block of the 8 x 8 field
    assert torch.allclose(lk(xs), per_pixel.flatten(1).sum(1), atol=1e-8)
    assert torch.allclose(lk_hole(xs), per_pixel[:, seen].sum(1), atol=1e-8)
    phasor = mcmc.parameter_posterior(sph, oce, phase_noise, to_phasor(hole)[0], None)
    assert torch.allclose(phasor.log_likelihood(xs), lk_hole(xs), atol=1e-8)


def test_exact_reference_and_study_cells_with_gaps(tmp_path):
    """The study: a gappy held-out set, the exact reference on it (wider std where entries are
    missing), a preset that asks for gaps without masking refused, a bad scenario named."""
    from invdiff.study.preset import load_preset
    from invdiff.study.runner import held_out_set, problem_reference

    preset = load_preset("smoke", [f'runs="{tmp_path}"',
                                   "problems.reference.experiment.training.masking=true",
                                   'problems.reference.missing=["block-0.25"]'])
    h = held_out_set(preset, "reference", 0.0234, "block-0.25")
    full = held_out_set(preset, "reference", 0.0234)
    assert h.missing == "block-0.25" and torch.equal(h.x, full.x)
    assert torch.equal(torch.isnan(h.y), torch.isnan(M.apply_scenario(full.y, "block-0.25")))
    ref, ref_full = problem_reference(preset, h), problem_reference(preset, full)
    assert bool((ref.std >= ref_full.std - 1e-6).all()) and float((ref.std - ref_full.std)
                                                                  .max()) > 0.1
    with pytest.raises(ConfigError, match="training.masking = true"):
        load_preset("smoke", ["problems.reference.experiment.training.masking=false",
                              'problems.reference.missing=["random-0.3"]'])
    with pytest.raises(ConfigError, match="random-F"):
        load_preset("smoke", ["problems.reference.experiment.training.masking=true",
                              'problems.reference.missing=["holes"]'])
