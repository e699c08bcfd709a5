"""The ``register_metrics`` hook: the ``metric`` kind in the registry and the CLI, and
:func:`invdiff.evaluation.problem_metrics.problem_metrics` (which metrics apply, merging,
clashes, broken metrics)."""

from __future__ import annotations

import json
import types

import pytest
import torch

import invdiff
from invdiff import plugins
from invdiff.errors import DataError, PluginError, UnknownComponentError
from invdiff.evaluation.problem_metrics import problem_metrics
from invdiff.hookspecs import hookimpl
from invdiff.interfaces import Metric
from invdiff.reference import make_problem
from invdiff.testing import check_metric

OCE_METRICS = {"oce-inclusion-iou", "oce-spheroid-modulus", "oce-gel-modulus"}
OCE_COLUMNS = {"iou", "spheroid_rel_err", "gel_rel_err"}


class MeanError(Metric):
    """A trivial metric: the mean absolute error of the posterior mean (column ``mae``)."""

    name = "mae"

    def __init__(self, key: str = "mae", fail: bool = False, applies_to: str | None = None):
        self.key, self.fail, self.applies_to = key, fail, applies_to

    def applies(self, prior, forward_model, noise_model):
        return self.applies_to is None or type(prior).__name__ == self.applies_to

    def __call__(self, samples, truth, prior, forward_model, noise_model):
        if self.fail:
            raise RuntimeError("metric exploded")
        return {self.key: float((samples.mean(1) - truth).abs().mean())}


def metric_plugin(name: str, **metrics) -> types.ModuleType:
    """A plugin module registering metrics ``name -> factory`` (a callable)."""
    mod = types.ModuleType(name)

    @hookimpl
    def register_metrics(register):
        for metric_name, factory in metrics.items():
            register(metric_name, factory, None, "test metric")

    mod.register_metrics = register_metrics
    return mod


def add(plugin_name: str, **metrics) -> None:
    plugins.get_registry().add_plugin(metric_plugin(plugin_name, **metrics), name=plugin_name)


@pytest.fixture(scope="module")
def reference_problem():
    prob = make_problem(n=4)
    x = prob.prior.sample(3, generator=torch.Generator().manual_seed(0))
    samples = x[:, None] + 0.1 * torch.randn(3, 5, *x.shape[1:],
                                             generator=torch.Generator().manual_seed(1))
    return (prob.prior, prob.forward_model, prob.noise_model), samples, x


@pytest.fixture(scope="module")
def oce_problem():
    pytest.importorskip("invdiff_oce")
    prior = invdiff.create("prior", "tumour-spheroid", n=16)
    fwd = invdiff.create("forward_model", "oce-phase", grid=16)
    noise = invdiff.create("noise_model", "oce-phase-noise")
    x = prior.sample(4, generator=torch.Generator().manual_seed(0))
    samples = x[:, None] * (1 + 0.2 * torch.randn(4, 6, *x.shape[1:],
                                                  generator=torch.Generator().manual_seed(1)))
    return (prior, fwd, noise), samples, x


# -- the registry and the CLI ----------------------------------------------------------------
def test_metric_is_a_kind_listed_by_the_registry(fresh_registry):
    pytest.importorskip("invdiff_oce")
    assert "metric" in plugins.KINDS
    assert OCE_METRICS <= set(invdiff.available("metric"))
    assert plugins.get_registry().get("metric", "oce-inclusion-iou").plugin == "oce"


def test_unknown_metric_lists_the_known_ones(fresh_registry):
    with pytest.raises(UnknownComponentError) as exc:
        invdiff.create("metric", "no-such-metric")
    msg = str(exc.value)
    assert "unknown metric 'no-such-metric'" in msg and "pip install invdiff-<plugin>" in msg
    for name in invdiff.available("metric"):
        assert name in msg


