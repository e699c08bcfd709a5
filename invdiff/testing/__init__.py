"""Contract kit: check any component against the interface contracts of
:mod:`invdiff.interfaces` (shapes, seeding, devices; see ``docs/writing-plugins.md``).

Each ``check_*`` function raises ``AssertionError`` with a message naming the broken promise,
so a plugin's test suite checks a component in one line::

    from invdiff.testing import check_prior
    def test_contract():
        check_prior(MyPrior())

What is checked: output shapes and dtypes, batch consistency (a batch equals its items done one
by one, where the component is deterministic), determinism under a seeded generator, finiteness
and device placement (``device=`` defaults to CPU; pass ``"cuda"`` on a GPU machine).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from typing import Any

import torch

from invdiff.interfaces import SampleResult


def _gen(seed: int, device: torch.device | str) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _assert_finite(t: torch.Tensor, what: str) -> None:
    assert torch.isfinite(t).all(), f"{what} has non-finite values"


@contextlib.contextmanager
def full_fp32() -> Iterator[None]:
    """TF32 off for CUDA matmuls and convolutions inside the block (restored after). cuDNN's
    default TF32 rounds inputs to 10 mantissa bits (~1e-3 relative), and which kernel it picks
    depends on the batch size; the checks compare float32 results, not TF32 round-off."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _assert_device(t: torch.Tensor, device: torch.device | str, what: str) -> None:
    assert t.device.type == torch.device(device).type, (
        f"{what} is on {t.device}, expected {device}"
    )


def check_prior(prior: Any, n: int = 3, device: torch.device | str = "cpu") -> torch.Tensor:
    """``shape`` is a tuple (C, H, W); ``sample(n, generator)`` gives ``(n, *shape)``, finite,
    reproducible with a seeded generator, different for different seeds. Returns a sample."""
    shape = tuple(prior.shape)
    assert all(isinstance(s, int) and s > 0 for s in shape), f"bad prior.shape {shape}"
    x = prior.sample(n, generator=_gen(0, device))
    assert isinstance(x, torch.Tensor), "prior.sample must return a torch.Tensor"
    assert tuple(x.shape) == (n, *shape), f"prior.sample gave {tuple(x.shape)}, want {(n, *shape)}"
    assert x.is_floating_point(), f"prior samples must be floating point, got {x.dtype}"
    _assert_finite(x, "prior sample")
    _assert_device(x, device, "prior sample")
    x2 = prior.sample(n, generator=_gen(0, device))
    assert torch.equal(x, x2), "prior.sample is not reproducible under a seeded generator"
    x3 = prior.sample(n, generator=_gen(1, device))
    assert not torch.equal(x, x3), "prior.sample ignores the generator's seed"
    assert tuple(prior.sample(1).shape) == (1, *shape), "prior.sample(1) without generator failed"
    return x



def check_prior_threads(
    build: Callable[[], Any], n: int = 4, seed: int = 0, threads: tuple[int, ...] = (1, 2)
) -> torch.Tensor:
    """A seed gives the same draws whatever the thread count: ``build()`` (a fresh prior) and
    its ``sample(n, generator)`` are run under each of ``threads`` torch and BLAS threads
    (:func:`invdiff.runtime.torch_threads`) and must agree bit for bit.

    Why: LAPACK and BLAS results (eigenvector signs, round-off) can depend on the thread
    count, so a prior that factors its covariance with many threads gives another field for
    the same seed on another machine setting, and a resumed simulation would mix both. Build
    the prior inside ``build`` so that factors computed at construction are checked too.
    Returns the draw."""
    from invdiff.runtime import torch_threads

    draws = []
    for t in threads:
        with torch_threads(t):
            draws.append(build().sample(n, generator=_gen(seed, "cpu")))
    for t, x in zip(threads[1:], draws[1:], strict=True):
        diff = (x.double() - draws[0].double()).abs().max().item()
        assert torch.equal(x, draws[0]), (
            f"prior draws for seed {seed} differ between {threads[0]} and {t} threads (max "
            f"difference {diff:.3g}); factor covariances under invdiff.runtime.torch_threads(1)"
        )
    return draws[0]

