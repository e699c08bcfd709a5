"""Simulation: reproducibility, workers, resume after a crash, NaN filtering, files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import invdiff
from invdiff.errors import DataError
from invdiff.reference import make_problem


@pytest.fixture(scope="module")
def prob():
    return make_problem(n=6, mask_fraction=0.8)


def sim(prob, **kw):
    kw.setdefault("progress", False)
    return invdiff.simulate(prob.prior, prob.forward_model, prob.noise_model, **kw)


def test_seeded_and_independent_of_workers(prob):
    a = sim(prob, n=50, chunk_size=8, seed=3)
    b = sim(prob, n=50, chunk_size=8, seed=3, workers=2)
    c = sim(prob, n=50, chunk_size=8, seed=4)
    assert len(a) == 50 and a.x.shape == (50, 1, 6, 6) and a.y.shape == (50, 1, 6, 6)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)
    # y really is forward + noise of x
    assert torch.allclose(a.y_clean, prob.forward_model(a.x), atol=1e-6)
    resid = (a.y - a.y_clean).std()
    assert resid == pytest.approx(prob.noise_model.std, rel=0.1)
    # normalisation statistics are those of the data
    assert torch.allclose(a.normalization.x_mean, a.x.mean().reshape(1), atol=1e-6)
    assert torch.allclose(a.normalization.y_std, a.y.std().reshape(1), rtol=1e-4)


def test_per_pixel_y_normalisation():
    """Per-pixel y statistics: each normalised pixel has mean 0 and std 1 over the data (a
    ramp shared by all y is removed); a pixel that never varies is centred, not divided by 0;
    x's statistics are untouched; the statistics survive a state_dict round trip."""
    from invdiff.data import Normalization

    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0, 5, 6).view(1, 1, 1, 6)
    y = ramp + 0.1 * torch.randn(400, 2, 4, 6, generator=g)
    y[:, 1, 0, 0] = 3.0  # a clamped pixel
    x = torch.randn(400, 1, 4, 4, generator=g)
    base = Normalization.fit(x, y)
    norm = base.with_y_per_pixel(y)
    assert norm.y_mean.shape == norm.y_std.shape == (2, 4, 6)
    yn = norm.normalize_y(y)
    varying = torch.ones(2, 4, 6, dtype=torch.bool)
    varying[1, 0, 0] = False
    assert yn.mean(0).abs().max() < 1e-5
    assert torch.allclose(yn.std(0)[varying], torch.ones(()), atol=1e-5)
    assert torch.isfinite(yn).all() and yn[:, 1, 0, 0].abs().max() < 1e-4
    assert torch.allclose(norm.denormalize_y(yn), y, atol=1e-5)
    assert torch.equal(norm.x_mean, base.x_mean) and torch.equal(norm.x_std, base.x_std)
    back = Normalization.from_state_dict(norm.state_dict())
    assert torch.equal(back.normalize_y(y[:3]), norm.normalize_y(y[:3]))
    # per channel, the shared ramp dominates: the noise is a small ripple (0.1 / ~1.7)
    assert float(base.normalize_y(y)[:, 0].std(0).mean()) < 0.1


def test_log_x_normalisation():
    """x_transform = "log": normalised x is standardised log x (mean 0, std 1 per channel),
    denormalize_x returns x (positive), y's statistics are untouched, the flag survives a
    state_dict round trip and an old state without it loads as the identity transform;
    a non-positive or non-finite x is refused with a message naming the setting."""
    from invdiff.data import Normalization

    g = torch.Generator().manual_seed(0)
    x = torch.exp(0.5 + 0.8 * torch.randn(500, 2, 4, 4, generator=g))
    y = torch.randn(500, 3, 4, 4, generator=g)
    base = Normalization.fit(x, y)
    norm = base.with_x_log(x)
    xn = norm.normalize_x(x)
    per_channel = xn.transpose(0, 1).reshape(2, -1)
    assert torch.allclose(per_channel.mean(1), torch.zeros(2), atol=1e-5)
    assert torch.allclose(per_channel.std(1), torch.ones(2), atol=1e-5)
    assert torch.allclose(norm.x_mean, torch.tensor([0.5, 0.5]), atol=0.05)
    assert torch.allclose(norm.x_std, torch.tensor([0.8, 0.8]), atol=0.05)
    assert torch.allclose(norm.denormalize_x(xn), x, rtol=1e-5)
    assert bool((norm.denormalize_x(torch.full((1, 2, 4, 4), -30.0)) > 0).all())
    assert torch.equal(norm.y_mean, base.y_mean) and torch.equal(norm.y_std, base.y_std)
    assert norm.with_y_per_pixel(y).x_log  # the two refits compose
    back = Normalization.from_state_dict(norm.state_dict())
    assert back.x_log and torch.equal(back.normalize_x(x[:3]), xn[:3])
    assert "x_log" not in base.state_dict()
    assert not Normalization.from_state_dict(base.state_dict()).x_log
    for bad in (x - 2.0, x.masked_fill(x > 3, float("inf"))):
        with pytest.raises(DataError, match="x_transform = 'log' needs a positive"):
            base.with_x_log(bad)


