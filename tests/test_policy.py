"""A(x; p, m): the walk's statistics against theory, the batched machinery against op-by-op
application, reproducibility, and the per-image transform inside DataLoader workers."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from hbacli import ops, ops_native, policy, space
from hbacli.datasets import load_dataset
from hbacli.errors import HbaError
from hbacli.runtime import has_cpp_compiler

K_PROBS = np.array(space.K_PROBABILITIES)
SAMPLES = 20_000
INVERT_COPIES = [i for i, oc in enumerate(space.OP_COPIES) if oc.op.name == "Invert"]


def _mid_magnitudes() -> np.ndarray:
    values = space.LAMBDA_LOW * 0.5 + space.LAMBDA_HIGH * 0.5
    return space.split_physical(values)[1]


def _within_4_se(observed: np.ndarray, expected: np.ndarray, n: int) -> None:
    se = np.sqrt(np.maximum(expected * (1 - expected), 1e-12) / n)
    assert np.all(np.abs(observed - expected) <= 4 * se + 1e-12), (observed, expected)


def theoretical_rates(p: np.ndarray) -> np.ndarray:
    """Exact P(copy j applied) for the shuffled gated walk.

    Give every copy a uniform arrival time t; copy j is applied iff its gate opens and fewer
    than K gates opened among copies arriving before it. Given t, each other copy i arrives
    earlier and opens with probability p_i·t independently, so P(#opened before < K | t) is a
    Poisson-binomial tail: a polynomial of degree 29 in t, integrated exactly by 40-point
    Gauss–Legendre.
    """
    nodes, weights = np.polynomial.legendre.leggauss(40)
    t, w = (nodes + 1) / 2, weights / 2
    rates = np.zeros(len(p))
    for j in range(len(p)):
        none, one = np.ones_like(t), np.zeros_like(t)
        for q in np.delete(p, j)[:, None] * t:
            none, one = none * (1 - q), one * (1 - q) + none * q
        fewer_than = {0: 0.0, 1: none, 2: none + one}
        rates[j] = p[j] * np.sum(w * sum(K_PROBS[k] * fewer_than[k] for k in (0, 1, 2)))
    return rates


def test_torch_physical_values_match_space():
    from hbacli.space_kernels import policy_split, to_physical
    from hbacli.spaces import get_space

    hba = get_space("hba")
    lam = np.random.default_rng(0).normal(0, 2, size=(4, 54))
    probs, mags = policy_split(to_physical(hba, torch.tensor(lam)))
    want_p, want_m = space.split_physical(space.lambda_to_physical(lam))
    np.testing.assert_allclose(probs.numpy(), want_p, rtol=1e-12)
    # the policy ignores the magnitude of probability-only ops (NaN in space.py): 0 here
    np.testing.assert_allclose(mags.numpy(), np.nan_to_num(want_m, nan=0.0), rtol=1e-12)
    with pytest.raises(HbaError):
        to_physical(hba, torch.zeros(53))


def test_with_every_probability_one_exactly_k_ops_apply():
    walk = policy.sample_walk(torch.ones(SAMPLES, 30), torch.Generator().manual_seed(0))
    counts = walk.applied.sum(1)
    assert torch.equal(counts, walk.k)
    freq = np.bincount(counts.numpy(), minlength=3) / SAMPLES
    _within_4_se(freq, K_PROBS, SAMPLES)


def test_per_copy_application_rates_match_theory():
    p = np.linspace(0.05, 0.95, 30)[np.random.default_rng(1).permutation(30)]
    walk = policy.sample_walk(torch.tensor(p, dtype=torch.float32).expand(SAMPLES, 30),
                              torch.Generator().manual_seed(1))
    applied = walk.applied.numpy()
    _within_4_se(applied.mean(0), theoretical_rates(p), SAMPLES)
    assert np.all(applied.sum(1) <= walk.k.numpy())
    # the stages are the applied copies, in walk order
    first, second = walk.first.numpy(), walk.second.numpy()
    assert np.array_equal(applied.sum(1), (first >= 0).astype(int) + (second >= 0))
    rows = np.flatnonzero(second >= 0)
    assert applied[rows, first[rows]].all() and applied[rows, second[rows]].all()


def test_theory_agrees_with_a_direct_simulation():
    """The exact formula itself, against a plain numpy simulation of PBA's loop."""
    rng = np.random.default_rng(2)
    p = rng.uniform(0, 1, 30)
    n = 20_000
    hits = np.zeros(30)
    for _ in range(n):
        k = rng.choice(3, p=K_PROBS)
        done = 0
        for j in rng.permutation(30):
            if done == k:
                break
            if rng.random() < p[j]:
                hits[j] += 1
                done += 1
    _within_4_se(hits / n, theoretical_rates(p), n)


def test_both_copies_of_one_op_may_apply_and_k_shows_in_images():
    """Only the two Invert copies, probability 1: K=1 inverts, K=2 inverts twice (identity)."""
    x = torch.randint(0, 256, (10_000, 1, 4, 4), generator=torch.Generator().manual_seed(0),
                      dtype=torch.uint8)
    p = torch.zeros(30)
    p[INVERT_COPIES] = 1.0
    out = policy.augment_batch(x, p, torch.zeros(30), torch.Generator().manual_seed(5))
    inverted = (out == 255 - x).flatten(1).all(1)
    unchanged = (out == x).flatten(1).all(1)
    assert bool((inverted | unchanged).all())
    _within_4_se(np.array([inverted.float().mean().item()]), np.array([0.3]), len(x))


def test_pil_walk_has_the_same_statistics():
    img = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    p = np.zeros(30)
    p[INVERT_COPIES] = 1.0
    rng = np.random.default_rng(0)
    n = 10_000
    inverted = sum(policy.augment_pil(img, p, np.zeros(30), rng).tobytes() != img.tobytes()
                   for _ in range(n))
    _within_4_se(np.array([inverted / n]), np.array([0.3]), n)


def test_batched_policy_equals_ops_applied_one_by_one(cifar_slice):
    """The stage machinery (C, torch sorted, masked and compiled kernels) against the plain
    definition: for each image, its walk's applied copies through ``ops.apply_op``, signs and
    positions taken from the same uniforms."""
    x = torch.from_numpy(cifar_slice["test_images"][:64]).contiguous()
    n = len(x)
    rng = np.random.default_rng(3)
    p = torch.tensor(rng.uniform(0.2, 1.0, (n, 30)), dtype=torch.float32)  # per example
    m = torch.tensor(np.nan_to_num(space.split_physical(space.lambda_to_physical(
        rng.normal(0, 2, (n, 54))))[1]), dtype=torch.float32)
    u = torch.rand(n, policy.UNIFORMS_PER_IMAGE, generator=torch.Generator().manual_seed(4))
    walk = policy.walk_from_uniform(p, u)
    extra = u[:, 61:].view(n, 3, 2)
    expected = x.clone()
    for i in range(n):
        for stage, copy in enumerate((walk.first[i].item(), walk.second[i].item())):
            if copy < 0:
                continue
            op = space.OP_COPIES[copy].op
            mag = m[i, copy].item() * (-1 if op.signed and extra[i, 0, stage] < 0.5 else 1)
            centre = ops.centres_from_uniform(extra[i:i + 1, 1:, stage], 32, 32)
            expected[i] = ops.apply_op(op.name, expected[i:i + 1], mag, centres=centre)[0]
    available = {"native": ops_native.library() is not None, "compiled": has_cpp_compiler()}
    kernels = [k for k in policy.KERNELS if available.get(k, True)]
    for k in kernels:
        got = policy.augment_from_uniform(x.clone(), p, m, u, kernels=k)
        assert torch.equal(got, expected), k
    assert (expected != x).flatten(1).any(1).float().mean() > 0.5  # the test has teeth


def test_seeded_reproducibility_and_shapes(cifar_slice):
    x = torch.from_numpy(cifar_slice["train_images"][:32])
    p, m = torch.full((30,), 0.5), torch.tensor(_mid_magnitudes())
    threads = torch.get_num_threads()
    a = policy.augment_batch(x, p, m, torch.Generator().manual_seed(7))
    assert torch.get_num_threads() == threads  # global torch state left alone
    b = policy.augment_batch(x, p, m, torch.Generator().manual_seed(7))
    c = policy.augment_batch(x, p, m, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.dtype == torch.uint8
    f = policy.augment_batch(x.float() / 255, p, m, torch.Generator().manual_seed(7))
    assert f.dtype == torch.float32 and torch.equal(f, a.float() / 255)
    with pytest.raises(HbaError):
        policy.augment_batch(x, torch.zeros(29), m)


def test_per_example_probabilities():
    x = torch.randint(0, 256, (200, 3, 8, 8), dtype=torch.uint8,
                      generator=torch.Generator().manual_seed(0))
    p = torch.zeros(200, 30)
    p[100:, INVERT_COPIES[0]] = 1.0  # second half may invert, first half never changes
    out = policy.augment_batch(x, p, torch.zeros(30), torch.Generator().manual_seed(1))
    assert torch.equal(out[:100], x[:100])
    assert torch.equal(out[100:][(out[100:] != x[100:]).flatten(1).any(1)],
                       255 - x[100:][(out[100:] != x[100:]).flatten(1).any(1)])
    assert (out[100:] != x[100:]).flatten(1).any(1).float().mean() > 0.6  # K ≥ 1: 80 %


class _Folder(torch.utils.data.Dataset):
    """A tiny dataset of image files, read with PIL as a user's dataset would."""

    def __init__(self, paths, transform):
        self.paths, self.transform = paths, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        with Image.open(self.paths[i]) as im:
            return self.transform(im.convert("RGB"))


def test_policy_transform_in_dataloader_workers(cifar_slice, tmp_path):
    from torchvision import transforms

    paths = []
    first = cifar_slice["train_images"][0].transpose(1, 2, 0)
    for i in range(8):  # the same image eight times: workers must still draw differently
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(first).save(paths[-1])
    p, m = np.ones(30), _mid_magnitudes()
    pil_policy = transforms.Compose([policy.PolicyTransform(p, m, seed=0),
                                     transforms.PILToTensor()])
    tensor_policy = transforms.Compose([transforms.PILToTensor(),
                                        policy.PolicyTransform(p, m, seed=0)])
    for transform in (pil_policy, tensor_policy):
        def run(loader_seed=0, transform=transform):
            loader = torch.utils.data.DataLoader(_Folder(paths, transform), batch_size=2,
                                                 num_workers=2,
                                                 generator=torch.Generator().manual_seed(loader_seed))
            return torch.cat(list(loader))

        out = run()
        assert out.shape == (8, 3, 32, 32) and out.dtype == torch.uint8
        original = torch.from_numpy(first).permute(2, 0, 1)
        assert (out != original).flatten(1).any(1).sum() >= 4  # K ≥ 1 for 80 % of images
        # worker 0 makes items 0, 1, 4, 5 and worker 1 items 2, 3, 6, 7: one shared stream
        # would make every item equal to its counterpart
        assert not all(torch.equal(out[i], out[i + 2]) for i in (0, 1, 4, 5))
        assert torch.equal(out, run(1))  # the transform's seed alone fixes every worker's stream


def test_policy_transform_types_and_pickling(cifar_slice):
    img = Image.fromarray(cifar_slice["train_images"][0].transpose(1, 2, 0))
    t = policy.PolicyTransform(np.full(30, 0.5), _mid_magnitudes(), seed=3)
    clone = pickle.loads(pickle.dumps(t))
    outs = [t(img) for _ in range(5)]
    assert all(isinstance(o, Image.Image) and o.size == img.size for o in outs)
    assert [o.tobytes() for o in outs] == [clone(img).tobytes() for _ in range(5)]  # seeded
    tensor = torch.from_numpy(cifar_slice["train_images"][0])
    out = t(tensor)
    assert isinstance(out, torch.Tensor) and out.shape == tensor.shape and out.dtype == torch.uint8
    with pytest.raises(HbaError):
        t("not an image")
    with pytest.raises(HbaError):
        policy.PolicyTransform(np.zeros(29), np.zeros(30))


@pytest.mark.parametrize("kernels", ["native", "torch"])
def test_pil_and_tensor_images_get_the_same_pixels(cifar_slice, kernels, monkeypatch):
    """One rng state, one walk: the per-image policy gives the same pixels to a PIL image and to
    its tensor, through the C kernels and through the torch fallback."""
    if kernels == "torch":
        monkeypatch.setattr(ops_native, "library", lambda: None)
    elif ops_native.library() is None:
        pytest.skip("the C kernels could not be built here")
    rng = np.random.default_rng(0)
    p = np.full(30, 0.8)
    m = np.nan_to_num(space.split_physical(space.lambda_to_physical(rng.normal(0, 2, 54)))[1])
    changed = 0
    for i, image in enumerate(cifar_slice["train_images"][:100]):
        tensor = torch.from_numpy(image)
        from_pil = policy.augment_pil(Image.fromarray(image.transpose(1, 2, 0)), p, m,
                                      np.random.default_rng(i))
        from_tensor = policy.augment_tensor(tensor, p, m, np.random.default_rng(i))
        np.testing.assert_array_equal(from_tensor.numpy(), np.asarray(from_pil).transpose(2, 0, 1))
        changed += not torch.equal(from_tensor, tensor)
    assert changed >= 70  # K ≥ 1 for 80 % of images


# ---- float images: torchvision's convention, [0, 1] -----------------------------------------

@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    """64 real digit images, uint8 N×3×32×32."""
    return load_dataset("digits", None, None, None, 0).train_images[:64]


def _to_tensor_scale(images: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """uint8 → float in [0, 1] as torchvision's ToTensor does it (x / 255)."""
    return images.to(dtype).div(255)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float_images_in_0_1_are_augmented_at_their_scale(digits, dtype):
    """A float batch in [0, 1] (ToTensor's output) gets the uint8 batch's pixels / 255, not
    {0, 1} with grey 128 painted in; pixels no op changes come back bit-identical."""
    p, m = torch.full((30,), 0.5), torch.tensor(_mid_magnitudes())
    as_bytes = policy.augment_batch(digits, p, m, torch.Generator().manual_seed(3))
    x = _to_tensor_scale(digits, dtype)
    out = policy.augment_batch(x, p, m, torch.Generator().manual_seed(3))
    assert out.dtype == dtype and out.shape == x.shape and out.is_contiguous()
    assert torch.equal(out, _to_tensor_scale(as_bytes, dtype))
    assert torch.equal(x, _to_tensor_scale(digits, dtype))   # the input is left alone
    assert (as_bytes != digits).flatten(1).any(1).float().mean() > 0.5   # the test has teeth
    assert 0.0 <= out.min() and out.max() <= 1.0 and len(out.unique()) > 100
    # torchvision v2's scaling (x · (1/255), off by an ulp from x / 255): untouched pixels kept
    v2 = torchvision_v2_scale(digits)
    out_v2 = policy.augment_batch(v2, p, m, torch.Generator().manual_seed(3))
    torch.testing.assert_close(out_v2, _to_tensor_scale(as_bytes), atol=1e-7, rtol=0)
    untouched = as_bytes == digits
    assert torch.equal(out_v2[untouched], v2[untouched])
    # nothing applied: the batch comes back exactly, off-grid values included
    noisy = (x + torch.rand(x.shape, generator=torch.Generator().manual_seed(0),
                            dtype=dtype) / 1000).clamp(0, 1)
    same = policy.augment_batch(noisy, torch.zeros(30), m, torch.Generator().manual_seed(3))
    assert torch.equal(same, noisy)


def torchvision_v2_scale(images: torch.Tensor) -> torch.Tensor:
    from torchvision.transforms.v2.functional import to_dtype
    return to_dtype(images, torch.float32, scale=True)


@pytest.mark.parametrize("bad", ["0-255", "negative", "nan", "int16"])
def test_float_images_outside_0_1_are_refused_not_changed(digits, bad):
    x = {"0-255": digits.float(), "negative": digits.float() / 255 - 0.5,
         "nan": (digits.float() / 255).index_fill(0, torch.tensor([3]), float("nan")),
         "int16": digits.to(torch.int16)}[bad]
    with pytest.raises(HbaError) as error:
        policy.augment_batch(x, torch.full((30,), 0.5), torch.tensor(_mid_magnitudes()))
    assert "\n" not in str(error.value) and ("[0, 1]" in str(error.value))
    with pytest.raises(HbaError):
        policy.augment_tensor(x[3], np.full(30, 0.5), _mid_magnitudes(), np.random.default_rng(0))


@pytest.mark.parametrize("kernels", ["native", "torch"])
def test_per_image_float_tensors_in_0_1_get_the_uint8_pixels(digits, kernels, monkeypatch):
    """PolicyTransform / augment_tensor on a ToTensor-scaled image: the uint8 image's pixels
    / 255, through the C kernels or the torch fallback alike."""
    if kernels == "torch":
        monkeypatch.setattr(ops_native, "library", lambda: None)
    elif ops_native.library() is None:
        pytest.skip("the C kernels could not be built here")
    p, m = np.full(30, 0.8), _mid_magnitudes()
    changed = 0
    for i, image in enumerate(digits[:32]):
        as_bytes = policy.augment_tensor(image, p, m, np.random.default_rng(i))
        as_float = policy.augment_tensor(_to_tensor_scale(image), p, m, np.random.default_rng(i))
        assert as_float.dtype == torch.float32
        assert torch.equal(as_float, _to_tensor_scale(as_bytes))
        changed += not torch.equal(as_bytes, image)
    assert changed >= 16
    out = policy.PolicyTransform(p, m, seed=0)(_to_tensor_scale(digits[0]))
    assert out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1