def check_forward_model(
    forward_model: Any, x: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4
) -> torch.Tensor:
    """``forward_model(x (B, *x_shape))`` gives ``(B, *output_shape(x_shape))``, finite, on x's
    device; a batch equals its items done one at a time; the same input gives the same output.
    Returns ``y_clean``."""
    x_shape = tuple(x.shape[1:])
    y_shape = tuple(forward_model.output_shape(x_shape))
    y = forward_model(x)
    assert isinstance(y, torch.Tensor), "forward model must return a torch.Tensor"
    assert tuple(y.shape) == (x.shape[0], *y_shape), (
        f"forward model gave {tuple(y.shape)}, output_shape promises {(x.shape[0], *y_shape)}"
    )
    _assert_finite(y, "forward model output")
    _assert_device(y, x.device, "forward model output")
    one = torch.cat([forward_model(x[i : i + 1]) for i in range(x.shape[0])])
    assert torch.allclose(one.to(y.dtype), y, atol=atol, rtol=rtol), (
        "forward model: the batch result differs from item-by-item results"
    )
    assert torch.allclose(forward_model(x), y, atol=0, rtol=0), "forward model is not deterministic"
    return y


def check_noise_model(noise_model: Any, y_clean: torch.Tensor) -> torch.Tensor:
    """``noise_model(y_clean, generator)`` keeps shape, dtype and device, is finite, changes the
    input, and is reproducible with a seeded generator. Returns a noisy y."""
    dev = y_clean.device
    y = noise_model(y_clean, generator=_gen(0, dev))
    assert tuple(y.shape) == tuple(y_clean.shape), (
        f"noise model changed the shape {tuple(y_clean.shape)} -> {tuple(y.shape)}"
    )
    assert y.dtype == y_clean.dtype, f"noise model changed dtype {y_clean.dtype} -> {y.dtype}"
    _assert_finite(y, "noisy measurement")
    _assert_device(y, dev, "noisy measurement")
    assert not torch.equal(y, y_clean), "noise model returned its input unchanged"
    y2 = noise_model(y_clean, generator=_gen(0, dev))
    assert torch.equal(y, y2), "noise model is not reproducible under a seeded generator"
    assert not torch.equal(y, noise_model(y_clean, generator=_gen(1, dev))), (
        "noise model ignores the generator's seed"
    )
    return y


def check_score_net(
    net: torch.nn.Module,
    batch: int = 2,
    device: torch.device | str = "cpu",
    atol: float = 1e-4,
) -> torch.Tensor:
    """``net(x, y, sigma (B,))`` is shaped like x, finite, on x's device, deterministic in eval
    mode, batch-consistent, and backpropagates to every parameter. Returns the output."""
    x_shape, y_shape = tuple(net.x_shape), tuple(net.y_shape)
    net = net.to(device).eval()
    g = _gen(0, device)
    x = torch.randn(batch, *x_shape, generator=g, device=device)
    y = torch.randn(batch, *y_shape, generator=g, device=device)
    sigma = torch.logspace(0, -2, batch, device=device)
    with torch.no_grad(), full_fp32():
        out = net(x, y, sigma)
        assert tuple(out.shape) == tuple(x.shape), (
            f"score net output {tuple(out.shape)} is not shaped like x {tuple(x.shape)}"
        )
        _assert_finite(out, "score net output")
        _assert_device(out, device, "score net output")
        assert torch.equal(net(x, y, sigma), out), "score net is not deterministic in eval mode"
        one = torch.cat([net(x[i : i + 1], y[i : i + 1], sigma[i : i + 1]) for i in range(batch)])
        assert torch.allclose(one, out, atol=atol, rtol=1e-3), (
            "score net: batch result differs from item-by-item (a norm mixes the batch?)"
        )
    net.train()
    loss = net(x, y, sigma).square().mean()
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters get no gradient: {missing[:5]}"
    net.zero_grad(set_to_none=True)
    net.eval()
    return out


