import numpy as np

from hbacli import space


def test_table7_layout():
    assert len(space.OPS) == 15 and space.NUM_OP_COPIES == 30
    assert space.NUM_MAGNITUDES == 24 and space.NUM_HYPERPARAMETERS == 54
    assert [oc.label for oc in space.OP_COPIES[:2]] == ["ShearX#0", "ShearY#0"]
    assert space.OP_COPIES[15].label == "ShearX#1"
    assert {space.OP_COPIES[i].op.name for i in range(30) if not space.OP_COPIES[i].op.has_magnitude} \
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
