"""Per-example dropout (hbacli.nets.dropout) and AlexNet's dropout sites, measured: the fraction
of dropped elements per example against its rate, the surviving values, the mean over draws,
eval mode and zero rates as the identity, and the errors of bad rates and site names."""

from __future__ import annotations

import math

import pytest
import torch

from hbacli.errors import HbaError
from hbacli.nets.alexnet import DROPOUT_SITES, AlexNet
from hbacli.nets.dropout import (
    RateDropout,
    dropout_rates,
    dropout_sites,
    per_example_dropout,
    set_dropout_rates,
)

RATES = torch.tensor([0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.2, 0.6])


def assert_dropped_fraction(zeros: int, total: int, rate: float, what: str = "") -> None:
    """A binomial count of zeros within 4 standard deviations of total·rate."""
    if rate == 0:
        assert zeros == 0, what
        return
    sd = math.sqrt(total * rate * (1 - rate))
    assert abs(zeros - total * rate) <= 4 * sd, (what, zeros / total, rate)


def site(rates, p: float = 0.5, channelwise: bool = False) -> RateDropout:
    module = RateDropout(p, "s", channelwise).train()
    module.rates = rates
    return module


def test_each_example_drops_elements_at_its_own_rate():
    torch.manual_seed(0)
    out = site(RATES)(torch.ones(8, 64, 32, 32))
    for i, rate in enumerate(RATES.tolist()):
        dropped = out[i] == 0
        assert_dropped_fraction(int(dropped.sum()), dropped.numel(), rate, f"example {i}")
        survivors = out[i][~dropped]
        torch.testing.assert_close(survivors, torch.full_like(survivors, 1 / (1 - rate)))


def test_channelwise_dropout_drops_whole_channels_at_each_examples_rate():
    torch.manual_seed(1)
    x = torch.rand(8, 4096, 3, 3) + 0.5           # no zeros of its own
    out = site(RATES, channelwise=True)(x)
    ratio = out / x
    # one value per (example, channel): 0 or 1/(1 − r)
    per_channel = ratio.flatten(2)
    assert torch.allclose(per_channel, per_channel[..., :1].expand_as(per_channel))
    for i, rate in enumerate(RATES.tolist()):
        dropped = per_channel[i, :, 0] == 0
        assert_dropped_fraction(int(dropped.sum()), dropped.numel(), rate, f"example {i}")
        kept = per_channel[i, ~dropped, 0]
        torch.testing.assert_close(kept, torch.full_like(kept, 1 / (1 - rate)))


@pytest.mark.parametrize("channelwise", [False, True])
def test_the_mean_over_draws_is_the_input(channelwise):
    """Inverted dropout: E[output] = input, per example, whatever its rate."""
    torch.manual_seed(2)
    x = torch.randn(4, 16, 8, 8)
    rates = torch.tensor([0.1, 0.5, 0.8, 0.3])
    draws = 2000
    total = torch.zeros_like(x)
    module = site(rates, channelwise=channelwise)
    for _ in range(draws):
        total += module(x)
    mean = total / draws
    # each draw's element has variance x²·r/(1 − r); 5.5 standard deviations of the mean
    sd = x.abs() * (rates / (1 - rates)).sqrt().view(-1, 1, 1, 1) / math.sqrt(draws)
    assert ((mean - x).abs() <= 5.5 * sd + 1e-6).all()


def test_eval_mode_and_zero_rates_are_the_identity():
    x = torch.randn(8, 16, 4, 4)
    assert site(RATES).eval()(x) is x
    assert site(RATES, channelwise=True).eval()(x) is x
    assert site(0.0)(x) is x
    assert site(None, p=0.0, channelwise=True)(x) is x
    assert torch.equal(site(torch.zeros(8))(x), x)      # a tensor of zeros keeps everything


@pytest.mark.parametrize("channelwise", [False, True])
def test_no_rates_use_p_and_a_float_is_every_examples_rate(channelwise):
    torch.manual_seed(3)
    x = torch.ones(16, 2048, 2, 2)

    def dropped(module: RateDropout) -> tuple[int, int]:
        zeros = module(x) == 0
        if channelwise:
            zeros = zeros[:, :, 0, 0]
        return int(zeros.sum()), zeros.numel()

    assert_dropped_fraction(*dropped(site(None, p=0.3, channelwise=channelwise)), 0.3)
    assert_dropped_fraction(*dropped(site(0.75, p=0.3, channelwise=channelwise)), 0.75)
    assert_dropped_fraction(*dropped(site(0.05, p=0.3, channelwise=channelwise)), 0.05)


def test_channelwise_float_rate_on_flat_activations():
    torch.manual_seed(4)
    out = site(0.4, channelwise=True)(torch.ones(64, 256, 5))
    per_channel = out[..., 0]
    assert torch.equal(out, per_channel[..., None].expand_as(out))
    assert_dropped_fraction(int((per_channel == 0).sum()), per_channel.numel(), 0.4)


def test_rates_get_no_gradient_and_the_input_gets_the_mask():
    torch.manual_seed(5)
    rates = RATES.clone().requires_grad_()
    x = torch.randn(8, 32, requires_grad=True)
    out = site(rates)(x)
    out.sum().backward()
    assert rates.grad is None
    torch.testing.assert_close(x.grad, out.detach() / x.detach())


