import numpy as np
import pytest

from hbacli import space


def test_table7_layout():
    assert len(space.OPS) == 15 and space.NUM_OP_COPIES == 30
    assert space.NUM_MAGNITUDES == 24 and space.NUM_HYPERPARAMETERS == 54
    assert [oc.label for oc in space.OP_COPIES[:2]] == ["ShearX#0", "ShearY#0"]
    assert space.OP_COPIES[15].label == "ShearX#1"
    assert {oc.op.name for oc in space.OP_COPIES if not oc.op.has_magnitude} \
        == {"AutoContrast", "Invert", "Equalize"}


def test_initial_point_is_paper_init():
    probs, mags = space.split_physical(space.lambda_to_physical(space.initial_lambda()))
    np.testing.assert_allclose(probs, 0.05)
    for i, oc in enumerate(space.OP_COPIES):
        if oc.op.has_magnitude:
            assert np.isclose(mags[i], 0.95 * oc.op.low + 0.05 * oc.op.high)
        else:
            assert np.isnan(mags[i])


def test_physical_roundtrip_and_ranges():
    lam = np.random.default_rng(0).normal(0, 3, size=(5, 54))
    phys = space.lambda_to_physical(lam)
    assert np.all(phys >= space.LAMBDA_LOW) and np.all(phys <= space.LAMBDA_HIGH)
    np.testing.assert_allclose(space.physical_to_lambda(phys), lam, atol=1e-6)
    probs, mags = space.split_physical(phys)
    np.testing.assert_allclose(space.join_physical(probs, mags), phys)


def test_every_op_declares_its_conventions():
    """The spec rows carry what the backends read: family, sign, scale, rounding, position."""
    by_family = {f: [op.name for op in space.OPS if op.family == f]
                 for f in space.KERNEL_FAMILY_NAMES}
    assert by_family == {
        "affine": ["ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"],
        "lut": ["AutoContrast", "Invert", "Equalize", "Solarize", "Posterize", "Contrast",
                "Brightness"],
        "blend": ["Color", "Sharpness"],
        "fill": ["Cutout"]}
    assert [op.name for op in space.OPS if op.signed] == by_family["affine"]
    assert [op.name for op in space.OPS if op.positioned] == ["Cutout"]
    assert {op.name: (op.scale, op.rounding) for op in space.OPS if op.scale or op.rounding} == {
        "TranslateX": ("width", None), "TranslateY": ("height", None),
        "Posterize": (None, "half-even"), "Cutout": ("side", "half-even")}
    with pytest.raises(ValueError):
        space.OpSpec("Blur", "convolution")


def test_argument_scales_then_rounds_half_to_even():
    op = space.OP_BY_NAME
    assert op["ShearX"].argument(-0.3, 32, 24) == -0.3
    assert op["TranslateX"].argument(-0.45, 32, 24) == -0.45 * 24
    assert op["TranslateY"].argument(0.45, 32, 24) == 0.45 * 32
    assert [op["Posterize"].argument(m, 32, 32) for m in (3.5, 4.5, 4.51, 8.0)] == [4, 4, 5, 8]
    # of the short side, 24 px: 5/32 → 3.75 → 4; 0.0625 → 1.5 → 2; ties to even: 2.5 → 2
    assert [op["Cutout"].argument(m, 32, 24) for m in (0.0, 5 / 32, 0.0625)] == [0, 4, 2]
    assert [op["Cutout"].argument(0.125, 40, side) for side in (20, 28)] == [2, 4]
    assert op["Invert"].argument(None, 32, 32) == 0.0
