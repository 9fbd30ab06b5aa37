"""Replaying a schedule: linear stretching, the batched augmenter, the per-image transform in
DataLoader workers. Real CIFAR-10 images from the fixture."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hbacli import space
from hbacli.errors import HbaError
from hbacli.replay import ScheduleAugmenter, ScheduleTransform, schedule_tables
from hbacli.schedule import Schedule
from hbacli.seeds import derive_seed

pytestmark = pytest.mark.usefixtures("one_torch_thread")


INVERT = space.OP_NAMES.index("Invert")          # copy 0 of Invert
ROTATE = space.OP_NAMES.index("Rotate")
LOWEST = np.array([oc.op.low if oc.op.has_magnitude else 0.0 for oc in space.OP_COPIES])
HIGHEST = np.array([oc.op.high if oc.op.has_magnitude else 0.0 for oc in space.OP_COPIES])


def schedule_of(probabilities: np.ndarray, magnitudes: np.ndarray | None = None) -> Schedule:
    if magnitudes is None:
        magnitudes = np.tile(LOWEST, (len(probabilities), 1))
    return Schedule.from_arrays(probabilities, magnitudes)


def zero_then_invert(epochs: int = 2) -> Schedule:
    """Epoch 0: nothing ever applies. Later epochs: Invert copy 0 with probability 1."""
    p = np.zeros((epochs, space.NUM_OP_COPIES))
    p[1:, INVERT] = 1.0
    return schedule_of(p)


@pytest.fixture(scope="module")
def images(cifar_slice) -> torch.Tensor:
    return torch.from_numpy(cifar_slice["train_images"][:64])


# ---- stretching ------------------------------------------------------------------------------

def test_replay_stretches_linearly_to_the_training_length():
    # 3 schedule epochs: Rotate copy 0 goes 0 → 10 → 30 degrees, its probability 0 → 0.5 → 1.
    p = np.zeros((3, space.NUM_OP_COPIES))
    m = np.tile(LOWEST, (3, 1))
    p[:, ROTATE] = [0.0, 0.5, 1.0]
    m[:, ROTATE] = [0.0, 10.0, 30.0]
    augmenter = ScheduleAugmenter(schedule_of(p, m), epochs=9, device="cpu")
    # Epoch e of 9 sits at position e·2/8 of the 3-epoch schedule.
    expected_p = np.interp(np.arange(9) * 2 / 8, [0, 1, 2], [0.0, 0.5, 1.0])
    expected_m = np.interp(np.arange(9) * 2 / 8, [0, 1, 2], [0.0, 10.0, 30.0])
    for epoch in range(9):
        augmenter.set_epoch(epoch)
        probabilities, magnitudes = augmenter.current()
        assert probabilities[ROTATE].item() == pytest.approx(expected_p[epoch])
        assert magnitudes[ROTATE].item() == pytest.approx(expected_m[epoch], rel=1e-6)
    # e.g. epoch 6 → position 1.5: halfway between 10 and 30 degrees.
    assert expected_m[6] == pytest.approx(20.0)
    # The per-image transform reads the same tables.
    tp, tm = schedule_tables(schedule_of(p, m), 9)
    np.testing.assert_allclose(tp[:, ROTATE], expected_p)
    np.testing.assert_allclose(tm[:, ROTATE], expected_m)


def test_probability_only_ops_get_finite_magnitudes():
    _, magnitudes = schedule_tables(zero_then_invert(), 4)
    assert np.isfinite(magnitudes).all()


def test_epochs_outside_the_run_are_clipped_into_it():
    augmenter = ScheduleAugmenter(zero_then_invert(), epochs=5)
    augmenter.set_epoch(99)
    assert augmenter.epoch == 4
    augmenter.set_epoch(-3)
    assert augmenter.epoch == 0


# ---- the batched augmenter ---------------------------------------------------------------------

def test_augmenter_follows_the_epoch(images):
    augmenter = ScheduleAugmenter(zero_then_invert(), epochs=2, seed=3)
    augmenter.set_epoch(0)
    assert torch.equal(augmenter(images), images)
    augmenter.set_epoch(1)
    out = augmenter(images)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    inverted = (out == 255 - images).flatten(1).all(1)
    untouched = (out == images).flatten(1).all(1)
    assert bool((inverted | untouched).all())
    # K = 0 (p = 0.2) leaves an image alone; otherwise Invert, the only op that can open, applies.
    assert 0.6 < inverted.float().mean().item() < 0.95


def test_augmenter_draws_depend_only_on_seed_and_epoch(images):
    images = images[:16]
    p = np.full((4, space.NUM_OP_COPIES), 0.5)
    m = np.tile(HIGHEST, (4, 1))
    schedule = schedule_of(p, m)
    a, b = ScheduleAugmenter(schedule, 4, seed=7), ScheduleAugmenter(schedule, 4, seed=7)
    a.set_epoch(2)
    first = a(images)
    a(images)                        # a later batch of the same epoch moves the stream on
    b.set_epoch(1)
    b(images)
    b.set_epoch(2)                   # ... but a new set_epoch starts epoch 2 afresh
    assert torch.equal(b(images), first)
    a.set_epoch(3)
    assert not torch.equal(a(images), first)
    c = ScheduleAugmenter(schedule, 4, seed=8)
    c.set_epoch(2)
    assert not torch.equal(c(images), first)


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    """64 real digit images, uint8 N×3×32×32."""
    from hbacli.datasets import load_dataset
    return load_dataset("digits", None, None, None, 0).train_images[:64]


def test_augmenter_takes_float_images_in_0_1(digits):
    """ToTensor-scaled batches are replayed at their scale: the uint8 batch's pixels / 255
    (Invert on a [0, 1] image is 1 − x), never rounded to {0, 1}; 0–255 floats are refused."""
    schedule = zero_then_invert()
    as_float = digits.float() / 255
    augmenter = ScheduleAugmenter(schedule, epochs=2, seed=3)
    augmenter.set_epoch(0)
    assert torch.equal(augmenter(as_float), as_float)
    augmenter.set_epoch(1)
    out = augmenter(as_float)
    augmenter.set_epoch(1)
    assert torch.equal(out, augmenter(digits).float() / 255)
    inverted = (out == (255 - digits).float() / 255).flatten(1).all(1)
    untouched = (out == as_float).flatten(1).all(1)
    assert bool((inverted | untouched).all()) and 0.6 < inverted.float().mean().item() < 0.95
    with pytest.raises(HbaError, match=r"\[0, 1\]"):
        augmenter(digits.float())


def test_transform_takes_float_tensors_in_0_1(digits):
    transform = ScheduleTransform(zero_then_invert(), epochs=2, seed=0)
    transform.set_epoch(1)
    outputs = [transform(img.float() / 255) for img in digits[:20]]
    for img, out in zip(digits[:20], outputs):
        assert out.dtype == torch.float32
        assert torch.equal(out, img.float() / 255) or torch.equal(out, (255 - img).float() / 255)
    assert 8 <= sum(not torch.equal(o, i.float() / 255) for o, i in zip(outputs, digits)) < 20
    with pytest.raises(HbaError, match=r"\[0, 1\]"):
        transform(digits[0].float())


def test_derived_seeds_differ_for_neighbouring_inputs():
    seeds = {derive_seed(s, e) for s in range(4) for e in range(4)}
    assert len(seeds) == 16 and all(0 <= s < 2**63 for s in seeds)


# ---- the per-image transform -------------------------------------------------------------------

def test_transform_takes_pil_images_and_tensors(images):
    transform = ScheduleTransform(zero_then_invert(), epochs=2, seed=0)
    pil = Image.fromarray(images[0].permute(1, 2, 0).numpy())
    assert np.array_equal(np.asarray(transform(pil)), np.asarray(pil))
    transform.set_epoch(1)
    changed = [not torch.equal(transform(img), img) for img in images[:20]]
    assert 8 <= sum(changed) < 20
    outputs = [np.asarray(transform(pil)) for _ in range(20)]
    assert all(np.array_equal(o, np.asarray(pil)) or np.array_equal(o, 255 - np.asarray(pil))
               for o in outputs)
    assert any(not np.array_equal(o, np.asarray(pil)) for o in outputs)


class _Images(torch.utils.data.Dataset):
    def __init__(self, images, transform):
        self.images, self.transform = images, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(self.images[i])


@pytest.mark.parametrize("persistent", [False, True])
def test_set_epoch_reaches_dataloader_workers(images, persistent):
    transform = ScheduleTransform(zero_then_invert(), epochs=2, seed=0)
    loader = torch.utils.data.DataLoader(_Images(images, transform), batch_size=16,
                                         num_workers=2, persistent_workers=persistent)
    transform.set_epoch(0)
    assert torch.equal(torch.cat(list(loader)), images)
    transform.set_epoch(1)
    out = torch.cat(list(loader))
    inverted = (out == 255 - images).flatten(1).all(1)
    assert 0.6 < inverted.float().mean().item() < 0.95


def test_seeded_transform_repeats_with_a_seeded_loader(images):
    def epoch_output(seed):
        transform = ScheduleTransform(zero_then_invert(), epochs=2, seed=seed)
        transform.set_epoch(1)
        loader = torch.utils.data.DataLoader(_Images(images, transform), batch_size=16,
                                             num_workers=2,
                                             generator=torch.Generator().manual_seed(5))
        return torch.cat(list(loader))

    assert torch.equal(epoch_output(1), epoch_output(1))
    assert not torch.equal(epoch_output(1), epoch_output(2))
