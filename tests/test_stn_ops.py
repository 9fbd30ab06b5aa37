"""STN's augmentation kernels (hbacli.stn_ops), batched per example, against references:
torchvision's colour functionals applied image by image, a numpy transcription of STN's Cutout
(cnn/util/cutout.py), and measured drop fractions and scale factors of the input ops."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
import torchvision.transforms.v2.functional as TF2

from hbacli import stn_ops
from hbacli.errors import HbaError


@pytest.fixture(scope="module")
def images(cifar_slice) -> torch.Tensor:
    """100 real CIFAR-10 train images (every class) in [0, 1], float32 N×3×32×32, and 16
    synthetic ones whose channels tie often (values in {0, 0.5, 1}: grey pixels, two channels
    at the maximum)."""
    real = torch.from_numpy(cifar_slice["train_images"][::2]).float() / 255
    ties = torch.randint(0, 3, (16, 3, 32, 32), generator=torch.Generator().manual_seed(0)) / 2
    return torch.cat([real, ties])


def torchvision_jitter(functional, images, factors, order, strengths=None):
    """ColorJitter's forward, one image at a time: an adjustment of strength 0 is skipped."""
    adjust = (functional.adjust_brightness, functional.adjust_contrast,
              functional.adjust_saturation, functional.adjust_hue)
    out = []
    for i, image in enumerate(images):
        for k in order[i].tolist():
            if strengths is None or strengths[i, k] > 0:
                image = adjust[k](image, float(factors[i, k]))
        out.append(image)
    return torch.stack(out)