def check_same_on_device(
    net: torch.nn.Module,
    device: torch.device | str,
    batch: int = 2,
    rtol: float = 1e-4,
) -> float:
    """The net gives the same scores on ``device`` as on the CPU (same weights, same inputs),
    within ``rtol`` of the output's scale, under :func:`full_fp32`; its gradients agree too.
    Returns the largest relative difference of the outputs."""
    x_shape, y_shape = tuple(net.x_shape), tuple(net.y_shape)
    g = _gen(0, "cpu")
    x = torch.randn(batch, *x_shape, generator=g)
    y = torch.randn(batch, *y_shape, generator=g)
    sigma = torch.logspace(0, -2, batch)
    cpu_net, dev_net = copy.deepcopy(net).cpu().eval(), copy.deepcopy(net).to(device).eval()
    outs, grads = [], []
    with full_fp32():
        for n, dev in ((cpu_net, "cpu"), (dev_net, device)):
            out = n(x.to(dev), y.to(dev), sigma.to(dev))
            out.square().mean().backward()
            outs.append(out.detach().cpu())
            grads.append(torch.cat([p.grad.flatten().cpu() for p in n.parameters()
                                    if p.grad is not None]))
    _assert_device(out, device, "score net output")
    rel = float((outs[1] - outs[0]).abs().max() / outs[0].abs().max().clamp_min(1e-30))
    assert rel <= rtol, f"score net output on {device} differs from the CPU's by {rel:.2e} (rel)"
    grel = float((grads[1] - grads[0]).abs().max() / grads[0].abs().max().clamp_min(1e-30))
    assert grel <= 10 * rtol, f"gradients on {device} differ from the CPU's by {grel:.2e} (rel)"
    return rel


def check_sampler(
    sampler: Any,
    score: Any = None,
    y: torch.Tensor | None = None,
    sigmas: torch.Tensor | None = None,
    n_samples: int = 3,
    device: torch.device | str = "cpu",
) -> SampleResult:
    """``sampler.sample(score, y (M, *y_shape), sigmas, n)`` returns a :class:`SampleResult` with
    samples ``(M, n, *x_shape)``, finite, on y's device, a positive ``nfe`` and ``seconds``; a
    seeded generator reproduces the samples exactly. Defaults to a tiny reference problem with
    its exact score."""
    if score is None:
        from invdiff.reference import make_problem

        prob = make_problem(n=4, mask_fraction=1.0)
        score = prob.posterior.score_fn()
        x = prob.prior.sample(2, generator=_gen(0, "cpu"))
        y = prob.noise_model(prob.forward_model(x), generator=_gen(1, "cpu"))
    assert y is not None, "give y together with score"
    y = y.to(device)
    if sigmas is None:
        sigmas = torch.logspace(0, -2, 8, device=device)
    x_shape = tuple(score.x_shape)
    res = sampler.sample(score, y, sigmas, n_samples, generator=_gen(0, device))
    assert isinstance(res, SampleResult), "sampler.sample must return a SampleResult"
    want = (y.shape[0], n_samples, *x_shape)
    assert tuple(res.samples.shape) == want, f"samples {tuple(res.samples.shape)}, want {want}"
    _assert_finite(res.samples, "samples")
    _assert_device(res.samples, device, "samples")
    assert isinstance(res.nfe, int) and res.nfe > 0, f"nfe must be a positive int, got {res.nfe}"
    assert res.seconds >= 0, "seconds must be >= 0"
    res2 = sampler.sample(score, y, sigmas, n_samples, generator=_gen(0, device))
    assert torch.equal(res.samples, res2.samples), "sampler is not reproducible with a seed"
    return res


