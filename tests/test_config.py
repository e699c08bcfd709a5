"""Experiment configs: TOML loading, errors that point at the field, component checks."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from invdiff.errors import ConfigError
from invdiff.experiment.config import check_components, load_config, parse_config
from invdiff.experiment.demo import embedded_config, embedded_config_path

GOOD = """
name = "t"
[problem.prior]
name = "gaussian-field"
params = { n = 8 }
[problem.forward_model]
name = "blur"
params = { n = 8 }
[problem.noise_model]
name = "gaussian"
params = { std = 0.1 }
[net]
name = "unet"
[training]
steps = 10
lr = 1e-3
"""


def write(tmp_path, text):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_good_config_loads_with_defaults(tmp_path, fresh_registry):
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.problem.prior.params == {"n": 8}
    assert cfg.data.n_train == 2000 and cfg.sampling.sampler.name == "annealed-langevin"
    assert cfg.training.steps == 10


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (("lr = 1e-3", "lr = -1.0"), r"c.toml: training.lr: Input should be greater than 0"),
        (("steps = 10", "steps = 10\nsteps_typo = 3"), r"training.steps_typo: unknown field"),
        (('name = "t"', 'name = "t"\n[data]\nn_train = 1'), r"data.n_train: .*greater than or"),
        (('name = "t"', 'name = "t"\n[ladder]\nsigma_1 = 0.001'), r"ladder: .*must exceed"),
        (('name = "t"', 'nmae = "t"'), r"c.toml: nmae: unknown field"),
    ],
)
def test_errors_point_at_the_field(tmp_path, edit, pattern, fresh_registry):
    with pytest.raises(ConfigError, match=pattern):
        load_config(write(tmp_path, GOOD.replace(*edit)))


def test_component_names_and_params_are_checked(tmp_path, fresh_registry):
    bad_name = GOOD.replace('name = "blur"', 'name = "blurr"')
    with pytest.raises(ConfigError, match=r"problem.forward_model: unknown forward_model 'blurr'"
                                          r"; available: blur"):
        load_config(write(tmp_path, bad_name))
    bad_param = GOOD.replace("params = { std = 0.1 }", "params = { sdt = 0.1 }")
    with pytest.raises(ConfigError, match=r"(?s)problem.noise_model: .*sdt: unknown parameter"):
        load_config(write(tmp_path, bad_param))


def test_overrides_set_values_before_validation(tmp_path, fresh_registry):
    cfg = load_config(write(tmp_path, GOOD), overrides=[
        "training.steps=600", "net.params.output=ncsn", 'training.y_normalization="pixel"',
        "ladder.sigma_L=0.02", "net.params.channel_mult=[1, 2]"])
    assert cfg.training.steps == 600 and cfg.training.y_normalization == "pixel"
    assert cfg.net.params == {"output": "ncsn", "channel_mult": [1, 2]}  # a bare word: a string
    assert cfg.ladder.sigma_L == 0.02
    # validation sees the overridden values, and errors name the field
    with pytest.raises(ConfigError, match="training.lr: Input should be greater than 0"):
        load_config(write(tmp_path, GOOD), overrides=["training.lr=-1"])
    with pytest.raises(ConfigError, match="training.stpes: unknown field"):
        load_config(write(tmp_path, GOOD), overrides=["training.stpes=3"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(write(tmp_path, GOOD), overrides=["training.steps"])
    with pytest.raises(ConfigError, match="name is not a table"):
        load_config(write(tmp_path, GOOD), overrides=["name.x=1"])


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="no config file"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "name = = 3"))


@pytest.mark.parametrize("name", ["demo-elasticity", "demo-reference"])
def test_embedded_demo_configs_are_valid(fresh_registry, name):
    cfg = parse_config(embedded_config(name))
    check_components(cfg)
    assert cfg.net.name == "unet"


@pytest.mark.parametrize("problem", ["elasticity", "reference"])
def test_quick_demo_configs_shrink_the_full_ones(fresh_registry, problem):
    """demo-PROBLEM-quick.toml extends demo-PROBLEM.toml: same problem and sampler, far
    smaller data, net and training."""
    full = load_config(embedded_config_path(f"demo-{problem}"))
    quick = load_config(embedded_config_path(f"demo-{problem}-quick"))
    assert quick.problem == full.problem and quick.sampling.sampler == full.sampling.sampler
    assert quick.data.n_train * 10 <= full.data.n_train
    assert quick.training.steps * 100 <= full.training.steps
    assert quick.net.params["base_width"] < full.net.params["base_width"]
    assert quick.net.params["num_res_blocks"] == full.net.params["num_res_blocks"]  # merged
    assert quick.name == full.name + "-quick"


ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted([*(ROOT / "configs").glob("*.toml"),
                  *(ROOT / "invdiff" / "configs").glob("*.toml")])


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_shipped_experiment_configs_are_valid(path):
    """Every experiment config in configs/ and invdiff/configs/ (the docs' commands and the
    demo use them) loads as `invdiff run` loads it, and its components exist in the installed
    plugins with valid parameters."""
    cfg = load_config(path)  # load_config checks the components against the registry
    assert cfg.name and cfg.training.steps >= 1


def test_extends_merges_table_by_table(tmp_path, fresh_registry):
    write(tmp_path, GOOD + '[output]\ndir = "runs/base"\nfigures = false\n')
    child = tmp_path / "child.toml"
    child.write_text('extends = "c.toml"\nname = "child"\n[training]\nsteps = 3\n'
                     '[problem.prior.params]\nlength_scale = 0.3\n')
    cfg = load_config(child)
    assert cfg.name == "child" and cfg.training.steps == 3 and cfg.training.lr == 1e-3
    assert cfg.problem.prior.params == {"n": 8, "length_scale": 0.3}
    assert cfg.out_dir == Path("runs/child")  # its own folder, not the base's
    assert cfg.output.figures is False  # the rest of [output] is inherited


def test_extends_errors_name_the_file(tmp_path):
    loop = tmp_path / "a.toml"
    loop.write_text('extends = "b.toml"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n')
    with pytest.raises(ConfigError, match="loops back on itself"):
        load_config(loop)
    loop.write_text('extends = "missing.toml"\n')
    with pytest.raises(ConfigError, match="no config file at .*missing.toml"):
        load_config(loop)
    loop.write_text("extends = 3\n")
    with pytest.raises(ConfigError, match="a.toml: extends: expected a file name"):
        load_config(loop)


def test_default_output_folder_is_named_after_the_config(tmp_path, fresh_registry):
    assert load_config(write(tmp_path, GOOD)).out_dir == Path("runs/c")
    with_dir = GOOD + '[output]\ndir = "elsewhere"\n'
    assert load_config(write(tmp_path, with_dir)).out_dir == Path("elsewhere")
    assert parse_config(tomllib.loads(GOOD)).out_dir == Path("runs/t")  # no file: its name


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (("steps = 10", "stepz = 10"), r"training.stepz: unknown field \(did you mean 'steps'\?\)"),
        (('name = "t"', 'nmae = "t"'), r"nmae: unknown field \(did you mean 'name'\?\)"),
        (('[net]\nname = "unet"', '[net]\nname = "unet"\nparmas = {}'),
         r"net.parmas: unknown field \(did you mean 'params'\?\)"),
        (('name = "blur"', 'name = "blurr"'),
         r"problem.forward_model: unknown forward_model 'blurr'.*\(did you mean 'blur'\?\)"),
        (("params = { std = 0.1 }", "params = { sdt = 0.1 }"),
         r"(?s)sdt: unknown parameter.*sdt \(did you mean 'std'\?\)"),
    ],
)
def test_misspelt_names_get_suggestions(tmp_path, edit, pattern, fresh_registry):
    with pytest.raises(ConfigError, match=pattern):
        load_config(write(tmp_path, GOOD.replace(*edit)))


def test_no_suggestion_when_nothing_is_close(tmp_path, fresh_registry):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, GOOD.replace("steps = 10", "zzzzqq = 10")))
    assert "zzzzqq: unknown field" in str(err.value) and "did you mean" not in str(err.value)
