"""Hyper-layers against their definition θ(λ) = φ0 + diag(φV λ) φU, and the strategies."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from hbacli.catalogue import STRATEGIES
from hbacli.errors import HbaError
from hbacli.hyper import (
    HyperBatchNorm2d,
    HyperConv2d,
    HyperLayer,
    HyperLinear,
    HyperNetwork,
    to_hypernetwork,
)
from hbacli.nets import build_model

N_HYPER = 7


@pytest.fixture(scope="module")
def images(cifar_slice) -> torch.Tensor:
    """12 real CIFAR-10 images, standardised per channel, float32 N×3×32×32."""
    x = torch.from_numpy(cifar_slice["train_images"][::17][:12]).float() / 255
    return (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)


def lambdas(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, N_HYPER, generator=torch.Generator().manual_seed(seed)) * 2


def theta(hyper: HyperLayer, name: str, lam_i: torch.Tensor) -> torch.Tensor:
    """θ(λ_i) written out from the paper's formula, for one example."""
    base, u, v = (getattr(hyper, f"{name}{suffix}") for suffix in ("", "_u", "_v"))
    scale = v @ lam_i
    return base + scale.view((-1,) + (1,) * (base.dim() - 1)) * u


def hyper_of(layer: nn.Module, strategy: str) -> HyperNetwork:
    torch.manual_seed(1)
    return to_hypernetwork(layer, strategy, N_HYPER)


def train_bn_with_stats(channels: int) -> nn.BatchNorm2d:
    """A BN with non-trivial affine and running statistics, as after some training."""
    bn = nn.BatchNorm2d(channels)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
    return bn


CONV_CASES = {
    "3x3-bias-pad1": dict(in_channels=3, out_channels=8, kernel_size=3, padding=1, bias=True),
    "3x3-nobias-stride2": dict(in_channels=3, out_channels=6, kernel_size=3, stride=2, bias=False),
    "1x1-bias-stride2": dict(in_channels=3, out_channels=5, kernel_size=1, stride=2, bias=True),
    "groups3-dilation2": dict(in_channels=3, out_channels=6, kernel_size=3, padding=2,
                              dilation=2, groups=3, bias=True),
}


# --- the λ-path zeroed gives the plain layer -----------------------------------------------

@pytest.mark.parametrize("case", CONV_CASES)
def test_hyper_conv_with_zero_lambda_is_the_plain_conv(images, case):
    conv = nn.Conv2d(**CONV_CASES[case])
    hyper = hyper_of(conv, "conv")
    assert isinstance(hyper.model, HyperConv2d)
    assert torch.equal(hyper(images, torch.zeros(N_HYPER)), conv(images))
    with torch.no_grad():   # the other way to zero the path: φV = 0, any λ
        hyper.model.weight_v.zero_()
        if hyper.model.bias_v is not None:
            hyper.model.bias_v.zero_()
    assert torch.equal(hyper(images, lambdas(len(images))), conv(images))


@pytest.mark.parametrize("bias", [True, False])
def test_hyper_linear_with_zero_lambda_is_the_plain_linear(images, bias):
    linear = nn.Linear(3 * 32 * 32, 10, bias=bias)
    flat = images.flatten(1)
    hyper = hyper_of(linear, "all")
    assert isinstance(hyper.model, HyperLinear)
    assert torch.equal(hyper(flat, torch.zeros(N_HYPER)), linear(flat))


@pytest.mark.parametrize("training", [True, False])
def test_hyper_bn_with_zero_lambda_is_the_plain_bn(images, training):
    bn = train_bn_with_stats(3)
    hyper = hyper_of(bn, "bn")
    assert isinstance(hyper.model, HyperBatchNorm2d)
    bn.train(training)
    hyper.train(training)
    expected = bn(images)
    got = hyper(images, torch.zeros(N_HYPER))
    # Normalise-then-affine vs. the fused kernel: the same maths, rounding may differ.
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
    # Statistics are the plain layer's, updated the same way.
    assert torch.equal(hyper.model.running_mean, bn.running_mean)
    assert torch.equal(hyper.model.running_var, bn.running_var)
    assert torch.equal(hyper.model.num_batches_tracked, bn.num_batches_tracked)


