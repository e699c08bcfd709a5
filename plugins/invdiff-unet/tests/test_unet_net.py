"""Tests of the conditional U-Net: contract, EDM/NCSN output maths, attention, errors, learning."""

from __future__ import annotations

import math

import pytest
import torch
from invdiff_unet.layers import AttentionBlock
from invdiff_unet.net import ConditionalUNet

import invdiff
from invdiff.errors import ConfigError
from invdiff.scorenet import FourierEmbedding
from invdiff.testing import check_same_on_device, check_score_net
from invdiff.testing.scorenet import (
    GaussianToy,
    check_imports_torch_free,
    check_input_errors,
    check_switches,
    learned_error_ratios,
)

TINY = dict(base_width=8, channel_mult=(1, 2), num_res_blocks=1, attention_heads=2,
            norm_groups=4)


def tiny(x_shape=(1, 8, 8), y_shape=(1, 8, 8), **kw) -> ConditionalUNet:
    torch.manual_seed(0)
    return ConditionalUNet(x_shape, y_shape, **{**TINY, **kw})


def randomise_output_layer(net: ConditionalUNet) -> None:
    """The last conv starts at zero (F = 0); give it weights so that F carries information."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # copy_, not normal_: normal_ fills in memory order (channels_last!)
        for p in (net.conv_out.weight, net.conv_out.bias):
            p.copy_(0.3 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize(
    "x_shape, y_shape, kw",
    [((1, 8, 8), (1, 8, 8), {}),
     ((2, 8, 12), (3, 4, 6), {"output": "ncsn"}),                       # y on a coarser grid
     ((1, 8, 8), (2, 9, 9), {"channel_mult": (1, 2, 2), "attention_levels": (1, 2)}),
     ((1, 4, 4), (1, 4, 4), {"channel_mult": (1,), "attention_levels": ()}),
     ((1, 8, 8), (2, 9, 9), {"channel_mult": (1, 2, 2), "y_every_level": True})],
)
def test_contract(x_shape, y_shape, kw, torch_device):
    net = tiny(x_shape, y_shape, **kw)
    randomise_output_layer(net)  # so the batch-consistency check compares non-trivial outputs
    out = check_score_net(net, device=torch_device)
    assert out.shape[1:] == x_shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_matches_cpu():
    """The same weights score alike on CUDA and on the CPU (forward and gradients), attention
    included (SDPA picks another kernel on CUDA)."""
    net = tiny((1, 16, 16), (2, 8, 8), channel_mult=(1, 2, 2), attention_levels=(1, 2),
               y_every_level=True)
    randomise_output_layer(net)
    check_same_on_device(net, "cuda")


def test_registry_builds_it():
    net = invdiff.create("score_net", "unet", x_shape=(1, 8, 8), y_shape=(2, 4, 4), **TINY)
    assert isinstance(net, ConditionalUNet) and net.output == "edm"
    with pytest.raises(ConfigError, match="output"):
        invdiff.create("score_net", "unet", x_shape=(1, 8, 8), y_shape=(1, 8, 8), output="vp")


def test_edm_starts_at_the_prior_score():
    """F = 0 at initialisation, so s = -x / (1 + sigma^2): the score of N(0, I) data."""
    net = tiny().eval()
    x, y = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    sigma = torch.tensor([0.01, 0.3, 1.0, 20.0])
    with torch.no_grad():
        out = net(x, y, sigma)
    torch.testing.assert_close(out, -x / (1 + sigma.view(-1, 1, 1, 1) ** 2))


def test_edm_score_is_the_textbook_formula():
    """s = (D - x) / sigma^2 with D = c_skip x + c_out F(c_in x, y, ln(sigma) / 4), in float64,
    against the net's cancellation-free form."""
    net = tiny().double().eval()
    randomise_output_layer(net)
    x, y = torch.randn(3, 1, 8, 8).double(), torch.randn(3, 1, 8, 8).double()
    sigma = torch.tensor([0.05, 1.0, 7.0]).double()
    s = sigma.view(-1, 1, 1, 1)
    with torch.no_grad():
        f = net.run_body(x / torch.sqrt(1 + s**2), y, sigma.log() / 4)
        d = x / (1 + s**2) + s / torch.sqrt(1 + s**2) * f
        torch.testing.assert_close(net(x, y, sigma), (d - x) / s**2)
        assert f.abs().mean() > 0.05  # F is not trivially zero


def test_ncsn_output_is_f_over_sigma():
    net = tiny(output="ncsn").double().eval()
    randomise_output_layer(net)
    x, y = torch.randn(2, 1, 8, 8).double(), torch.randn(2, 1, 8, 8).double()
    sigma = torch.tensor([0.1, 3.0]).double()
    with torch.no_grad():
        f = net.run_body(x, y, sigma.log() / 4)
        torch.testing.assert_close(net(x, y, sigma), f / sigma.view(-1, 1, 1, 1))


