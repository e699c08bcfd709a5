"""Registry: creation, validation, errors, failure isolation, environment switches."""

from __future__ import annotations

import importlib.metadata as md
import types
import warnings

import pytest
from pydantic import Field

import invdiff
from invdiff import plugins
from invdiff.errors import ConfigError, PluginError, UnknownComponentError
from invdiff.hookspecs import hookimpl
from invdiff.params import Params


def make_plugin(name: str, priors=(), raise_in_hook: Exception | None = None):
    """A plugin module registering priors ``priors`` (names) with a trivial factory."""
    mod = types.ModuleType(name)

    class P(Params):
        k: int = Field(1, ge=1)

    @hookimpl
    def register_priors(register):
        if raise_in_hook is not None:
            raise raise_in_hook
        for prior_name in priors:
            register(prior_name, lambda k=1: ("built", k), P, "test prior")

    mod.register_priors = register_priors
    return mod


def test_builtins_are_registered_through_the_manager(fresh_registry):
    assert "gaussian-field" in invdiff.available("prior")
    assert "blur" in invdiff.available("forward_model")
    assert "gaussian" in invdiff.available("noise_model")
    reg = plugins.get_registry()
    assert reg.plugins["reference"].distribution == "invdiff"
    assert reg.pm.get_plugin("reference") is not None


def test_create_validates_and_builds(fresh_registry):
    prior = invdiff.create("prior", "gaussian-field", n=5, length_scale=0.3)
    assert prior.shape == (1, 5, 5)
    assert prior.length_scale == 0.3


def test_unknown_kind_lists_kinds(fresh_registry):
    with pytest.raises(UnknownComponentError, match="kinds are: prior, forward_model"):
        invdiff.create("priors", "gaussian-field")
    with pytest.raises(UnknownComponentError, match="kinds are: .*reference, metric"):
        invdiff.available("metrics")


def test_unknown_name_lists_known_and_how_to_install(fresh_registry):
    with pytest.raises(UnknownComponentError) as exc:
        invdiff.create("prior", "frobnicator")
    msg = str(exc.value)
    assert "available: " in msg and "gaussian-field" in msg
    assert "'frobnicator'" in msg and "pip install invdiff-<plugin>" in msg


def test_unknown_parameter_and_wrong_type_list_valid_ones(fresh_registry):
    with pytest.raises(ConfigError) as exc:
        invdiff.create("prior", "gaussian-field", lenght_scale=0.3)
    assert "lenght_scale: unknown parameter" in str(exc.value)
    assert "length_scale: float = 0.2" in str(exc.value)
    with pytest.raises(ConfigError, match="n: .*integer"):
        invdiff.create("prior", "gaussian-field", n="big")
    with pytest.raises(ConfigError, match="exactly one of 'std'"):
        invdiff.create("noise_model", "gaussian", std=0.1, level=0.1)


def test_broken_plugin_is_skipped_with_a_warning_naming_it():
    reg = plugins.Registry()
    reg.load_builtins()
    with pytest.warns(RuntimeWarning, match="'broken'.*RuntimeError: boom.*skipped"):
        info = reg.add_plugin(make_plugin("broken", ["b1"], RuntimeError("boom")), "broken")
    assert info is None
    assert "b1" not in reg.available("prior")
    assert "broken" in reg.failed
    assert reg.pm.get_plugin("broken") is None  # unregistered, no half state
    # the rest still works
    assert reg.create("prior", "gaussian-field", n=3).shape == (1, 3, 3)


def test_broken_plugin_raises_when_strict():
    reg = plugins.Registry()
    with pytest.raises(PluginError, match="'broken'.*boom.*INVDIFF_STRICT_PLUGINS"):
        reg.add_plugin(make_plugin("broken", ["b1"], RuntimeError("boom")), "broken",
                       strict=True)


def test_duplicate_name_names_both_plugins_when_strict():
    reg = plugins.Registry()
    reg.add_plugin(make_plugin("first", ["twin"]), "first")
    with pytest.raises(PluginError, match="'twin' is registered by two plugins: 'first' and "
                                          "'second'.*INVDIFF_LOAD_PLUGINS"):
        reg.add_plugin(make_plugin("second", ["twin"]), "second", strict=True)
    assert reg.get("prior", "twin").plugin == "first"


def test_duplicate_name_disables_only_that_name():
    reg = plugins.Registry()
    reg.add_plugin(make_plugin("first", ["twin", "solo1"]), "first")
    with pytest.warns(RuntimeWarning, match="'twin' is registered by two plugins: 'first' and "
                                            "'second'.*disabled"):
        reg.add_plugin(make_plugin("second", ["twin", "solo2"]), "second")
    with pytest.warns(RuntimeWarning, match="'twin'.*'earlier plugins' and 'third'"):
        reg.add_plugin(make_plugin("third", ["twin"]), "third")
    assert reg.create("prior", "solo1") == reg.create("prior", "solo2") == ("built", 1)
    assert "twin" not in reg.available("prior")
    with pytest.raises(PluginError, match="'twin' is registered by two plugins.*Uninstall"):
        reg.create("prior", "twin")