def random_strengths(n: int, seed: int) -> torch.Tensor:
    """Strengths over STN's ranges: [0, 1] for brightness, contrast, saturation; [0, 0.5] hue."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 4, generator=generator) * torch.tensor([1.0, 1.0, 1.0, 0.5])


@pytest.mark.parametrize("functional", [TF, TF2], ids=["transforms", "transforms.v2"])
def test_colour_jitter_is_torchvisions_per_image(images, functional):
    strengths = stn_ops.stn_jitter_strength(random_strengths(len(images), seed=1))
    factors, order = stn_ops.jitter_parameters(strengths, torch.Generator().manual_seed(2))
    out = stn_ops.colour_jitter_with(images, factors, order)
    expected = torchvision_jitter(functional, images, factors, order)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    assert (out - images).abs().amax() > 0.3      # it did change the images


def test_colour_jitter_skips_the_adjustments_of_strength_zero(images):
    strengths = random_strengths(len(images), seed=3)
    off = torch.rand(strengths.shape, generator=torch.Generator().manual_seed(4)) < 0.5
    strengths[off] = 0
    generator = torch.Generator().manual_seed(5)
    out = stn_ops.colour_jitter(images, strengths, generator)
    factors, order = stn_ops.jitter_parameters(strengths, torch.Generator().manual_seed(5))
    expected = torchvision_jitter(TF, images, factors, order, strengths)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    assert torch.equal(stn_ops.colour_jitter(images, torch.zeros(len(images), 4)), images)


def test_jitter_draws_lie_in_colorjitters_ranges_and_orders_are_permutations():
    n = 4800
    strengths = torch.tensor([0.5, 1.5, 0.2, 0.3]).repeat(n, 1)
    factors, order = stn_ops.jitter_parameters(strengths, torch.Generator().manual_seed(6))
    low, high = torch.tensor([0.5, 0.0, 0.8, -0.3]), torch.tensor([1.5, 2.5, 1.2, 0.3])
    assert ((factors >= low) & (factors <= high)).all()
    width = high - low
    # uniform over the range: both ends reached (P(miss 0.5% of it) = 0.995^4800 ≈ 4e-11) and
    # the mean at the centre within 4 standard deviations (width / √12 / √n)
    assert (factors.amin(0) - low < 0.005 * width).all()
    assert (high - factors.amax(0) < 0.005 * width).all()
    assert ((factors.mean(0) - (low + high) / 2).abs() < 4 * width / math.sqrt(12 * n)).all()
    assert torch.equal(order.sort(1).values, torch.arange(4).expand(n, 4))
    counts = {p: 0 for p in itertools.permutations(range(4))}
    for row in order.tolist():
        counts[tuple(row)] += 1
    expected, sd = n / 24, math.sqrt(n / 24 * 23 / 24)
    assert all(abs(c - expected) < 4 * sd for c in counts.values()), counts
    # strengths outside ColorJitter's range: negative → off, hue above 0.5 → 0.5
    odd = torch.tensor([[-0.5, -1.0, -0.1, 0.9]]).repeat(1000, 1)
    factors, _ = stn_ops.jitter_parameters(odd, torch.Generator().manual_seed(7))
    assert (factors[:, :3] == 1).all() and factors[:, 3].abs().max() <= 0.5
    assert factors[:, 3].abs().max() > 0.45


def test_stns_strength_mapping():
    values = torch.tensor([0.0, 0.5, 1.0])
    torch.testing.assert_close(stn_ops.stn_jitter_strength(values),
                               torch.tensor([1e-3, 0.5, 1 - 1e-3]))


def test_colour_jitter_is_reproducible_with_a_generator(images):
    strengths = random_strengths(len(images), seed=8)
    one = stn_ops.colour_jitter(images, strengths, torch.Generator().manual_seed(9))
    two = stn_ops.colour_jitter(images, strengths, torch.Generator().manual_seed(9))
    three = stn_ops.colour_jitter(images, strengths, torch.Generator().manual_seed(10))
    assert torch.equal(one, two) and not torch.equal(one, three)


# --- Cutout ------------------------------------------------------------------------------------

def stn_cutout_mask(h: int, w: int, length: float, holes: float, centres) -> np.ndarray:
    """STN's Cutout.__call__ (cnn/util/cutout.py) with the centres given; set_cutout passes
    int(length) and int(holes)."""
    length, holes = int(length), int(holes)
    mask = np.ones((h, w), np.float32)
    if length <= 0 or holes <= 0:
        return mask
    for n in range(holes):
        y, x = centres[n]
        y1 = int(np.clip(y - length / 2, 0, h))
        y2 = int(np.clip(y + length / 2, 0, h))
        x1 = int(np.clip(x - length / 2, 0, w))
        x2 = int(np.clip(x + length / 2, 0, w))
        mask[y1:y2, x1:x2] = 0.0
    return mask


# (length, holes, centres as (y, x)): odd and even lengths, centres on every border, lengths
# over the image's size, no holes, zero length, a fractional count (floored).
CUTOUT_CASES = [
    (5, 1, [(6, 4), (0, 0), (0, 0), (0, 0)]),
    (4, 2, [(0, 0), (11, 8), (0, 0), (0, 0)]),
    (3, 4, [(0, 8), (11, 0), (5, 5), (2, 7)]),
    (1, 3, [(0, 3), (4, 0), (7, 6), (0, 0)]),
    (7, 3, [(11, 8), (1, 1), (6, 2), (9, 9)]),
    (40, 1, [(3, 2), (0, 0), (0, 0), (0, 0)]),
    (13, 2, [(0, 0), (11, 4), (0, 0), (0, 0)]),
    (0, 4, [(5, 5), (6, 6), (7, 7), (8, 8)]),
    (6, 0, [(5, 5), (6, 6), (7, 7), (8, 8)]),
    (6.9, 2.7, [(5, 5), (1, 7), (7, 7), (8, 8)]),
]


def test_cutout_mask_is_stns(images):
    x = images[:len(CUTOUT_CASES), :, :12, :9] - 0.5       # a non-square crop, no zeros
    length = torch.tensor([case[0] for case in CUTOUT_CASES], dtype=torch.float32)
    holes = torch.tensor([case[1] for case in CUTOUT_CASES], dtype=torch.float32)
    centres = torch.tensor([case[2] for case in CUTOUT_CASES])
    out = stn_ops.cutout_holes_at(x, length, holes, centres)
    for i, (side, count, where) in enumerate(CUTOUT_CASES):
        mask = torch.from_numpy(stn_cutout_mask(12, 9, side, count, where))
        assert torch.equal(out[i], x[i] * mask), CUTOUT_CASES[i]
    assert out.dtype == x.dtype


def test_cutout_applies_each_examples_number_of_holes():
    """2×2 holes far apart: the zeros count 4 per hole, at most max_holes of them."""
    holes = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 2.9, -1.0])
    centres = torch.tensor([[(2, 2), (2, 8), (8, 2), (8, 8)]]).repeat(len(holes), 1, 1)
    out = stn_ops.cutout_holes_at(torch.ones(len(holes), 3, 12, 12), torch.full((8,), 2.0),
                                  holes, centres)
    zeros = (out[:, 0] == 0).sum((1, 2))
    assert zeros.tolist() == [0, 4, 8, 12, 16, 16, 8, 0]
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])


def test_random_cutout_centres_are_uniform_pixels():
    """One hole of length 1 at centre (y, x) zeroes pixel (y − 1, x − 1), and nothing when y or x
    is 0 (STN's int(clip(y ∓ 1/2))): on 8×8 images each pixel of rows and columns 0..6 is hit
    with probability 1/64, row and column 7 never."""
    n = 32000
    out = stn_ops.cutout_holes(torch.ones(n, 1, 8, 8), torch.ones(n), torch.ones(n), 4,
                               torch.Generator().manual_seed(11))
    hits = (out[:, 0] == 0).sum(0)
    assert hits[7].sum() == 0 and hits[:, 7].sum() == 0
    expected, sd = n / 64, math.sqrt(n / 64 * 63 / 64)
    assert ((hits[:7, :7] - expected).abs() < 5 * sd).all(), hits
    assert ((out[:, 0] == 0).sum((1, 2)) <= 1).all()         # holes beyond the first: off


def test_random_cutout_is_reproducible_and_honours_zero_lengths(images):
    x = images[:32]
    length, holes = torch.full((32,), 8.0), torch.full((32,), 2.0)
    one = stn_ops.cutout_holes(x, length, holes, 4, torch.Generator().manual_seed(12))
    two = stn_ops.cutout_holes(x, length, holes, 4, torch.Generator().manual_seed(12))
    assert torch.equal(one, two) and not torch.equal(one, x)
    assert torch.equal(stn_ops.cutout_holes(x, torch.zeros(32), holes, 4), x)
    assert torch.equal(stn_ops.cutout_holes(x, length, holes, 0), x)


# --- input dropout and scaling -----------------------------------------------------------------

def test_input_dropout_drops_each_image_at_its_rate(images):
    rates = torch.tensor([0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.2, 0.6])
    x = images[:8] - images[:8].mean() + 3.0                  # standardised-like, no zeros
    out = stn_ops.input_dropout(x, rates, torch.Generator().manual_seed(13))
    for i, rate in enumerate(rates.tolist()):
        dropped = out[i] == 0
        total = dropped.numel()
        if rate == 0:
            assert torch.equal(out[i], x[i])
        else:
            sd = math.sqrt(total * rate * (1 - rate))
            assert abs(int(dropped.sum()) - total * rate) < 4 * sd, (i, rate)
        torch.testing.assert_close(out[i][~dropped], x[i][~dropped] / (1 - rate))


def test_input_scale_draws_one_factor_per_image_in_stns_range(images):
    n = 6000
    scale = torch.tensor([0.05, 0.3, 1.0]).repeat_interleave(n // 3)
    x = images[:1].expand(n, -1, -1, -1) + 0.25
    out = stn_ops.input_scale(x, scale, torch.Generator().manual_seed(14))
    factors = out / x
    u = factors[:, 0, 0, 0]
    torch.testing.assert_close(factors, u.view(-1, 1, 1, 1).expand_as(factors))
    for s in scale.unique().tolist():
        drawn = u[scale == s]
        low, high = 1 / (1 + s), 1 + s
        width = high - low
        assert drawn.min() >= low - 1e-6 and drawn.max() <= high + 1e-6
        assert drawn.min() - low < 0.01 * width and high - drawn.max() < 0.01 * width
        assert abs(drawn.mean() - (low + high) / 2) < 4 * width / math.sqrt(12 * len(drawn))
    assert torch.equal(stn_ops.input_scale(images, torch.zeros(len(images))), images)


# --- shapes ------------------------------------------------------------------------------------

def test_wrong_shapes_are_refused_in_one_line(images):
    x = images[:4]
    calls = {
        "N×3×H×W": lambda: stn_ops.colour_jitter(x[:, :2], torch.zeros(4, 4)),
        r"strengths of shape \(4, 4\)": lambda: stn_ops.colour_jitter(x, torch.zeros(3, 4)),
        r"\(N, 4\) tensor": lambda: stn_ops.jitter_parameters(torch.zeros(4, 3)),
        "factors and order": lambda: stn_ops.colour_jitter_with(
            x, torch.ones(4, 4), torch.zeros(4, 3, dtype=torch.long)),
        "hole centres": lambda: stn_ops.cutout_holes_at(
            x, torch.ones(4), torch.ones(4), torch.zeros(4, 2, dtype=torch.long)),
        "Cutout's length needs an \\(N,\\) tensor": lambda: stn_ops.cutout_holes(
            x, torch.ones(5), torch.ones(4), 2),
        "max_holes": lambda: stn_ops.cutout_holes(x, torch.ones(4), torch.ones(4), -1),
        "input dropout takes": lambda: stn_ops.input_dropout(x[0], torch.zeros(4)),
        "input dropout's rates": lambda: stn_ops.input_dropout(x, torch.zeros(4, 1)),
        "input scaling's scale": lambda: stn_ops.input_scale(x, 0.1),
        "floating": lambda: stn_ops.input_scale((x * 255).to(torch.uint8), torch.zeros(4)),
    }
    for message, call in calls.items():
        with pytest.raises(HbaError, match=message) as caught:
            call()
        assert "\n" not in str(caught.value)


# --- CUDA --------------------------------------------------------------------------------------

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_kernels_on_cuda_give_the_cpu_pixels_without_host_sync(images):
    cuda = torch.device("cuda")
    x = images[:64]
    n = len(x)
    factors, order = stn_ops.jitter_parameters(random_strengths(n, 15),
                                               torch.Generator().manual_seed(16))
    centres = torch.randint(0, 32, (n, 4, 2), generator=torch.Generator().manual_seed(17))
    length = torch.randint(0, 25, (n,), generator=torch.Generator().manual_seed(18)).float()
    holes = torch.randint(0, 5, (n,), generator=torch.Generator().manual_seed(19)).float()
    inputs = [t.to(cuda) for t in (x, factors, order, centres, length, holes)]
    xc, fc, oc, cc, lc, hc = inputs
    generator = torch.Generator(cuda).manual_seed(20)
    strengths = random_strengths(n, 21).to(cuda)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        jittered = stn_ops.colour_jitter_with(xc, fc, oc)
        cut = stn_ops.cutout_holes_at(xc, lc, hc, cc)
        random_outputs = [stn_ops.colour_jitter(xc, strengths, generator),
                          stn_ops.cutout_holes(xc, lc, hc, 4, generator),
                          stn_ops.input_dropout(xc, torch.full((n,), 0.3, device=cuda),
                                                generator),
                          stn_ops.input_scale(xc, torch.full((n,), 0.3, device=cuda), generator)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(jittered.cpu(), stn_ops.colour_jitter_with(x, factors, order),
                               atol=1e-5, rtol=0)
    assert torch.equal(cut.cpu(), stn_ops.cutout_holes_at(x, length, holes, centres))
    for out in random_outputs:
        assert out.device.type == "cuda" and out.dtype == x.dtype and out.shape == x.shape
