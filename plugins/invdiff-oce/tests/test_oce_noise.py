"""The OCT phase noise: its circular statistics against the closed form, the speckle and depth
SNR map, the strain decorrelation, wrapping, the contract kit and the errors."""

import math

import numpy as np
import pytest
import torch
from invdiff_oce.circular import circular_std, difference_resultant, phase_resultant
from invdiff_oce.noise import OCEPhaseNoise
from invdiff_oce.phase import wrap

import invdiff
from invdiff.errors import ConfigError, DataError
from invdiff.testing import check_noise_model


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_closed_form_resultant_limits_and_quadrature():
    """R1 against direct numerical integration of E[cos arg(1 + n)], n ~ CN(0, 1/SNR), on a polar
    grid (independent of the Bessel formula), and its limits 1 - 1/(4 SNR) and 0."""
    for snr in (0.5, 2.0, 10.0):
        r = np.linspace(0, 1 + 12 / math.sqrt(snr), 1501)
        t = np.linspace(-math.pi, math.pi, 1001)
        rr, tt = np.meshgrid(r, t, indexing="ij")
        # density of n = r e^{it}: SNR / pi exp(-SNR r^2), area element r dr dt
        dens = snr / math.pi * np.exp(-snr * rr**2) * rr
        cos_arg = (1 + rr * np.cos(tt)) / np.hypot(1 + rr * np.cos(tt), rr * np.sin(tt))
        quad = np.trapezoid(np.trapezoid(dens * cos_arg, t, axis=1), r)
        assert phase_resultant(snr) == pytest.approx(quad, rel=2e-3)
    assert phase_resultant(1e4) == pytest.approx(1 - 1 / 4e4, rel=1e-7)
    assert phase_resultant(1e-6) < 2e-3
    assert difference_resultant(5.0, 20.0) == pytest.approx(
        phase_resultant(5.0) * phase_resultant(20.0))


@pytest.mark.parametrize("snr", [0.5, 2.0, 10.0, 100.0, 1000.0])
def test_circular_std_of_the_error_matches_the_closed_form(snr):
    """Uniform SNR (no speckle, no attenuation, no decorrelation): the circular std of 40 000
    phase errors equals sqrt(-2 ln R1(SNR)^2); above SNR 100 it is 1/sqrt(SNR) within 1%."""
    noise = OCEPhaseNoise(snr0=snr, snr_drop_db=0, speckle=False, decorrelation=False)
    y0 = torch.zeros(100, 1, 20, 20, dtype=torch.float64)
    d = noise.draw(y0, _gen(1))
    torch.testing.assert_close(d["snr"], torch.full_like(y0, snr))
    measured = circular_std(d["error"]).item()
    r = difference_resultant(snr, snr).item()
    expected = math.sqrt(-2 * math.log(r))
    # relative standard error of a circular std from n = 40 000 draws: ~ 1/sqrt(2 n) = 0.35% at a
    # high SNR, more at a low one (measured deviations: 0.2-0.5%); 2% is >= 4 standard errors
    assert measured == pytest.approx(expected, rel=0.02)
    if snr >= 100:
        assert expected == pytest.approx(1 / math.sqrt(snr), rel=0.01)
    assert abs(torch.sin(d["error"]).mean().item()) < 4 * math.sqrt(0.5 / d["error"].numel())


def test_full_model_errors_follow_the_per_pixel_closed_form():
    """With speckle, depth attenuation and strain decorrelation on, E[cos e | SNR, rho] =
    R1(SNR) R1(rho^2 / (1 - rho^2 + 1 / SNR)) pixel by pixel: the mean of cos e - R over many
    pixels is zero within its standard error, in every SNR quartile."""
    noise = OCEPhaseNoise(snr0=30.0, snr_drop_db=10.0, window_pixels=3.0)
    depth = torch.linspace(0, 1, 16, dtype=torch.float64).view(1, 1, 16, 1)
    y0 = wrap(-8.0 * depth * torch.linspace(0.5, 1.5, 16, dtype=torch.float64)).expand(
        200, 1, 16, 16)
    d = noise.draw(y0, _gen(2))
    snr, rho = d["snr"].numpy(), d["rho"].numpy()
    assert rho.min() < 0.9  # decorrelation is active in this setting
    r = difference_resultant(snr, rho**2 / (1 - rho**2 + 1 / snr))
    resid = np.cos(d["error"].numpy()) - r
    quartile = np.digitize(snr, np.quantile(snr, [0.25, 0.5, 0.75]))
    for q in range(4):
        sel = resid[quartile == q]
        assert abs(sel.mean()) < 4 * sel.std() / math.sqrt(sel.size), f"SNR quartile {q}"