# --- the batched result equals a loop over examples with their own θ(λ_i) -------------------

@pytest.mark.parametrize("case", CONV_CASES)
def test_hyper_conv_equals_a_loop_over_materialised_weights(images, case):
    conv = nn.Conv2d(**CONV_CASES[case])
    hyper = hyper_of(conv, "conv")
    layer, lam = hyper.model, lambdas(len(images))
    got = hyper(images, lam)
    for i in range(len(images)):
        bias = None if conv.bias is None else theta(layer, "bias", lam[i])
        expected = F.conv2d(images[i:i + 1], theta(layer, "weight", lam[i]), bias, conv.stride,
                            conv.padding, conv.dilation, conv.groups)
        torch.testing.assert_close(got[i:i + 1], expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, conv(images), atol=1e-3)   # λ really changes the output


@pytest.mark.parametrize("bias", [True, False])
def test_hyper_linear_equals_a_loop_over_materialised_weights(images, bias):
    linear = nn.Linear(3 * 32 * 32, 10, bias=bias)
    hyper = hyper_of(linear, "all")
    layer, lam, flat = hyper.model, lambdas(len(images)), images.flatten(1)
    got = hyper(flat, lam)
    for i in range(len(flat)):
        b = theta(layer, "bias", lam[i]) if bias else None
        expected = F.linear(flat[i], theta(layer, "weight", lam[i]), b)
        torch.testing.assert_close(got[i], expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, linear(flat), atol=1e-3)


@pytest.mark.parametrize("training", [True, False])
def test_hyper_bn_equals_a_loop_over_materialised_affines(images, training):
    hyper = hyper_of(train_bn_with_stats(3), "bn")
    hyper.train(training)
    layer, lam = hyper.model, lambdas(len(images))
    if training:   # batch statistics over the whole batch (biased variance), as BN does
        mean, var = images.mean((0, 2, 3)), images.var((0, 2, 3), unbiased=False)
    else:
        mean, var = layer.running_mean.clone(), layer.running_var.clone()
    got = hyper(images, lam)
    for i in range(len(images)):
        expected = F.batch_norm(images[i:i + 1], mean, var, theta(layer, "weight", lam[i]),
                                theta(layer, "bias", lam[i]), False, 0.0, layer.eps)
        torch.testing.assert_close(got[i:i + 1], expected, atol=1e-5, rtol=1e-5)


# --- gradients -------------------------------------------------------------------------------