def param_default_mismatches(kind: str, name: str) -> list[str]:
    """Where a registered component's defaults are written twice and disagree.

    The rule: a component's defaults come from its parameter model (what ``invdiff.create``
    validates and fills in). Where the factory's signature repeats a default for the same
    parameter, the two must be equal, or a direct call and ``invdiff.create`` would build
    different components. Returns one line per disagreement (empty: consistent).
    """
    import inspect

    from pydantic_core import PydanticUndefined

    from invdiff.plugins import get_registry

    comp = get_registry().get(kind, name)
    if comp.params is None:
        return []
    factory = comp.resolve_factory()
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return []
    out = []
    for field_name, field in comp.params.model_fields.items():
        p = sig.parameters.get(field_name)
        if p is None or p.default is inspect.Parameter.empty:
            continue
        default = field.get_default(call_default_factory=True)
        if default is PydanticUndefined:
            continue
        same = default == p.default or (isinstance(default, tuple | list)
                                         and isinstance(p.default, tuple | list)
                                         and list(default) == list(p.default))
        if not same:
            out.append(f"{kind} {name!r}: {field_name} defaults to {default!r} in "
                       f"{comp.params.__name__} but {p.default!r} in {factory.__qualname__}")
    return out


def check_param_defaults(kinds: tuple[str, ...] | None = None) -> None:
    """Every registered component of ``kinds`` (all kinds if None): its parameter model's
    defaults agree with its factory's (:func:`param_default_mismatches`)."""
    from invdiff.plugins import KINDS, available

    bad = [m for kind in (kinds or KINDS) for name in available(kind)
           for m in param_default_mismatches(kind, name)]
    assert not bad, "defaults written twice disagree:\n" + "\n".join(bad)


def check_metric(
    metric: Any,
    prior: Any,
    forward_model: Any,
    noise_model: Any,
    samples: torch.Tensor,
    truth: torch.Tensor,
    batch_mean: bool = True,
    rtol: float = 1e-6,
    atol: float = 1e-12,
) -> dict[str, float]:
    """A :class:`invdiff.interfaces.Metric` on ``samples (M, n, *x_shape)`` and ``truth
    (M, *x_shape)`` of the problem ``(prior, forward_model, noise_model)``: ``applies`` says
    True (a bool); the call returns ``{str: float}`` with finite values whose keys start with
    ``metric.name``; a second call gives the same keys and values; the inputs are not modified;
    with ``batch_mean`` (the metric is a mean over measurements, the usual definition), the
    batch's values equal the mean of the values of its measurements one at a time, within
    ``atol + rtol * |value|``. Returns the values."""
    name = getattr(metric, "name", None)
    assert isinstance(name, str) and name, f"metric.name must be a non-empty str, got {name!r}"
    fits = metric.applies(prior, forward_model, noise_model)
    assert isinstance(fits, bool), f"metric.applies must return a bool, got {type(fits).__name__}"
    assert fits, f"metric {name!r} says it does not apply to this problem"
    assert samples.dim() == truth.dim() + 1 and samples.shape[0] == truth.shape[0], (
        f"give samples (M, n, *x_shape) and truth (M, *x_shape), got {tuple(samples.shape)} "
        f"and {tuple(truth.shape)}")
    before = samples.clone(), truth.clone()
    values = metric(samples, truth, prior, forward_model, noise_model)
    assert isinstance(values, dict) and values, (
        f"metric {name!r} must return a non-empty dict of column -> float, got {values!r}")
    for key, value in values.items():
        assert isinstance(key, str) and key.startswith(name), (
            f"metric {name!r}: column {key!r} does not start with the metric's name")
        assert isinstance(value, float), (
            f"metric {name!r}: column {key!r} is {type(value).__name__}, not a float "
            f"(convert with float(...))")
        assert torch.isfinite(torch.tensor(value)), f"metric {name!r}: {key} = {value}"
    assert torch.equal(samples, before[0]) and torch.equal(truth, before[1]), (
        f"metric {name!r} modified its inputs")
    again = metric(samples, truth, prior, forward_model, noise_model)
    assert list(again) == list(values), (
        f"metric {name!r}: keys changed between calls: {list(values)} then {list(again)}")
    assert again == values, f"metric {name!r} is not deterministic: {values} then {again}"
    if batch_mean and samples.shape[0] > 1:
        ones = [metric(samples[m:m + 1], truth[m:m + 1], prior, forward_model, noise_model)
                for m in range(samples.shape[0])]
        for one in ones:
            assert list(one) == list(values), (
                f"metric {name!r}: keys for one measurement {list(one)} differ from the "
                f"batch's {list(values)}")
        for key, value in values.items():
            mean = sum(one[key] for one in ones) / len(ones)
            assert abs(mean - value) <= atol + rtol * max(abs(value), abs(mean)), (
                f"metric {name!r}: {key} of the batch is {value}, the mean over its "
                f"measurements one at a time is {mean}")
    return values


