"""The batched ops — torch (``ops.py``) and C (``ops_native``) — agree with their Pillow reference
on real CIFAR-10 images.

Tolerances (per op, against ``ops_pil`` on the same uint8 images and float32 magnitudes):
- point ops (AutoContrast, Invert, Equalize, Solarize, Posterize): exact (max difference 0);
- colour ops (Contrast, Color, Brightness, Sharpness): mean absolute difference ≤ 1 level
  (they are exact here too; the margin covers C-float rounding on other platforms);
- geometric ops: ≤ 0.5 % of pixels differ, 4-px border excluded (exact here; the margin covers
  nearest-neighbour ties at sample boundaries on other platforms);
- Cutout: exact, given the same centres.
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
}
GEOMETRIC = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"}
POINT = {"AutoContrast", "Invert", "Equalize", "Solarize", "Posterize"}
BORDER = 4
GEOMETRIC_MISMATCH = 0.005
COLOUR_MAD = 1.0


@pytest.fixture(scope="module")
def images(cifar_slice) -> np.ndarray:
    return cifar_slice["train_images"][::2]  # 100 images, all 10 classes


def native_apply_op(name: str, images: torch.Tensor, magnitudes, generator=None) -> torch.Tensor:
    """``ops.apply_op``'s contract through the C kernels: op ``name`` as stage 1, no stage 2,
    Cutout's centres drawn as ``apply_op`` draws them."""
    n, _, h, w = images.shape
    stages = torch.full((n, 2), -1)
    stages[:, 0] = space.OP_NAMES.index(name)
    m = torch.zeros(n, 2)
    m[:, 0] = torch.as_tensor(0.0 if magnitudes is None else magnitudes, dtype=torch.float32)
    centres = torch.zeros(n, 2, 2, dtype=torch.int64)
    centres[:, 0] = ops.centres_from_uniform(torch.rand(n, 2, generator=generator), h, w)
    return ops_native.augment_stages(images, stages, m, centres)


@pytest.fixture(params=["torch", "native"])
def apply_op(request):
    """Each batched implementation in turn."""
    if request.param == "native" and ops_native.library() is None:
        pytest.skip("the C kernels could not be built here")
    return ops.apply_op if request.param == "torch" else native_apply_op


def _pil_reference(name, images: np.ndarray, magnitudes) -> np.ndarray:
    out = []
    for img, m in zip(images, magnitudes):
        pil = Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0))
        res = np.asarray(ops_pil.apply_op_pil(name, pil, None if m is None else float(m)))
        out.append(res[None] if res.ndim == 2 else res.transpose(2, 0, 1))
    return np.stack(out)


def _assert_agrees(name: str, batched: np.ndarray, reference: np.ndarray, context: str) -> None:
    diff = np.abs(batched.astype(np.int16) - reference.astype(np.int16))
    if name in GEOMETRIC:
        inner = diff[..., BORDER:-BORDER, BORDER:-BORDER]
        assert (inner > 0).mean() <= GEOMETRIC_MISMATCH, f"{context}: {(inner > 0).mean():.4f}"
    elif name in POINT:
        assert diff.max() == 0, f"{context}: max difference {diff.max()}"
    else:
        assert diff.mean() <= COLOUR_MAD, f"{context}: mean abs difference {diff.mean():.3f}"


@pytest.mark.parametrize("name", list(MAGNITUDE_GRID))
def test_batched_op_matches_pil_on_a_magnitude_grid(name, images, apply_op):
    for m in MAGNITUDE_GRID[name]:
        m32 = None if m is None else float(np.float32(m))
        batched = apply_op(name, torch.from_numpy(images), m32).numpy()
        reference = _pil_reference(name, images, [m32] * len(images))
        _assert_agrees(name, batched, reference, f"{name} m={m}")


@pytest.mark.parametrize("gray", [False, True], ids=["rgb", "gray"])
def test_per_example_magnitudes_match_pil(images, gray, apply_op):
    """Every image its own random magnitude (and sign), RGB and single-channel (L) images."""
    x = images[:40]
    if gray:
        x = np.stack([np.asarray(Image.fromarray(i.transpose(1, 2, 0)).convert("L"))[None] for i in x])
    rng = np.random.default_rng(0)
    for op in space.OPS:
        if op.name == "Cutout":
            continue
        m = None
        if op.has_magnitude:
            m = rng.uniform(op.low, op.high, len(x)).astype(np.float32)
            m *= rng.choice([-1, 1], len(x)) if op.signed else 1
        batched = apply_op(op.name, torch.from_numpy(x), None if m is None else torch.from_numpy(m))
        reference = _pil_reference(op.name, x, [None] * len(x) if m is None else m)
        _assert_agrees(op.name, batched.numpy(), reference, f"{op.name} gray={gray}")


def test_cutout_matches_pil_given_the_same_centres(images, apply_op):
    m = torch.tensor([0.0, 0.05, 0.1, 0.2] * 25)
    out = apply_op("Cutout", torch.from_numpy(images), m, torch.Generator().manual_seed(3))
    u = torch.rand(len(images), 2, generator=torch.Generator().manual_seed(3))
    centres = ops.centres_from_uniform(u, 32, 32).tolist()
    for img, got, mi, centre in zip(images, out.numpy(), m.tolist(), centres):
        ref = ops_pil.cutout_at(Image.fromarray(img.transpose(1, 2, 0)), mi, tuple(centre))
        np.testing.assert_array_equal(got, np.asarray(ref).transpose(2, 0, 1))
    painted = (out.numpy() != images).any(1).sum((1, 2))
    assert painted[0::4].max() == 0 and painted[3::4].max() > 0  # m = 0 paints nothing


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


@pytest.mark.parametrize("family", ops.FAMILIES, ids=[f.name for f in ops.FAMILIES])
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