@pytest.mark.parametrize("make, strategy, flatten", [
    (lambda: nn.Conv2d(3, 8, 3, padding=1), "conv", False),
    (lambda: nn.Linear(3 * 32 * 32, 10), "all", True),
    (lambda: train_bn_with_stats(3), "bn", False),
])
def test_gradients_reach_lambda_phi_v_and_phi_u_at_initialisation(images, make, strategy, flatten):
    hyper = hyper_of(make(), strategy)
    x = images.flatten(1) if flatten else images
    lam = lambdas(len(x)).requires_grad_()
    target = torch.randn_like(hyper(x, lam.detach()))
    F.mse_loss(hyper(x, lam), target).backward()
    assert lam.grad is not None and lam.grad.abs().min() > 0
    layer = hyper.model
    for name in ("weight", "weight_u", "weight_v", "bias", "bias_u", "bias_v"):
        grad = getattr(layer, name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_lambda_gradient_matches_the_materialised_loop(images):
    """d loss / d λ through the batched form equals the one through per-example θ(λ_i)."""
    hyper = hyper_of(nn.Conv2d(3, 4, 3, padding=1), "conv")
    layer, x = hyper.model, images[:4]
    lam_batched = lambdas(4).requires_grad_()
    lam_loop = lam_batched.detach().clone().requires_grad_()
    hyper(x, lam_batched).square().sum().backward()
    looped = [F.conv2d(x[i:i + 1], theta(layer, "weight", lam_loop[i]),
                       theta(layer, "bias", lam_loop[i]), padding=1) for i in range(4)]
    torch.cat(looped).square().sum().backward()
    torch.testing.assert_close(lam_batched.grad, lam_loop.grad, atol=1e-4, rtol=1e-4)


def test_lambda_is_not_a_parameter_and_phi_is():
    hyper = to_hypernetwork(build_model("wrn16_1", 10), "conv+bn", N_HYPER)
    names = {name for name, _ in hyper.named_parameters()}
    first = "model.conv1"
    assert {f"{first}.weight", f"{first}.weight_u", f"{first}.weight_v"} <= names
    assert not any("lam" in name for name in names)
    assert "model.fc.weight" in names   # plain (shared) layers are trained too


# --- strategies ------------------------------------------------------------------------------

# wrn16_1: stem conv + 3 stages × 2 blocks × 2 convs + 2 projection shortcuts (stages 2, 3);
# 2 BN per block + the final BN; one Linear head.
WRN16_1_COUNTS = {"conv+bn": (15, 13, 0), "conv": (15, 0, 0), "bn": (0, 13, 0),
                  "1st-conv": (1, 0, 0), "1st-bn": (0, 1, 0), "all": (15, 13, 1)}


def counts(hyper: HyperNetwork) -> tuple[int, int, int]:
    modules = list(hyper.modules())
    return tuple(sum(type(m) is cls for m in modules)
                 for cls in (HyperConv2d, HyperBatchNorm2d, HyperLinear))


def plain_counts(hyper: HyperNetwork) -> tuple[int, int, int]:
    modules = list(hyper.modules())
    return tuple(sum(type(m) is cls for m in modules) for cls in (nn.Conv2d, nn.BatchNorm2d,
                                                                   nn.Linear))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_strategy_converts_exactly_its_layers_of_wrn16_1(strategy):
    hyper = to_hypernetwork(build_model("wrn16_1", 10), strategy, N_HYPER)
    assert counts(hyper) == WRN16_1_COUNTS[strategy]
    hyper_total = tuple(WRN16_1_COUNTS[strategy])
    assert plain_counts(hyper) == tuple(total - h for total, h in zip((15, 13, 1), hyper_total))
    assert len(hyper.hyper_layers) == sum(hyper_total) == len(hyper.hyper_layer_names)
    if strategy == "1st-conv":
        assert hyper.hyper_layer_names == ("conv1",)
    if strategy == "1st-bn":   # the first BN the input meets: block 1's pre-activation BN
        assert hyper.hyper_layer_names == ("stages.0.0.bn1",)


class UnseenNet(nn.Module):
    """A user's network the project never saw: odd nesting, a tied conv, a non-affine BN,
    a conv subclass and a MultiheadAttention (whose out_proj is a Linear subclass)."""

    class ScaledConv(nn.Conv2d):
        def forward(self, x):
            return 2 * super().forward(x)

    def __init__(self):
        super().__init__()
        self.tied = nn.Conv2d(8, 8, 3, padding=1)
        self.body = nn.ModuleDict({
            "stem": nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                                  nn.ReLU()),
            "mid": nn.Sequential(self.tied, nn.ReLU(), self.tied, nn.BatchNorm2d(8, affine=False),
                                 self.ScaledConv(8, 8, 1), nn.BatchNorm2d(8)),
        })
        self.attention = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 10))

    def forward(self, x):
        x = self.body["mid"](self.body["stem"](x))
        tokens = x.flatten(2).transpose(1, 2)
        tokens = self.attention(tokens, tokens, tokens, need_weights=False)[0]
        return self.head(tokens.mean(1))


UNSEEN_COUNTS = {"conv+bn": (2, 2, 0), "conv": (2, 0, 0), "bn": (0, 2, 0), "1st-conv": (1, 0, 0),
                 "1st-bn": (0, 1, 0), "all": (2, 2, 2)}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_strategy_converts_exactly_its_layers_of_an_unseen_network(images, strategy):
    plain = UnseenNet()
    hyper = to_hypernetwork(plain, strategy, N_HYPER)
    assert counts(hyper) == UNSEEN_COUNTS[strategy]
    assert type(plain.tied) is nn.Conv2d   # the user's model is left as it was
    mid = hyper.model.body["mid"]
    assert mid[0] is mid[2] is hyper.model.tied   # a tied layer stays tied
    assert type(mid[4]) is UnseenNet.ScaledConv and type(mid[3]) is nn.BatchNorm2d
    assert type(hyper.model.attention.out_proj) is not HyperLinear
    if strategy == "1st-conv":
        assert hyper.hyper_layer_names == ("tied",)   # registration order: tied comes first
    if strategy == "1st-bn":
        assert hyper.hyper_layer_names == ("body.stem.1",)
    lam = lambdas(4).requires_grad_()
    hyper(images[:4], lam).sum().backward()
    assert lam.grad.abs().sum() > 0