def test_attention_matches_naive_softmax():
    """The einops/SDPA attention block against a loop over heads with an explicit softmax."""
    torch.manual_seed(0)
    block = AttentionBlock(8, heads=2, groups=4)
    with torch.no_grad():
        block.proj.weight.normal_(0, 0.2)
    h = torch.randn(2, 8, 3, 5)
    with torch.no_grad():
        q, k, v = block.qkv(block.norm(h)).flatten(2).chunk(3, dim=1)  # (B, C, N) each
        heads = []
        for i in range(2):
            sl = slice(4 * i, 4 * (i + 1))
            w = torch.softmax(q[:, sl].transpose(1, 2) @ k[:, sl] / math.sqrt(4), dim=-1)
            heads.append(v[:, sl] @ w.transpose(1, 2))  # (B, d, N)
        want = h + block.proj(torch.cat(heads, dim=1).view(2, 8, 3, 5))
        torch.testing.assert_close(block(h), want, rtol=1e-5, atol=1e-5)


def test_noise_embedding_tells_sigmas_apart():
    """Fourier features of ln(sigma) / 4: nearby sigmas give nearby inputs to the MLP, and a
    sigma ratio of 5 % already moves the highest frequency by 100 * ln(1.05) / 4 = 1.2 rad."""
    emb = FourierEmbedding(16)
    c = torch.log(torch.tensor([1.0, 1.05])) / 4
    phase = c[:, None] * emb.freqs[None, :]
    assert emb.freqs[0] == 1 and abs(float(emb.freqs[-1]) - 100) < 1e-3
    assert abs(float(phase[1, -1] - phase[0, -1]) - 100 * math.log(1.05) / 4) < 1e-4
    assert emb(c).shape == (2, 16)


def test_wrong_inputs_raise_data_error():
    check_input_errors(tiny((1, 8, 8), (2, 4, 4)))


@pytest.mark.parametrize(
    "kw, match",
    [({"x_shape": (1, 6, 8), "channel_mult": (1, 2, 2)}, "divisible by 4"),
     ({"norm_groups": 3}, "norm_groups"),
     ({"attention_levels": (5,)}, "attention level"),
     ({"attention_heads": 3}, "attention_heads"),
     ({"x_shape": (1, 8)}, "x_shape")],
)
def test_bad_settings_are_config_errors(kw, match):
    args = {"x_shape": (1, 8, 8), "y_shape": (1, 8, 8), **TINY, **kw}
    with pytest.raises(ConfigError, match=match):
        ConditionalUNet(**args)


def test_attention_levels_are_where_asked():
    def n_attn(net):
        return sum(isinstance(m, AttentionBlock) for m in net.modules())

    assert n_attn(tiny(attention_levels=())) == 0
    # default: the coarsest level (1 encoder + 2 decoder blocks) and the middle block
    assert n_attn(tiny()) == 1 + 2 + 1


def test_y_every_level_starts_as_the_plain_net_and_feeds_y_to_coarse_levels():
    """With the plain net's weights the extra y paths (zero at init) change nothing; once they
    carry weights, y reaches the coarse levels through them: the output moves, except for a
    zero measurement, which the linear y paths map to zero."""
    plain = tiny((1, 8, 8), (1, 8, 8), channel_mult=(1, 2, 2))
    wide = tiny((1, 8, 8), (1, 8, 8), channel_mult=(1, 2, 2), y_every_level=True)
    randomise_output_layer(plain)
    missing, unexpected = wide.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith(("y_down.", "y_up."))
                                              for k in missing)
    assert len(wide.y_down) == len(wide.y_up) == 2  # levels 1 and 2, in both paths
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(2, 1, 8, 8, generator=g), torch.randn(2, 1, 8, 8, generator=g)
    sigma = torch.tensor([0.5, 2.0])
    with torch.no_grad():
        torch.testing.assert_close(wide(x, y, sigma), plain(x, y, sigma))
        for conv in [*wide.y_down, *wide.y_up]:
            conv.weight.copy_(0.2 * torch.randn(conv.weight.shape, generator=g))
        assert (wide(x, y, sigma) - plain(x, y, sigma)).abs().max() > 1e-3
        # a measurement of zero adds nothing through the (bias-free at init) y paths
        zero = torch.zeros_like(y)
        torch.testing.assert_close(wide(x, zero, sigma), plain(x, zero, sigma))


def test_y_every_level_learns_gaussian_posterior_score():
    toy = GaussianToy(shape=(1, 8, 8))
    net = tiny(toy.shape, toy.shape, y_every_level=True)
    vs_zero, vs_prior = learned_error_ratios(net, toy, steps=100, batch=16, lr=3e-3)
    assert vs_zero < 0.2 and vs_prior < 0.4, (vs_zero, vs_prior)


def test_speed_switches_agree():
    def make(**kw):
        net = tiny((1, 8, 8), (2, 4, 4), **kw)
        randomise_output_layer(net)
        return net

    check_switches(make)


def test_learns_gaussian_posterior_score(torch_device):
    """100 DSM steps on the Gaussian toy (closed-form noised posterior score). EDM starts at
    the prior score -x / (1 + sigma^2), which ignores y; the trained net must beat it well."""
    toy = GaussianToy(shape=(1, 8, 8))
    net = tiny(toy.shape, toy.shape).to(torch_device)
    vs_zero, vs_prior = learned_error_ratios(net, toy, steps=100, batch=16, lr=3e-3)
    # measured 0.05-0.07 and 0.10-0.14 (net seeds 0, 1, 2)
    assert vs_zero < 0.2 and vs_prior < 0.4, (vs_zero, vs_prior)


def test_plugin_import_is_torch_free():
    check_imports_torch_free("invdiff_unet", "invdiff_unet.plugin", "invdiff_unet.params")