def check_objective(objective: Any, config: Any = None, n: int = 512, seed: int = 0) -> None:
    """An :class:`~invdiff.interfaces.Objective` keeps its contract, on the built-in
    linear-Gaussian problem (4 x 4 pixels) in place of a network:

    * ``draw``: levels ``(B,)`` inside the ladder and noise shaped like x, the same for the
      same generator state;
    * ``terms``: ``(B,)``, finite, non-negative, a gradient reaching the score's parameters;
    * the exact noised posterior score (the minimiser of every valid objective) has a lower
      mean loss than the same score scaled by 0.7 or 1.3 or shifted, on the same draws (an
      independent truth: the objective is minimised by the right score, not merely small).
    """
    from invdiff.reference import make_problem
    from invdiff.training import TrainingConfig

    prob = make_problem(n=4, noise_level=0.2, mask_fraction=1.0)
    exact = prob.posterior.score_fn()
    g = _gen(seed, "cpu")
    x = prob.prior.sample(n, generator=g)
    y = prob.noise_model(prob.forward_model(x), generator=g)
    sigmas = torch.logspace(1, -1.5, 12)
    objective.prepare(_ScaledScore(exact, 1.0), config or TrainingConfig())
    sigma, z = objective.draw(x, sigmas, _gen(seed + 1, "cpu"))
    again = objective.draw(x, sigmas, _gen(seed + 1, "cpu"))
    assert sigma.shape == (n,) and z.shape == x.shape, "draw gives sigma (B,) and z like x"
    assert torch.equal(sigma, again[0]) and torch.equal(z, again[1]), "draw is not seeded"
    tol = 1e-4 * float(sigmas[0])
    assert bool((sigma <= sigmas[0] + tol).all() & (sigma >= sigmas[-1] - tol).all()), (
        "draw gives levels outside the ladder")
    net = _ScaledScore(exact, 1.0)
    terms = objective.terms(net, x, y, sigma, z)
    assert terms.shape == (n,), f"terms must be (B,), got {tuple(terms.shape)}"
    _assert_finite(terms, "terms")
    assert bool((terms >= 0).all()), "terms must be non-negative"
    terms.mean().backward()
    assert net.scale.grad is not None and torch.isfinite(net.scale.grad), (
        "no gradient reaches the net through terms")
    with torch.no_grad():
        best = float(objective.terms(exact, x, y, sigma, z).mean())
        for wrong in (_ScaledScore(exact, 0.7), _ScaledScore(exact, 1.3),
                      _ScaledScore(exact, 1.0, shift=0.3)):
            worse = float(objective.terms(wrong, x, y, sigma, z).mean())
            assert worse > best, (f"the exact score's loss {best:.4g} is not below a wrong "
                                  f"score's {worse:.4g}: the objective does not fit scores")


class _ScaledScore(torch.nn.Module):
    """``scale * score(x, y, sigma) + shift / sigma``: a score with one trainable parameter."""

    def __init__(self, score: Any, scale: float, shift: float = 0.0) -> None:
        super().__init__()
        self.score, self.shift = score, shift
        self.scale = torch.nn.Parameter(torch.tensor(float(scale)))

    def forward(self, x: torch.Tensor, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = sigma.reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)
        return self.scale * self.score(x, y, sigma).to(x.dtype) + self.shift / s
