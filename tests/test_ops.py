"""The batched ops — torch (``ops.py``) and C (``ops_native``) — give exactly their Pillow
reference's pixels (``ops_pil``), on real CIFAR-10 images (RGB and L) and on random ones of an odd
size, for every op of ``space.OPS`` on a grid of magnitudes and on random per-example magnitudes.

Every comparison is exact: the CPU kernels copy Pillow's own integer and float arithmetic (see
``ops.py``), and no op differs from Pillow by a single level on these images (measured on the
whole CIFAR slice and on random images of several sizes). A tolerance would only be needed on
another backend (CUDA: ``tests/test_cuda.py`` compares it with the CPU).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hbacli import ops, ops_native, ops_pil, space
from hbacli.errors import HbaError

MAGNITUDE_GRID = {
    "ShearX": [-0.3, -0.17, 0.0, 0.05, 0.3],
    "ShearY": [-0.3, -0.11, 0.0, 0.21, 0.3],
    "TranslateX": [-0.45, -0.13, 0.0, 0.1, 0.45],
    "TranslateY": [-0.45, -0.07, 0.0, 0.33, 0.45],
    "Rotate": [-30.0, -17.3, 0.0, 5.0, 30.0],
    "AutoContrast": [None],
    "Invert": [None],
    "Equalize": [None],
    "Solarize": [0.0, 1.0, 50.5, 128.0, 200.0, 255.0],
    "Posterize": [0.0, 1.0, 3.5, 4.5, 7.0, 8.0],
    "Contrast": [0.1, 0.55, 1.0, 1.37, 1.9],
    "Color": [0.1, 0.55, 1.0, 1.37, 1.9],
    "Brightness": [0.1, 0.55, 1.0, 1.37, 1.9],
    "Sharpness": [0.1, 0.55, 1.0, 1.37, 1.9],
    "Cutout": [0.0, 0.05, 0.1, 0.15, 0.2],
}
GEOMETRIC = [op.name for op in space.OPS if op.family == "affine"]


def test_the_grid_covers_every_op():
    assert sorted(MAGNITUDE_GRID) == sorted(space.OP_NAMES)


@pytest.fixture(scope="module")
def images(cifar_slice) -> np.ndarray:
    return cifar_slice["train_images"][::2]  # 100 images, all 10 classes


def _gray(images: np.ndarray) -> np.ndarray:
    """RGB N×3×H×W → Pillow's L conversion, N×1×H×W."""
    return np.stack([np.asarray(Image.fromarray(i.transpose(1, 2, 0)).convert("L"))[None]
                     for i in images])


@pytest.fixture(scope="module", params=["rgb", "gray", "random"])
def varied(request, images) -> np.ndarray:
    """40 real images (RGB or L), or 40 random ones of an odd size (13×29): a quarter of them
    low-contrast (AutoContrast and Equalize stretch them), three flat (the degenerate cases)."""
    if request.param == "rgb":
        return images[:40]
    if request.param == "gray":
        return _gray(images[:40])
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (40, 3, 13, 29), dtype=np.uint8)
    x[:10] = x[:10] // 8 + 90
    x[10:13] = 77
    return x


def _centres(n: int, height: int, width: int, seed: int) -> torch.Tensor:
    u = torch.rand(n, 2, generator=torch.Generator().manual_seed(seed))
    return ops.centres_from_uniform(u, height, width)


def native_apply_op(name: str, images: torch.Tensor, magnitudes, generator=None,
                    centres=None) -> torch.Tensor:
    """``ops.apply_op``'s contract through the C kernels: op ``name`` as stage 1, no stage 2,
    positions drawn as ``apply_op`` draws them when none are given."""
    n, _, h, w = images.shape
    stages = torch.full((n, 2), -1)
    stages[:, 0] = space.OP_NAMES.index(name)
    m = torch.zeros(n, 2)
    m[:, 0] = torch.as_tensor(0.0 if magnitudes is None else magnitudes, dtype=torch.float32)
    if centres is None:
        centres = ops.centres_from_uniform(torch.rand(n, 2, generator=generator), h, w)
    stage_centres = torch.zeros(n, 2, 2, dtype=torch.int64)
    stage_centres[:, 0] = centres
    return ops_native.augment_stages(images, stages, m, stage_centres)


@pytest.fixture(params=["torch", "native"])
def apply_op(request):
    """Each batched implementation in turn."""
    if request.param == "native" and ops_native.library() is None:
        pytest.skip("the C kernels could not be built here")
    return ops.apply_op if request.param == "torch" else native_apply_op


def _pil_reference(name, images: np.ndarray, magnitudes, centres: torch.Tensor) -> np.ndarray:
    out = []
    for img, m, centre in zip(images, magnitudes, centres.tolist(), strict=True):
        pil = Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0))
        res = np.asarray(ops_pil.apply_op_pil(name, pil, None if m is None else float(m),
                                              centre=tuple(centre)))
        out.append(res[None] if res.ndim == 2 else res.transpose(2, 0, 1))
    return np.stack(out)


def _assert_same_pixels(batched: torch.Tensor, reference: np.ndarray, context: str) -> None:
    batched = batched.numpy()
    different = batched != reference
    assert not different.any(), (
        f"{context}: {different.mean():.2%} of pixels differ, by up to "
        f"{np.abs(batched.astype(np.int16) - reference).max()} levels")