def test_plugin_calling_sys_exit_is_a_plugin_failure(fake_entry_points, monkeypatch, capsys):
    from invdiff.cli import main

    exits = make_plugin("exits", ["e1"], SystemExit(3))
    fake_entry_points += [FakeEP("exits-hook", exits), FakeEP("exits-import", error=SystemExit(1)),
                          FakeEP("clash", make_plugin("clash", ["good-prior", "c1"]))]
    monkeypatch.delenv("INVDIFF_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("INVDIFF_STRICT_PLUGINS", raising=False)
    with pytest.warns(RuntimeWarning):
        assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "exits-hook" in out and "SystemExit: 3" in out and "exits-import" in out
    assert "WARNING: prior 'good-prior' is registered by two plugins: 'good' and 'clash'" in out
    assert "c1" in invdiff.available("prior") and "good-prior" not in invdiff.available("prior")


def test_params_are_validated_for_plugin_components():
    reg = plugins.Registry()
    reg.add_plugin(make_plugin("p", ["x1"]), "p")
    assert reg.create("prior", "x1", k=3) == ("built", 3)
    with pytest.raises(ConfigError, match="k: Input should be greater than or equal to 1"):
        reg.create("prior", "x1", k=0)


def test_bad_factory_and_unimportable_factory():
    mod = types.ModuleType("badfactory")

    @hookimpl
    def register_samplers(register):
        register("s1", 42)

    mod.register_samplers = register_samplers
    reg = plugins.Registry()
    with pytest.warns(RuntimeWarning, match="factory 42"):
        reg.add_plugin(mod, "badfactory")

    mod2 = types.ModuleType("lazy")

    @hookimpl
    def register_samplers(register):  # noqa: F811 - a second module's hook
        register("s2", "no_such_module_xyz:Thing")

    mod2.register_samplers = register_samplers
    reg.add_plugin(mod2, "lazy")
    with pytest.raises(PluginError, match="'lazy'.*no_such_module_xyz:Thing.*cannot be imported"):
        reg.create("sampler", "s2")


class FakeEP:
    """Stands in for an importlib.metadata entry point."""

    def __init__(self, name, module=None, error=None):
        self.name, self._module, self._error = name, module, error
        self.dist = types.SimpleNamespace(name=f"dist-{name}", version="9.9")

    def load(self):
        if self._error:
            raise self._error
        return self._module


@pytest.fixture
def fake_entry_points(monkeypatch, fresh_registry):
    eps = [
        FakeEP("good", make_plugin("good", ["good-prior"])),
        FakeEP("noimport", error=ImportError("No module named 'nothere'")),
    ]
    monkeypatch.setattr(md, "entry_points", lambda group: eps if group == "invdiff" else [])
    return eps


def test_entry_point_failure_is_isolated(fake_entry_points, monkeypatch):
    monkeypatch.delenv("INVDIFF_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("INVDIFF_STRICT_PLUGINS", raising=False)
    with pytest.warns(RuntimeWarning, match="'noimport' \\(dist-noimport\\) failed to load"):
        names = invdiff.available("prior")
    assert "good-prior" in names
    assert plugins.get_registry().plugins["good"].version == "9.9"


def test_strict_env_raises(fake_entry_points, monkeypatch):
    monkeypatch.setenv("INVDIFF_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="noimport"):
        invdiff.available("prior")


def test_load_plugins_env_selects(fake_entry_points, monkeypatch):
    monkeypatch.setenv("INVDIFF_LOAD_PLUGINS", "good")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 'noimport' is not even tried
        assert "good-prior" in invdiff.available("prior")
    plugins.reset_registry()
    monkeypatch.setenv("INVDIFF_LOAD_PLUGINS", "")
    assert invdiff.available("prior") == ["gaussian-field"]  # builtins only


def test_plugin_table_rows(fake_entry_points, monkeypatch):
    monkeypatch.setenv("INVDIFF_LOAD_PLUGINS", "good")
    rows = {r["name"]: r for r in plugins.plugin_table()}
    assert rows["good"]["kinds"] == ["prior"]
    assert rows["good"]["components"][0]["name"] == "good-prior"
    assert rows["reference"]["kinds"] == ["forward_model", "noise_model", "prior", "reference"]


def test_parameter_defaults_are_written_once_or_agree(fresh_registry):
    """Every registered component: its parameter model's defaults equal its factory's."""
    from invdiff.testing import check_param_defaults

    check_param_defaults()


def test_drifted_defaults_are_named(fresh_registry):
    from invdiff.testing import param_default_mismatches

    class DriftParams(Params):
        width: int = Field(3, ge=1)
        ranges: tuple[float, float] = (0.0, 1.0)

    def drift_prior(width=4, ranges=[0.0, 1.0]):  # noqa: B006 - the list equals the tuple
        return None

    mod = types.ModuleType("drift_plugin")
    mod.register_priors = hookimpl(lambda register: register("drift", drift_prior,
                                                             DriftParams))
    plugins.get_registry().add_plugin(mod, name="drift")
    assert param_default_mismatches("prior", "drift") == [
        "prior 'drift': width defaults to 3 in DriftParams but 4 in "
        "test_drifted_defaults_are_named.<locals>.drift_prior"]
