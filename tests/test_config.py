"""Experiment configs: TOML loading, errors that point at the field, component checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from invdiff.config import check_components, load_config, parse_config
from invdiff.errors import ConfigError
from invdiff.pipeline import embedded_config

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
    assert cfg.training_config().steps == 10


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
    data = embedded_config(name)
    data.pop("quick")
    cfg = parse_config(data)
    check_components(cfg)
    assert cfg.net.name == "unet"


CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_experiment_configs_are_valid(path):
    """Every experiment config in configs/ (the docs' commands use them) loads, and its
    components exist in the installed plugins with valid parameters."""
    cfg = load_config(path)  # load_config checks the components against the registry
    assert cfg.name and cfg.training.steps >= 1