@pytest.mark.parametrize("name", list(MAGNITUDE_GRID))
def test_batched_op_matches_pil_on_a_magnitude_grid(name, images, apply_op):
    n, _, h, w = images.shape
    centres = _centres(n, h, w, seed=3)
    for m in MAGNITUDE_GRID[name]:
        m32 = None if m is None else float(np.float32(m))
        batched = apply_op(name, torch.from_numpy(images), m32, centres=centres)
        reference = _pil_reference(name, images, [m32] * n, centres)
        _assert_same_pixels(batched, reference, f"{name} m={m}")


def test_per_example_magnitudes_match_pil(varied, apply_op):
    """Every image its own random magnitude in range (and sign, for signed ops)."""
    n, _, h, w = varied.shape
    rng = np.random.default_rng(0)
    centres = _centres(n, h, w, seed=1)
    for op in space.OPS:
        m = None
        if op.has_magnitude:
            m = rng.uniform(op.low, op.high, n).astype(np.float32)
            m *= rng.choice([-1, 1], n) if op.signed else 1
        batched = apply_op(op.name, torch.from_numpy(varied),
                           None if m is None else torch.from_numpy(m), centres=centres)
        reference = _pil_reference(op.name, varied, [None] * n if m is None else m, centres)
        _assert_same_pixels(batched, reference, f"{op.name}, shape {varied.shape}")


def test_cutout_draws_its_centres_from_the_generator(images, apply_op):
    """Without centres, the positions are ``centres_from_uniform`` of the generator's uniforms,
    and a side of round(m · 32) pixels: m = 0 paints nothing."""
    m = torch.tensor([0.0, 0.05, 0.1, 0.2] * 25)
    out = apply_op("Cutout", torch.from_numpy(images), m, torch.Generator().manual_seed(3))
    centres = _centres(len(images), 32, 32, seed=3)
    _assert_same_pixels(out, _pil_reference("Cutout", images, m.tolist(), centres), "Cutout")
    painted = (out.numpy() != images).any(1).sum((1, 2))
    assert painted[0::4].max() == 0 and painted[3::4].max() > 0


def test_geometric_ops_fill_exposed_pixels_and_identity_at_zero(images, apply_op):
    x = torch.from_numpy(images[:8])
    shifted = apply_op("TranslateX", x, 0.45)  # content moves left; the right part is exposed
    exposed = shifted[..., :, 32 - 14:]
    assert (exposed == space.FILL).all()
    for name in GEOMETRIC:
        assert torch.equal(apply_op(name, x, 0.0), x)


def test_float_input_gives_float_output(images):
    x = torch.from_numpy(images[:8])
    out = ops.apply_op("Rotate", x.float(), 12.0)
    assert out.dtype == torch.float32
    assert torch.equal(out, ops.apply_op("Rotate", x, 12.0).float())


@pytest.mark.parametrize("family", ops.KERNEL_FAMILIES, ids=[f.name for f in ops.KERNEL_FAMILIES])
def test_family_runs_a_different_op_per_example(family, images):
    """One family pass with mixed ops equals each op applied on its own, both when every op is
    built for the whole batch and selected (−1 = identity; the CUDA path) and when the examples
    come sorted by op and each op is built for its rows only (the CPU path)."""
    x = torch.from_numpy(images[:60]).contiguous()
    n = len(x)
    names = list(family.builders)
    local = torch.arange(n) % (len(names) + 1) - 1
    rng = np.random.default_rng(1)
    m = torch.tensor([0.0 if k < 0 else _random_magnitude(names[k], rng) for k in local.tolist()],
                     dtype=torch.float32)
    centres = torch.randint(0, 32, (n, 2), generator=torch.Generator().manual_seed(0))
    mixed = family.run(ops.Batch(x, m, centres), local)
    order = local.argsort(stable=True)
    counts = torch.bincount(local + 1, minlength=len(names) + 1).tolist()
    bounds = np.cumsum(counts)  # rows of op k: bounds[k] .. bounds[k + 1] (identity rows first)
    sorted_batch = ops.Batch(x[order][counts[0]:], m[order][counts[0]:], centres[order][counts[0]:])
    by_sort = family.run_sorted(sorted_batch, [(bounds[k] - counts[0], bounds[k + 1] - counts[0])
                                               for k in range(len(names))])
    assert torch.equal(by_sort, mixed[order][counts[0]:])
    for k in range(-1, len(names)):
        rows = local == k
        expected = x[rows] if k < 0 else family.run_one(
            names[k], ops.Batch(x[rows].contiguous(), m[rows], centres[rows]))
        assert torch.equal(mixed[rows], expected), names[k] if k >= 0 else "identity"


def _random_magnitude(name: str, rng: np.random.Generator) -> float:
    op = space.OP_BY_NAME[name]
    if not op.has_magnitude:
        return 0.0
    return float(rng.uniform(op.low, op.high) * (rng.choice([-1, 1]) if op.signed else 1))


def test_registry_and_errors():
    assert tuple(ops.BATCHED_OPS) == space.OP_NAMES
    x = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    assert torch.equal(ops.BATCHED_OPS["Invert"](x), x + 255)
    with pytest.raises(HbaError):
        ops.apply_op("Blur", x, 1.0)
    with pytest.raises(HbaError):
        ops.apply_op("Invert", torch.zeros(2, 4, 8, 8, dtype=torch.uint8), None)
    with pytest.raises(HbaError):
        ops_pil.apply_op_pil("Blur", Image.new("RGB", (8, 8)), 1.0)