def test_snr_map_speckle_and_depth_attenuation():
    """Unsmoothed speckle: SNR / mean SNR(row) ~ Exp(1) (mean 1, variance 1, P(> 1) = 1/e);
    mean SNR falls by snr_drop_db from the first to the last row centre (scaled by depth)."""
    h, drop = 32, 10.0
    noise = OCEPhaseNoise(snr0=200.0, snr_drop_db=drop, speckle_smoothing=0.0, snr_floor=1e-9)
    y0 = torch.zeros(200, 1, h, 32, dtype=torch.float64)
    d = noise.draw(y0, _gen(3))
    mean_row = noise.mean_snr(h, y0).view(1, 1, h, 1)
    s = (d["snr"] / mean_row).flatten()
    assert s.mean().item() == pytest.approx(1.0, abs=0.01)
    assert s.var().item() == pytest.approx(1.0, abs=0.03)
    assert (s > 1).double().mean().item() == pytest.approx(math.exp(-1), abs=0.01)
    ratio_db = 10 * math.log10(mean_row[0, 0, 0, 0] / mean_row[0, 0, -1, 0])
    assert ratio_db == pytest.approx(drop * (h - 1) / h)
    assert mean_row[0, 0, 0, 0].item() == pytest.approx(200 * 10 ** (-drop / 10 * 0.5 / h))


def test_smoothed_speckle_keeps_the_mean_and_lowers_the_contrast():
    noise = OCEPhaseNoise(snr0=1.0, snr_drop_db=0.0, speckle_smoothing=1.5, snr_floor=1e-9)
    d = noise.draw(torch.zeros(100, 1, 32, 32, dtype=torch.float64), _gen(4))
    s = d["snr"].flatten()
    assert s.mean().item() == pytest.approx(1.0, abs=0.01)
    assert s.var().item() < 0.2  # averaging ~ 2 pi 1.5^2 speckles: variance ~ 1/14 of Exp(1)


def test_decorrelation_is_the_sinc_of_the_phase_ramp():
    """A phase with a constant slope s rad/pixel: rho = |mean over the window of e^{i t W s}|,
    computed here by direct averaging over the window, equals the model's |sinc(W s / 2)|;
    without decorrelation rho = 1."""
    h, window = 24, 2.0
    for slope in (0.3, 1.0, 2.5):
        y0 = wrap(slope * torch.arange(h, dtype=torch.float64)).view(1, 1, h, 1).expand(1, 1, h, 3)
        rho = OCEPhaseNoise(window_pixels=window).correlation(y0)
        t = (np.arange(100_000) + 0.5) / 100_000 - 0.5  # midpoint rule on U(-1/2, 1/2)
        direct = abs(np.mean(np.exp(1j * t * window * slope)))
        np.testing.assert_allclose(rho.numpy(), direct, rtol=1e-6)
    assert torch.all(OCEPhaseNoise(decorrelation=False).correlation(y0) == 1)


def test_noise_acts_before_wrapping():
    """wrap(wrap(a) + e) = wrap(a + e): the same draw on the wrapped and the unwrapped clean phase
    gives the same measurement (decorrelation off: its gradient is the same either way anyway)."""
    a = torch.linspace(0, 12, 16, dtype=torch.float64).view(1, 1, 16, 1).expand(4, 1, 16, 16)
    noise = OCEPhaseNoise()
    y_unwrapped = noise(a, generator=_gen(5))
    y_wrapped = noise(wrap(a), generator=_gen(5))
    diff = wrap(y_unwrapped - y_wrapped)
    assert diff.abs().max().item() < 1e-9
    assert bool((y_wrapped > -math.pi).all() and (y_wrapped <= math.pi).all())


def test_contract_kit_and_registry():
    y0 = wrap(torch.linspace(0, 9, 12).view(1, 1, 12, 1).expand(3, 1, 12, 12).contiguous())
    y = check_noise_model(OCEPhaseNoise(), y0)
    assert y.dtype == torch.float32
    check_noise_model(invdiff.create("noise_model", "oce-phase-noise", snr0=50.0), y0.double())


def test_bad_inputs_raise_clear_errors():
    noise = OCEPhaseNoise()
    with pytest.raises(DataError, match="phase \\(B, 1, H, W\\) or phasor"):
        noise(torch.zeros(8, 8))
    with pytest.raises(DataError, match="floating point"):
        noise(torch.zeros(1, 1, 4, 4, dtype=torch.int64))
    with pytest.raises(DataError, match="non-finite"):
        noise(torch.full((1, 1, 4, 4), float("inf")))
    with pytest.raises(DataError, match="at least 2 rows"):
        noise(torch.zeros(1, 1, 1, 4))
    with pytest.raises(ConfigError, match="snr0"):
        OCEPhaseNoise(snr0=0.0)
    with pytest.raises(ConfigError, match="snr_drop_db"):
        OCEPhaseNoise(snr_drop_db=-1.0)
    with pytest.raises(ConfigError, match="snr0"):
        invdiff.create("noise_model", "oce-phase-noise", snr0=-3)


def test_phasor_measurements_carry_the_same_draw():
    """A phasor clean image gives the phasor of the very measurement that its phase gives
    under the same seed; the contract kit accepts the 2-channel form."""
    from invdiff_oce.phase import to_phasor

    phi = wrap(torch.linspace(0, 9, 12).view(1, 1, 12, 1).expand(3, 1, 12, 12)).double()
    noise = OCEPhaseNoise()
    y_phase = noise(phi, generator=_gen(4))
    y_phasor = noise(to_phasor(phi), generator=_gen(4))
    assert y_phasor.shape == (3, 2, 12, 12)
    torch.testing.assert_close(y_phasor, to_phasor(y_phase), rtol=0, atol=1e-12)
    check_noise_model(noise, to_phasor(phi).float())
    with pytest.raises(DataError, match="phase \\(B, 1, H, W\\) or phasor"):
        noise(torch.zeros(1, 3, 12, 12))