def test_cli_lists_metrics_like_other_kinds(fresh_registry, capsys):
    pytest.importorskip("invdiff_oce")
    from invdiff.cli import main

    assert main(["plugins", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["plugins"]}
    assert "metric" in rows["oce"]["kinds"]
    listed = {c["name"] for c in rows["oce"]["components"] if c["kind"] == "metric"}
    assert listed == OCE_METRICS
    assert main(["plugins"]) == 0
    assert "oce-inclusion-iou (metric)" in capsys.readouterr().out


def test_a_test_plugin_adds_a_metric(fresh_registry):
    add("mae-plugin", **{"test-mae": MeanError})
    assert "test-mae" in invdiff.available("metric")
    assert isinstance(invdiff.create("metric", "test-mae"), MeanError)
    assert plugins.get_registry().plugins["mae-plugin"].kinds == ["metric"]


def test_metric_contract_defaults():
    with pytest.raises(TypeError):
        Metric()  # __call__ is abstract

    class Always(Metric):
        name = "always"

        def __call__(self, samples, truth, prior, forward_model, noise_model):
            return {"always": 1.0}

    assert Always().applies(None, None, None) is True


# -- problem_metrics -------------------------------------------------------------------------
def test_oce_problem_gets_the_oce_columns(fresh_registry, oce_problem):
    components, samples, truth = oce_problem
    values = problem_metrics(components, samples, truth)
    assert set(values) >= OCE_COLUMNS
    assert all(isinstance(v, float) for v in values.values())
    assert 0.0 <= values["iou"] <= 1.0
    exact = problem_metrics(components, truth[:, None].expand_as(samples), truth)
    assert exact["iou"] == 1.0 and exact["spheroid_rel_err"] == 0.0
    assert exact["gel_rel_err"] == 0.0


def test_reference_problem_gets_no_metric(fresh_registry, reference_problem):
    assert problem_metrics(*reference_problem) == {}


def test_metrics_that_do_not_apply_are_never_called(fresh_registry, reference_problem):
    add("picky", picky=lambda: MeanError(fail=True, applies_to="NoSuchPrior"))
    assert problem_metrics(*reference_problem) == {}


def test_applicable_test_metric_is_computed_and_merged(fresh_registry, reference_problem):
    components, samples, truth = reference_problem
    add("mae-plugin", **{"test-mae": MeanError})
    values = problem_metrics(components, samples, truth)
    assert values == {"mae": pytest.approx(float((samples.mean(1) - truth).abs().mean()))}


def test_broken_metric_is_reported_with_its_name_and_plugin(fresh_registry, reference_problem):
    add("breaks", **{"broken-metric": lambda: MeanError(fail=True)},
        **{"good-metric": lambda: MeanError(key="mae_good")})
    with pytest.raises(PluginError, match="metric 'broken-metric' \\(plugin 'breaks'\\) failed: "
                                          "RuntimeError: metric exploded"):
        problem_metrics(*reference_problem)
    with pytest.warns(RuntimeWarning, match="'broken-metric'.*exploded.*skipped"):
        values = problem_metrics(*reference_problem, on_error="warn")
    assert set(values) == {"mae_good"}


def test_metric_that_cannot_be_built_is_reported(fresh_registry, reference_problem):
    add("lazy", **{"missing": "no_such_module_xyz:Metric"})
    with pytest.raises(PluginError, match="'missing'.*'lazy'.*no_such_module_xyz"):
        problem_metrics(*reference_problem)


def test_bad_return_values_are_reported(fresh_registry, reference_problem):
    class Bad(MeanError):
        def __call__(self, *args):
            return {"mae": "high"}

    add("bad", bad=Bad)
    with pytest.raises(PluginError, match="'bad'.*column 'mae' is str 'high', not a number"):
        problem_metrics(*reference_problem)


def test_one_column_from_two_metrics_is_an_error_naming_both(fresh_registry,
                                                             reference_problem):
    add("first", **{"mae-one": MeanError})
    add("second", **{"mae-two": MeanError})
    with pytest.raises(PluginError) as exc:
        problem_metrics(*reference_problem)
    msg = str(exc.value)
    assert "'mae-one' (plugin 'first')" in msg and "'mae-two' (plugin 'second')" in msg
    assert "'mae'" in msg


def test_reserved_columns_are_refused(fresh_registry, reference_problem):
    add("mae-plugin", **{"test-mae": lambda: MeanError(key="rmse_truth")})
    with pytest.raises(PluginError, match="'rmse_truth', already given by the caller"):
        problem_metrics(*reference_problem, reserved=["rmse_truth", "coverage_90"])


def test_shapes_are_checked(fresh_registry, reference_problem):
    components, samples, truth = reference_problem
    add("mae-plugin", **{"test-mae": MeanError})
    with pytest.raises(DataError, match="samples \\(M, n, \\*x_shape\\)"):
        problem_metrics(components, samples[:2], truth)
    with pytest.raises(DataError):
        problem_metrics(components, samples[:, 0], truth)
    assert problem_metrics(components, samples[:0], truth[:0]) == {}


# -- the contract kit ------------------------------------------------------------------------
def test_check_metric_passes_a_good_metric(reference_problem):
    components, samples, truth = reference_problem
    values = check_metric(MeanError(), *components, samples, truth)
    assert set(values) == {"mae"}


def test_check_metric_catches_broken_promises(reference_problem):
    components, samples, truth = reference_problem

    class Mutates(MeanError):
        def __call__(self, samples, truth, *rest):
            truth.add_(0.0).mul_(1.0001)
            return {"mae": 0.0}

    class NotFloat(MeanError):
        def __call__(self, samples, truth, *rest):
            return {"mae": torch.tensor(0.0)}

    class NotAMean(MeanError):
        def __call__(self, samples, truth, *rest):
            return {"mae": float(len(truth))}

    class WrongPrefix(MeanError):
        def __call__(self, *args):
            return {"error": 0.0}

    for metric, match in [(Mutates(), "modified its inputs"), (NotFloat(), "not a float"),
                          (NotAMean(), "mean over its measurements"),
                          (WrongPrefix(), "does not start with the metric's name"),
                          (MeanError(applies_to="Other"), "does not apply")]:
        with pytest.raises(AssertionError, match=match):
            check_metric(metric, *components, samples.clone(), truth.clone())
    check_metric(NotAMean(), *components, samples, truth, batch_mean=False)
