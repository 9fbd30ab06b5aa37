"""The networks by name: published sizes, forward passes on real CIFAR images, shake ops."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from hbacli.catalogue import MODELS
from hbacli.errors import HbaError
from hbacli.nets import build_model
from hbacli.nets.pyramidnet import PyramidNet, shake_drop
from hbacli.nets.shakeshake import shake_shake


@pytest.fixture(scope="module")
def images(cifar_slice) -> torch.Tensor:
    """16 real CIFAR-10 test images (all classes), standardised, float32 N×3×32×32."""
    x = torch.from_numpy(cifar_slice["test_images"][::12][:16]).float() / 255
    return (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)


def parameter_count(name: str, num_classes: int = 10) -> int:
    with torch.device("meta"):   # shapes only: no memory, no init cost
        return sum(p.numel() for p in build_model(name, num_classes).parameters())


# Published sizes: WRN (Zagoruyko & Komodakis; AutoAugment Table 2), Shake-Shake (Gastaldi),
# PyramidNet-272 α200 (Yamada et al.), ResNet-50 (torchvision, 1000 classes).
PUBLISHED = {("wrn40_2", 10): 2.2e6, ("wrn28_10", 10): 36.5e6,
             ("shake26_2x32d", 10): 2.9e6, ("shake26_2x96d", 10): 26.2e6,
             ("shake26_2x112d", 10): 35.6e6, ("pyramidnet272_shakedrop", 10): 26.0e6,
             ("resnet50", 1000): 25.6e6}


@pytest.mark.parametrize("name, num_classes", PUBLISHED)
def test_parameter_counts_match_the_published_ones(name, num_classes):
    count = parameter_count(name, num_classes)
    assert abs(count / PUBLISHED[(name, num_classes)] - 1) < 0.02, count


def test_small_wrn_sizes():
    assert round(parameter_count("wrn28_2") / 1e6, 1) == 1.5   # published as "1.5M"
    assert parameter_count("wrn16_1") < 0.2e6                  # small enough for CPU runs


def test_alexnet_has_the_stn_layer_sizes():
    convs = [(3, 64), (64, 192), (192, 384), (384, 256), (256, 256)]
    expected = sum(i * o * 9 + o for i, o in convs)
    expected += sum(i * o + o for i, o in [(256 * 2 * 2, 4096), (4096, 4096), (4096, 10)])
    assert parameter_count("alexnet") == expected


def test_every_name_builds_and_unknown_names_are_listed():
    assert set(MODELS) == {"wrn16_1", "wrn28_2", "wrn40_2", "wrn28_10", "shake26_2x32d",
                                "shake26_2x96d", "shake26_2x112d", "pyramidnet272_shakedrop",
                                "resnet50", "alexnet"}
    with pytest.raises(HbaError, match="unknown model 'wrn40_4'.*wrn40_2.*alexnet"):
        build_model("wrn40_4", 10)
    with pytest.raises(HbaError, match="num_classes"):
        build_model("wrn16_1", 0)


SMALL_NETS = {
    "wrn16_1": lambda: build_model("wrn16_1", 10),
    "wrn28_2": lambda: build_model("wrn28_2", 10),
    "shake26_2x32d": lambda: build_model("shake26_2x32d", 10),
    "alexnet": lambda: build_model("alexnet", 10),
    "pyramidnet20_a48": lambda: PyramidNet(20, 48, 10),   # same blocks, reduced depth
}


@pytest.mark.parametrize("name", SMALL_NETS)
def test_small_nets_train_and_evaluate_on_cifar_images(images, name):
    torch.manual_seed(0)
    model = SMALL_NETS[name]().train()
    logits = model(images)
    assert logits.shape == (len(images), 10) and torch.isfinite(logits).all()
    logits.logsumexp(1).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad():
        first, second = model(images), model(images)
        # channels_last gives the same function
        model_cl = model.to(memory_format=torch.channels_last)
        cl = model_cl(images.contiguous(memory_format=torch.channels_last))
    assert torch.equal(first, second)   # eval is deterministic (no shake, no dropout)
    torch.testing.assert_close(cl, first, atol=1e-4, rtol=1e-4)


def test_resnet50_takes_any_input_size():
    model = build_model("resnet50", 10).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 48)).shape == (2, 10)


def test_pyramidnet_drop_probabilities_grow_linearly_to_one_half():
    with torch.device("meta"):
        model = build_model("pyramidnet272_shakedrop", 10)
    probabilities = [m.drop_probability for m in model.modules() if hasattr(m, "drop_probability")]
    assert len(probabilities) == 90
    assert probabilities == pytest.approx([0.5 * (i + 1) / 90 for i in range(90)])
    widths = [m.conv3.out_channels for m in model.blocks]
    assert widths[0] == 4 * round(16 + 200 / 90) and widths[-1] == 4 * (16 + 200)


def test_shake_shake_mixes_per_example_and_shakes_the_gradient():
    torch.manual_seed(0)
    a = torch.randn(64, 3, 4, 4, requires_grad=True)
    b = torch.randn(64, 3, 4, 4, requires_grad=True)
    assert torch.equal(shake_shake(a, b, training=False), 0.5 * (a + b))
    out = shake_shake(a, b, training=True)
    # forward: out = α a + (1-α) b with one α ∈ [0, 1] per example
    alpha = ((out - b) / (a - b)).detach().flatten(1)
    assert torch.allclose(alpha, alpha[:, :1].expand_as(alpha), atol=1e-4)
    assert alpha.min() >= -1e-4 and alpha.max() <= 1 + 1e-4 and alpha[:, 0].std() > 0.1
    out.sum().backward()
    beta = a.grad.flatten(1)
    assert torch.allclose(beta, beta[:, :1].expand_as(beta))   # one β per example
    torch.testing.assert_close(a.grad + b.grad, torch.ones_like(a.grad))
    assert (beta[:, 0] - alpha[:, 0]).abs().max() > 0.1       # β is drawn apart from α


def test_shake_drop_keeps_drops_and_shakes_per_example():
    torch.manual_seed(0)
    x = torch.ones(2000, 2, 2, 2, requires_grad=True)
    assert torch.equal(shake_drop(x, 0.3, training=False), 0.7 * x)
    assert torch.equal(shake_drop(x, 0.0, training=True), x)
    out = shake_drop(x, 0.3, training=True)
    out.sum().backward()
    forward_gain, backward_gain = out[:, 0, 0, 0].detach(), x.grad[:, 0, 0, 0]
    kept = forward_gain == 1
    assert 0.65 < kept.float().mean() < 0.75                    # P(keep) = 1 - p
    assert torch.equal(backward_gain[kept], torch.ones(int(kept.sum())))
    shaken_f, shaken_b = forward_gain[~kept], backward_gain[~kept]
    assert shaken_f.min() >= -1 and shaken_f.max() <= 1 and shaken_f.min() < -0.5
    assert shaken_b.min() >= 0 and shaken_b.max() <= 1
    assert (shaken_f - shaken_b).abs().max() > 0.5              # α forward, β backward


def test_shake_ops_compile_to_one_graph():
    """No host sync or data-dependent branch in the shake ops (CUDA-graph friendly)."""
    x = torch.randn(8, 4, 2, 2)
    step = torch.compile(lambda a, b: shake_drop(shake_shake(a, b, True), 0.25, True),
                         backend="eager", fullgraph=True)
    assert step(x, x).shape == x.shape


def test_nets_run_under_bf16_autocast(images):
    torch.manual_seed(0)
    for model in (build_model("wrn16_1", 10), PyramidNet(11, 24, 10),
                  build_model("shake26_2x32d", 10)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(images[:4])
        assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
        out.float().sum().backward()


def test_modules_are_registered_in_forward_order():
    """Strategies pick 'the lowest' layer by registration order: it must be the stem."""
    for name in ("wrn16_1", "shake26_2x32d", "alexnet", "resnet50", "pyramidnet272_shakedrop"):
        with torch.device("meta"):
            model = build_model(name, 10)
        first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        assert first_conv.in_channels == 3, name
