"""The stages end to end on a tiny config (seconds): files, metrics, resume, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from invdiff.cli import main
from invdiff.errors import CheckpointError, ConfigError
from invdiff.experiment import demo
from invdiff.experiment import run as pipeline
from invdiff.experiment.config import load_config
from invdiff.experiment.parts import build_net, make_ladder
from invdiff.experiment.run import Experiment
from invdiff.integrity import file_sha256

TINY = """
name = "tiny"
[problem.prior]
name = "gaussian-field"
params = {{ n = 8, length_scale = 0.15 }}
[problem.forward_model]
name = "blur"
params = {{ n = 8, blur = 1.0, mask_fraction = 0.6 }}
[problem.noise_model]
name = "gaussian"
params = {{ std = 0.05 }}
[data]
n_train = 96
n_val = 32
n_test = 2
chunk_size = 64
[net]
name = "unet"
params = {{ base_width = 8, channel_mult = [1], num_res_blocks = 1, norm_groups = 4 }}
[ladder]
sigma_1 = 5.0
sigma_L = 0.05
n_levels = 6
[training]
steps = 6
batch_size = 16
val_every = 3
checkpoint_every = 3
[sampling]
n_samples = 4
[sampling.sampler]
name = "annealed-langevin"
params = {{ steps_per_level = 2 }}
[output]
dir = "{out}"
"""


@pytest.fixture
def cfg_path(tmp_path):
    p = tmp_path / "tiny.toml"
    p.write_text(TINY.format(out=tmp_path / "run"))
    return p


def test_stages_write_their_files_and_resume(cfg_path, tmp_path, fresh_registry):
    cfg = load_config(cfg_path)
    with pytest.raises(CheckpointError, match="invdiff train"):
        pipeline.run_sample(cfg, progress=False)
    summary = pipeline.run_train(cfg, progress=False)  # simulates first
    assert summary["steps"] == 6 and summary["n_levels"] == 6
    out = tmp_path / "run"
    for f in ("data/train.npz", "data/test.npz", "checkpoints/final.pt", "training.json",
              "figures/loss.png"):
        assert (out / f).exists(), f
    final = (out / "checkpoints" / "final.pt").read_bytes()
    again = pipeline.run_train(cfg, progress=False)  # resumes at step 6: nothing to do
    assert again["steps"] == 6
    metrics = pipeline.run_sample(cfg, progress=False)
    assert metrics["reference"] == "linear-gaussian" and metrics["n_measurements"] == 2
    assert metrics["nfe"] == 6 * 2 + 1  # L levels x T steps + final denoising
    for key in ("rmse_truth", "rmse_ref", "std_ratio", "coverage_90"):
        assert key in metrics and metrics[key] == metrics[key]  # present and not NaN
    # the reference is the closed form: its own error, recomputed independently
    from invdiff.data import load_dataset
    from invdiff.reference import exact_posterior

    test = load_dataset(out / "data" / "test.npz")
    exact = exact_posterior(*Experiment(cfg).components).mean(test.y.double())
    err = float((exact.float().double() - test.x.double()).square().mean().sqrt())
    assert metrics["ref_rmse_truth"] == pytest.approx(err, rel=1e-6)
    assert metrics["ref_measurements"] == [0, 1]
    assert json.loads((out / "metrics.json").read_text())["nfe"] == metrics["nfe"]
    assert (out / "posterior.npz").exists() and (out / "figures" / "posterior_0.png").exists()
    assert len(final) > 0


def test_sample_compares_with_the_mcmc_reference_the_prior_names(tmp_path, fresh_registry):
    """A parametric prior (circular inclusion) names inclusion-mcmc; run_sample writes the
    comparison on the first n_ref measurements, and the chain equals a direct one."""
    text = TINY.format(out=tmp_path / "el").replace(
        'name = "gaussian-field"\nparams = { n = 8, length_scale = 0.15 }',
        'name = "circular-inclusion"\nparams = { n = 8 }').replace(
        'name = "blur"\nparams = { n = 8, blur = 1.0, mask_fraction = 0.6 }',
        'name = "elasticity-fem"\nparams = { grid = 8 }').replace(
        "params = { std = 0.05 }", "params = { level = 0.05 }").replace(
        "steps = 6\n", "steps = 2\n").replace("[output]", """[sampling.reference]