@pytest.mark.parametrize("strategy", ["conv", "conv+bn"])
def test_a_converted_network_starts_as_the_plain_network(images, strategy):
    torch.manual_seed(0)
    plain = build_model("wrn16_1", 10)
    with torch.no_grad():   # non-trivial BN affine and statistics
        for m in plain.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    plain.train()
    plain(images)           # populate running statistics
    hyper = to_hypernetwork(plain, strategy, N_HYPER)
    plain.eval()
    hyper.eval()
    zero = torch.zeros(N_HYPER)
    if strategy == "conv":   # the very same computations: bit-identical
        assert torch.equal(hyper(images, zero), plain(images))
    else:
        torch.testing.assert_close(hyper(images, zero), plain(images), atol=1e-5, rtol=1e-5)
    # With the initial φV, λ of order 1 moves the logits only a little.
    near = hyper(images, lambdas(len(images)))
    assert (near - plain(images)).abs().max() < 0.1 * plain(images).abs().max()


def test_to_plain_holds_theta_of_lambda_and_loads_into_the_original_network(images):
    hyper = to_hypernetwork(build_model("wrn16_1", 10), "conv+bn", N_HYPER).eval()
    lam = lambdas(1)[0] * 5
    plain = hyper.to_plain(lam).eval()
    assert not any(isinstance(m, HyperLayer) for m in plain.modules())
    torch.testing.assert_close(plain(images), hyper(images, lam), atol=1e-4, rtol=1e-4)
    fresh = build_model("wrn16_1", 10).eval()
    fresh.load_state_dict(hyper.plain_state_dict())   # strict: the same keys
    torch.testing.assert_close(fresh(images), hyper(images, torch.zeros(N_HYPER)),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("training", [False, True])
def test_to_plain_follows_the_hypernetworks_mode_in_every_module(images, training):
    """The plain network is in the hypernetwork's mode throughout: its rebuilt BatchNorm uses
    running statistics in eval (and leaves them alone), batch statistics in training."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), train_bn_with_stats(8), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, padding=1), train_bn_with_stats(8), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    hyper = to_hypernetwork(net, "all", N_HYPER).train(training)
    lam = lambdas(1)[0]
    for plain in (hyper.to_plain(lam), hyper.to_plain()):
        modes = {name or "(root)": m.training for name, m in plain.named_modules()}
        assert modes == dict.fromkeys(modes, training)
    layer = hyper.model[1]
    assert isinstance(layer, HyperBatchNorm2d) and layer.to_plain(lam).training == training
    plain = hyper.to_plain(lam)
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    torch.testing.assert_close(plain(images), hyper(images, lam), atol=1e-5, rtol=1e-5)
    after = plain.state_dict()
    stats_moved = any(not torch.equal(after[k], before[k]) for k in before if "running" in k)
    assert stats_moved == training   # eval: running statistics used and left as they were
    if training:   # both took the same statistics step
        for k, v in hyper.model.state_dict().items():
            if "running" in k:
                torch.testing.assert_close(after[k], v, atol=1e-6, rtol=1e-6)


# --- the forward contract ---------------------------------------------------------------------

def test_shared_lambda_broadcasts_and_nothing_leaks_between_calls(images):
    hyper = to_hypernetwork(build_model("wrn16_1", 10), "conv+bn", N_HYPER).eval()
    lam = lambdas(1)[0]
    assert torch.equal(hyper(images, lam), hyper(images, lam.expand(len(images), -1)))
    assert all(layer.lam is None for layer in hyper.hyper_layers)
    with pytest.raises(RuntimeError, match="without λ"):
        hyper.model(images)   # a hyper-layer outside HyperNetwork.forward refuses to run
    with pytest.raises(RuntimeError):
        hyper(images[:, :2], lam)   # a failing forward also clears λ
    assert all(layer.lam is None for layer in hyper.hyper_layers)


@pytest.mark.parametrize("lam_shape", [(N_HYPER + 1,), (3, N_HYPER), (12, N_HYPER, 1)])
def test_a_lambda_of_the_wrong_shape_is_a_user_error(images, lam_shape):
    hyper = to_hypernetwork(nn.Conv2d(3, 4, 3), "conv", N_HYPER)
    with pytest.raises(HbaError, match="λ"):
        hyper(images, torch.zeros(lam_shape))


def test_bad_conversion_requests_are_user_errors():
    model = build_model("wrn16_1", 10)
    with pytest.raises(HbaError, match=r"unknown strategy 'bn\+conv'.*1st-bn"):
        to_hypernetwork(model, "bn+conv", N_HYPER)
    with pytest.raises(HbaError, match="positive integer"):
        to_hypernetwork(model, "bn", 0)
    with pytest.raises(HbaError, match="no affine BatchNorm2d"):
        to_hypernetwork(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 2)),
                        "1st-bn", N_HYPER)


def test_channels_last_and_bf16_autocast_run_and_agree(images):
    torch.manual_seed(0)
    hyper = to_hypernetwork(build_model("wrn16_1", 10), "conv+bn", N_HYPER).eval()
    lam = lambdas(len(images))
    reference = hyper(images, lam)
    hyper_cl = hyper.to(memory_format=torch.channels_last)
    x_cl = images.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(hyper_cl(x_cl, lam), reference, atol=1e-4, rtol=1e-4)
    small = to_hypernetwork(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)),
                            "conv+bn", N_HYPER).to(memory_format=torch.channels_last)
    assert small(x_cl, lam).is_contiguous(memory_format=torch.channels_last)
    hyper.train()
    lam = lam.requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = hyper(images, lam)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    out.float().sum().backward()
    assert torch.isfinite(lam.grad).all() and lam.grad.abs().sum() > 0


def test_hyper_layers_keep_bf16_activations_in_bf16(images):
    """An fp32 φ product must not promote a bf16 activation (memory and speed on CUDA)."""
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, padding=1))
    hyper = to_hypernetwork(net, "conv+bn", N_HYPER)
    dtypes = []
    hooks = [m.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
             for m in hyper.hyper_layers]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hyper(images[:4], lambdas(4))
    for hook in hooks:
        hook.remove()
    assert dtypes == [torch.bfloat16] * 3


def test_the_hypernetwork_compiles_to_one_graph(images):
    """No graph breaks (no host syncs, no data-dependent Python branches) under Dynamo."""
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    hyper = to_hypernetwork(net, "all", N_HYPER)
    compiled = torch.compile(hyper, backend="eager", fullgraph=True)
    lam = lambdas(4)
    torch.testing.assert_close(compiled(images[:4], lam), hyper(images[:4], lam))
    assert all(layer.lam is None for layer in hyper.hyper_layers)


def test_per_example_scales_stay_float32_under_bf16_autocast():
    """Issue 17: under bf16 autocast the hyper-BN's per-example γ took ~10 distinct values per
    channel over 128 examples; the scales s = λφVᵀ are computed in float32 whatever autocast."""
    torch.manual_seed(0)
    hyper = to_hypernetwork(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8)),
                            "1st-bn", 54)
    bn = hyper.hyper_layers[0]
    torch.nn.init.normal_(bn.weight_v, std=0.05)
    lam = torch.randn(128, 54) * 0.01 - 2.94
    bn.lam = lam                     # what HyperNetwork.forward hands each hyper-layer
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            weight_scale, bias_scale = bn._scales()
    finally:
        bn.lam = None
    assert weight_scale.dtype == torch.float32 and bias_scale.dtype == torch.float32
    distinct = min(len(torch.unique(weight_scale[:, c])) for c in range(8))
    assert distinct > 100, distinct