def test_a_generator_makes_the_masks_reproducible():
    x = torch.ones(8, 100)
    one = per_example_dropout(x, RATES, generator=torch.Generator().manual_seed(7))
    two = per_example_dropout(x, RATES, generator=torch.Generator().manual_seed(7))
    assert torch.equal(one, two)


def test_bad_rates_and_sites_are_refused_in_one_line():
    model = AlexNet(10)
    with pytest.raises(HbaError, match=r"unknown dropout site 'nope' .*dropout0.*fcdropout1"):
        set_dropout_rates(model, {"nope": 0.1})
    for bad in (1.0, -0.1, True, "0.1"):
        with pytest.raises(HbaError, match=r"dropout rate of site 'dropout2'.*\[0, 1\)"):
            set_dropout_rates(model, {"dropout0": 0.2, "dropout2": bad})
    assert model.conv_dropouts[0].rates is None          # nothing set by the refused call
    with pytest.raises(HbaError, match="floating \\(N,\\) tensor"):
        set_dropout_rates(model, {"dropout1": torch.zeros(4, 1)})
    with pytest.raises(HbaError, match="rate of site 'x'"):
        RateDropout(1.0, "x", channelwise=False)
    module = site(torch.full((5,), 0.1))
    with pytest.raises(HbaError, match="site 's' holds 5 rates for a batch of 4 examples"):
        module(torch.ones(4, 3))
    with pytest.raises(HbaError, match="one rate per example: 4 for this batch"):
        per_example_dropout(torch.ones(4, 3), torch.zeros(3))
    twice = torch.nn.Sequential(RateDropout(0.1, "a", False), RateDropout(0.1, "a", True))
    with pytest.raises(HbaError, match="share the site name 'a'"):
        dropout_sites(twice)
    messages = []
    for call in (lambda: set_dropout_rates(model, {"nope": 0.1}),
                 lambda: module(torch.ones(4, 3))):
        with pytest.raises(HbaError) as caught:
            call()
        messages.append(str(caught.value))
    assert all("\n" not in message for message in messages)


def test_the_context_manager_restores_the_previous_rates():
    model = AlexNet(10)
    set_dropout_rates(model, {"fcdropout1": 0.25})
    rates = torch.full((4,), 0.2)
    with dropout_rates(model, {"dropout3": rates, "fcdropout1": 0.5}):
        sites = dropout_sites(model)
        assert sites["dropout3"].rates is rates and sites["fcdropout1"].rates == 0.5
    assert sites["dropout3"].rates is None and sites["fcdropout1"].rates == 0.25
    with pytest.raises(RuntimeError), dropout_rates(model, {"dropout0": 0.1}):
        raise RuntimeError("inside")
    assert sites["dropout0"].rates is None


def test_extra_repr_names_the_site():
    text = repr(RateDropout(0.3, "dropout0", channelwise=True))
    assert text == "RateDropout(p=0.3, site='dropout0', channelwise=True)"


# --- AlexNet -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def four_images(cifar_slice) -> torch.Tensor:
    x = torch.from_numpy(cifar_slice["train_images"][::50][:4]).float() / 255
    return (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)


def test_alexnet_has_stns_seven_dropout_sites_in_order():
    assert DROPOUT_SITES == ("dropout0", "dropout1", "dropout2", "dropout3", "dropout4",
                             "fcdropout0", "fcdropout1")
    sites = dropout_sites(AlexNet(10))
    assert tuple(sites) == DROPOUT_SITES
    assert [m.p for m in sites.values()] == [0.3] * 5 + [0.4] * 2
    assert [m.channelwise for m in sites.values()] == [True] * 5 + [False] * 2
    custom = dropout_sites(AlexNet(10, conv_dropout=(0.1, 0.2, 0.3, 0.4, 0.5),
                                   fc_dropout=(0.6, 0.7)))
    assert [m.p for m in custom.values()] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]


def test_alexnet_trains_with_per_example_rates(four_images):
    torch.manual_seed(0)
    model = AlexNet(10).train()
    rates = {name: torch.tensor([0.0, 0.3, 0.6, 0.9]) for name in DROPOUT_SITES}
    with dropout_rates(model, rates):
        logits = model(four_images)
    assert logits.shape == (4, 10) and torch.isfinite(logits).all()
    logits.logsumexp(1).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    with pytest.raises(HbaError, match="site 'dropout0' holds 4 rates for a batch of 2"), \
            dropout_rates(model, rates):
        model(four_images[:2])


def test_alexnet_with_zero_rates_in_train_mode_is_its_eval_mode(four_images):
    torch.manual_seed(1)
    model = AlexNet(10)
    expected = model.eval()(four_images)
    model.train()
    assert not torch.equal(model(four_images), expected)        # the default rates drop
    for zero in (torch.zeros(4), 0.0):
        with dropout_rates(model, dict.fromkeys(DROPOUT_SITES, zero)):
            assert torch.equal(model(four_images), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_per_example_dropout_on_cuda_without_host_sync():
    x = torch.ones(8, 512, 4, 4, device="cuda")
    module = site(RATES.cuda(), channelwise=True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = module(x)
        elementwise = per_example_dropout(x, RATES.cuda(),
                                          generator=torch.Generator("cuda").manual_seed(0))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.device == x.device and out.dtype == x.dtype
    for i, rate in enumerate(RATES.tolist()):
        assert_dropped_fraction(int((out[i, :, 0, 0] == 0).sum()), 512, rate)
        assert_dropped_fraction(int((elementwise[i] == 0).sum()), elementwise[i].numel(), rate)
