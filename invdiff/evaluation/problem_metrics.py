"""Problem-specific metrics: the registered :class:`invdiff.interfaces.Metric` components that fit
a problem, computed on posterior samples and merged into one dict.

Plugins register metrics with the hook ``register_metrics`` (kind ``"metric"``). For each
problem, :func:`problem_metrics` builds every registered metric with its default parameters,
keeps those whose ``applies(prior, forward_model, noise_model)`` is true and merges their
``{column: float}`` results. A metric that fits no problem costs one ``applies`` call; with no
metric registered nothing is built at all.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any, Literal

import torch

from invdiff.errors import DataError, PluginError

__all__ = ["problem_metrics"]


def problem_metrics(
    components: tuple[Any, Any, Any],
    samples: torch.Tensor,
    truth: torch.Tensor,
    *,
    reserved: Iterable[str] = (),
    on_error: Literal["raise", "warn"] = "raise",
) -> dict[str, float]:
    """The numbers of every registered metric that applies to the problem, merged.

    ``components``: ``(prior, forward_model, noise_model)`` of the problem; ``samples``: posterior
    samples ``(M, n, *x_shape)`` in physical units; ``truth``: the true fields ``(M, *x_shape)``.
    Each number is averaged over the M measurements; ``{}`` where no metric applies (or M = 0).

    ``reserved``: column names the caller already uses (e.g. ``"rmse_truth"``); a metric that
    returns one of them is an error, as are two metrics that return the same column.
    ``on_error``: ``"raise"`` (default) raises :class:`invdiff.errors.PluginError` naming the
    metric and its plugin when a metric cannot be built, raises, returns something other than
    ``{str: number}`` or clashes; ``"warn"`` skips that metric with a ``RuntimeWarning``
    instead, so one broken metric does not lose the rest of a long run.
    """
    from invdiff.plugins import get_registry

    if on_error not in ("raise", "warn"):
        raise ValueError(f"on_error must be 'raise' or 'warn', got {on_error!r}")
    reg = get_registry()
    names = reg.available("metric")
    if not names:
        return {}
    prior, forward_model, noise_model = components
    samples, truth = torch.as_tensor(samples), torch.as_tensor(truth)
    _check_shapes(samples, truth)
    if samples.shape[0] == 0:
        return {}
    owners = {key: "the caller" for key in reserved}
    out: dict[str, float] = {}
    for name in names:
        comp = reg.get("metric", name)
        who = f"metric {name!r} (plugin {comp.plugin!r})"
        try:
            metric = reg.create("metric", name)
            if not metric.applies(prior, forward_model, noise_model):
                continue
            with torch.no_grad():
                values = _as_floats(metric(samples, truth, prior, forward_model, noise_model))
        except Exception as exc:  # noqa: BLE001 - re-raised (or warned) naming the metric
            _report(f"{who} failed: {type(exc).__name__}: {exc}. Fix or uninstall the plugin, "
                    f"or load only the others with INVDIFF_LOAD_PLUGINS.", on_error, exc)
            continue
        clash = sorted(k for k in values if k in owners)
        if clash:
            _report(f"{who} returns the column(s) {', '.join(map(repr, clash))}, already "
                    f"given by {', '.join(sorted({owners[k] for k in clash}))}: a column "
                    f"name must be unique (start each with the metric's name).", on_error)
            continue
        owners.update(dict.fromkeys(values, who))
        out.update(values)
    return out


def _check_shapes(samples: torch.Tensor, truth: torch.Tensor) -> None:
    if (samples.dim() != truth.dim() + 1 or samples.shape[0] != truth.shape[0]
            or samples.shape[2:] != truth.shape[1:]):
        raise DataError(f"problem metrics need samples (M, n, *x_shape) and truth (M, *x_shape); "
                        f"got samples {tuple(samples.shape)} and truth {tuple(truth.shape)}")


def _as_floats(values: Any) -> dict[str, float]:
    if not isinstance(values, dict):
        raise TypeError(f"it returned {type(values).__name__}, not a dict of column -> number")
    out = {}
    for key, value in values.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"its column names must be non-empty strings, got {key!r}")
        try:
            number = float(value)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"column {key!r} is {type(value).__name__} {value!r}, not a "
                            f"number") from None
        out[key] = number
    return out


def _report(message: str, on_error: str, exc: BaseException | None = None) -> None:
    if on_error == "raise":
        raise PluginError(message) from exc
    warnings.warn(message + " The metric is skipped.", RuntimeWarning, stacklevel=3)