class CrashAfter:
    """A forward model that raises on its k-th call (an interrupted run)."""

    def __init__(self, inner, k):
        self.inner, self.k, self.calls = inner, k, 0

    def output_shape(self, s):
        return self.inner.output_shape(s)

    def __call__(self, x):
        self.calls += 1
        if self.calls == self.k:
            raise KeyboardInterrupt("simulated crash")
        return self.inner(x)


def test_resume_after_crash_gives_identical_data(prob, tmp_path):
    path = tmp_path / "data.npz"
    full = sim(prob, n=40, chunk_size=8, seed=1)
    crashing = CrashAfter(prob.forward_model, 4)
    with pytest.raises(KeyboardInterrupt):
        invdiff.simulate(prob.prior, crashing, prob.noise_model, n=40, chunk_size=8, seed=1,
                         path=path, progress=False, spec="same")
    parts = sorted((tmp_path / "data.npz.parts").glob("chunk_*.npz"))
    assert len(parts) == 3 and not path.exists()
    counting = CrashAfter(prob.forward_model, 10**9)
    resumed = invdiff.simulate(prob.prior, counting, prob.noise_model, n=40, chunk_size=8,
                               seed=1, path=path, progress=False, spec="same")
    assert counting.calls == 2  # only the 2 missing chunks were simulated
    assert torch.equal(resumed.x, full.x) and torch.equal(resumed.y, full.y)
    assert path.exists() and not (tmp_path / "data.npz.parts").exists()
    loaded = invdiff.load_dataset(path)
    assert torch.equal(loaded.x, full.x) and torch.equal(loaded.y_clean, full.y_clean)
    assert torch.equal(loaded.normalization.x_std, full.normalization.x_std)
    # a rerun with the same settings just loads the file
    again = invdiff.simulate(prob.prior, CrashAfter(prob.forward_model, 1), prob.noise_model,
                             n=40, chunk_size=8, seed=1, path=path, progress=False, spec="same")
    assert torch.equal(again.x, full.x)


def test_other_settings_do_not_mix(prob, tmp_path):
    path = tmp_path / "d.npz"
    sim(prob, n=10, chunk_size=5, seed=0, path=path, spec="a")
    with pytest.raises(DataError, match="other settings"):
        sim(prob, n=10, chunk_size=5, seed=1, path=path, spec="a")


class NaNSometimes:
    """Returns NaN for every sample whose first pixel is negative."""

    def __init__(self, inner):
        self.inner = inner

    def output_shape(self, s):
        return self.inner.output_shape(s)

    def __call__(self, x):
        y = self.inner(x).clone()
        y[x[:, 0, 0, 0] < 0] = float("nan")
        return y


def test_non_finite_pairs_are_dropped_and_counted(prob):
    ds = invdiff.simulate(prob.prior, NaNSometimes(prob.forward_model), prob.noise_model,
                          n=64, chunk_size=16, seed=0, progress=False)
    ref = sim(prob, n=64, chunk_size=16, seed=0)
    keep = ref.x[:, 0, 0, 0] >= 0
    assert ds.meta["dropped"] == int((~keep).sum()) > 0
    assert len(ds) == int(keep.sum())
    assert torch.equal(ds.x, ref.x[keep])
    assert torch.isfinite(ds.y).all()


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match="invdiff simulate"):
        invdiff.load_dataset(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable"):
        invdiff.load_dataset(bad)
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(DataError, match="lacks arrays"), pytest.warns(UserWarning,
                                                                       match="no checksum"):
        invdiff.load_dataset(tmp_path / "other.npz")