name = "inclusion-mcmc"
params = { n_ref = 1, n_steps = 8, n_walkers = 10 }
[output]
figures = false""")
    path = tmp_path / "el.toml"
    path.write_text(text)
    cfg = load_config(path)
    pipeline.run_train(cfg, progress=False)
    metrics = pipeline.run_sample(cfg, progress=False)
    assert metrics["reference"] == "inclusion-mcmc" and metrics["ref_measurements"] == [0]
    assert metrics["ref_steps"] == 8 and metrics["std_ratio"] > 0
    from invdiff_elasticity.mcmc import reference_posterior, relative_noise_std

    from invdiff.data import load_dataset

    test = load_dataset(tmp_path / "el" / "data" / "test.npz")
    prior, fem, _ = Experiment(cfg).components
    direct = reference_posterior(test.y[0], relative_noise_std(test.y_clean[0], 0.05), prior,
                                 fem, n_steps=8, n_walkers=10, seed=0)
    err = float((direct.mean_field.float().double() - test.x[0, 0].double()).square().mean()
                .sqrt())
    assert metrics["ref_rmse_truth"] == pytest.approx(err, rel=1e-6)
    assert list((tmp_path / "el" / "references").glob("*.npz"))  # the chain is cached


def test_a_prior_reference_that_does_not_fit_is_a_note(cfg_path, fresh_registry):
    """gaussian-field names the closed form, which relative noise rules out: no comparison,
    and metrics.json says why."""
    cfg = load_config(cfg_path, overrides=["problem.noise_model.params={ level = 0.05 }",
                                           "output.figures=false", "training.steps=2"])
    pipeline.run_train(cfg, progress=False)
    metrics = pipeline.run_sample(cfg, progress=False)
    assert metrics["reference"] is None and "rmse_ref" not in metrics
    assert "absolute std" in metrics["reference_note"]


def test_a_named_reference_that_does_not_fit_is_an_error(cfg_path, fresh_registry):
    cfg = load_config(cfg_path, overrides=['sampling.reference={ name = "inclusion-mcmc" }',
                                           "training.steps=2", "output.figures=false"])
    pipeline.run_train(cfg, progress=False)
    with pytest.raises(ConfigError, match="sampling.reference: .*not parametric"):
        pipeline.run_sample(cfg, progress=False)


def test_cli_run(cfg_path, tmp_path, capsys, fresh_registry, torch_device):
    """``invdiff run`` end to end, training and sampling on each device."""
    cfg_path.write_text(cfg_path.read_text().replace(
        "[training]\n", f'[training]\ndevice = "{torch_device.type}"\n'))
    assert main(["run", str(cfg_path), "-q", "--out", str(tmp_path / "cli")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sampler"] == "annealed-langevin"
    assert (tmp_path / "cli" / "metrics.json").exists()


def test_fresh_nets_are_seeded_from_the_config(cfg_path, fresh_registry):
    cfg = load_config(cfg_path)
    a, _ = build_net(cfg, (1, 8, 8), (1, 8, 8))
    torch.manual_seed(12345)  # the caller's global stream does not matter...
    b, _ = build_net(cfg, (1, 8, 8), (1, 8, 8))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    cfg.training.seed += 1  # ...the config's seed does
    c, _ = build_net(cfg, (1, 8, 8), (1, 8, 8))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters(),
                                                      strict=True))


def test_ladder_is_suggested_in_the_units_the_net_trains_in(cfg_path):
    """With ``x_transform = "log"`` the NCSNv2 sigma_1 (largest pairwise distance of the
    normalised training x) is measured on standardised log x, not on standardised x."""
    from invdiff.data import Dataset, Normalization
    from invdiff.sampling.sigmas import max_pairwise_distance

    g = torch.Generator().manual_seed(0)
    x = torch.exp(1.5 * torch.randn(64, 1, 4, 4, generator=g))  # heavy right tail
    y = torch.randn(64, 1, 4, 4, generator=g)
    train = Dataset(x, y, Normalization.fit(x, y))
    cfg = load_config(cfg_path)
    cfg_log = load_config(cfg_path, overrides=["training.x_transform=log"])
    cfg.ladder.sigma_1 = cfg_log.ladder.sigma_1 = None  # let the heuristic choose
    lin, _ = make_ladder(cfg, train)
    log, _ = make_ladder(cfg_log, train)
    std_log = (x.log() - x.log().mean()) / x.log().std()
    assert float(lin[0]) == pytest.approx(max_pairwise_distance(train.normalization
                                                                .normalize_x(x)))
    assert float(log[0]) == pytest.approx(max_pairwise_distance(std_log), rel=1e-5)
    assert float(log[0]) < 0.8 * float(lin[0])


def test_a_second_run_reuses_every_finished_stage(cfg_path, tmp_path, fresh_registry):
    """`invdiff run` (and the demo) twice: the second run redoes nothing and says so; a changed
    sampler setting redoes only the sampling, more training steps only the training and after.
    The metrics.json written on the way describes itself."""
    cfg = load_config(cfg_path)
    cfg.output.figures = False  # figures are checked elsewhere; here they would only cost time
    cfg.training.lr_decay = "constant"  # a cosine schedule cannot be extended by more steps
    said: list[str] = []
    first = pipeline.run_run(cfg, progress=False, say=said.append)
    assert said == []  # nothing to reuse on a fresh folder
    out = tmp_path / "run"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == first
    numeric = [k for k, v in saved.items() if isinstance(v, float)]
    assert set(numeric) <= set(saved["descriptions"])  # every number is explained
    assert saved["units"]["rmse_truth"] == "no physical unit"  # from the reference prior
    assert saved["units"]["coverage_90"] == "fraction of pixels"
    assert saved["reference"] == "linear-gaussian"
    assert "closed-form" in saved["reference_description"]
    assert saved["fields"]["y"] == "blurred x, unobserved pixels read 0 [units of x]"

    files = {f: (out / f).read_bytes() for f in ("checkpoints/final.pt", "metrics.json",
                                                 "posterior.npz", "data/train.npz")}
    again = pipeline.run_run(cfg, progress=False, say=said.append)
    assert again == first
    assert [m.split()[2] for m in said] == ["simulated", "trained", "posterior"]
    assert all((out / f).read_bytes() == b for f, b in files.items())  # nothing rewritten

    said.clear()
    cfg.sampling.n_samples = 6  # another sampler setting: sample again, keep the model
    resampled = pipeline.run_run(cfg, progress=False, say=said.append)
    assert [m.split()[2] for m in said] == ["simulated", "trained"]
    assert resampled["n_samples"] == 6
    assert (out / "checkpoints/final.pt").read_bytes() == files["checkpoints/final.pt"]

    said.clear()
    cfg.training.steps = 7  # one more step: training continues from last.pt, then sampling
    more = pipeline.run_run(cfg, progress=False, say=said.append)
    assert [m.split()[2] for m in said] == ["simulated"]
    assert more["checkpoint_sha256"] != resampled["checkpoint_sha256"]
    assert more["checkpoint_sha256"] == file_sha256(out / "checkpoints/final.pt")


def test_sample_hint_repeats_the_users_paths(cfg_path, tmp_path, capsys, fresh_registry):
    out = tmp_path / "elsewhere"
    assert main(["sample", str(cfg_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"run `invdiff train {cfg_path} --out {out}` first" in err


def test_demos_have_folders_of_their_own(fresh_registry):
    dirs = {(p, q): demo.demo_config(p, q).out_dir
            for p in demo.DEMOS for q in (False, True)}
    assert dirs[("elasticity", False)] == Path("runs/demo")  # what `make demo` writes
    assert len(set(dirs.values())) == len(dirs)  # no two clash
    assert dirs[("reference", True)] == Path("runs/demo-reference-quick")
    assert demo.demo_config("reference", True, "x/y").out_dir == Path("x/y")
    with pytest.raises(ConfigError, match="unknown demo 'oce'; choose one of elasticity"):
        demo.demo_config("oce")
@pytest.mark.parametrize("sampler, params, steps", [
    ("annealed-langevin", "{ steps_per_level = 2 }", 2),  # the sampler declares T
    ("predictor-corrector", "{}", 5),  # no Langevin steps per level: the rule's default
])
def test_ladder_heuristic_sizes_the_ladder_for_the_sampler(tmp_path, fresh_registry, sampler,
                                                           params, steps):
    from invdiff.data import load_dataset
    from invdiff.sampling.sigmas import suggest
    from invdiff.training import training_normalization

    old = 'name = "annealed-langevin"\nparams = { steps_per_level = 2 }'
    text = TINY.format(out=tmp_path / "run").replace("sigma_1 = 5.0\n", "").replace(
        "n_levels = 6\n", "").replace(old, f'name = "{sampler}"\nparams = {params}')
    path = tmp_path / "c.toml"
    path.write_text(text)
    cfg = load_config(path)
    pipeline.run_simulate(cfg, progress=False)
    exp = Experiment(cfg)
    sigmas, reasoning = exp.ladder
    train = exp.training_data[0]  # the ladder is measured on the training split
    assert len(train) == len(load_dataset(tmp_path / "run" / "data" / "train.npz")) - 32
    x_n = training_normalization(train, cfg.training).normalize_x(train.x)
    sug = suggest(x_n, sigma_L=0.05, steps_per_level=steps)
    assert len(sigmas) == sug.n_levels and reasoning == sug.reasoning
    assert f"with T = {steps} steps per level" in reasoning[-1]  # the Langevin step rule
