"""The compiled policy (``kernels="compiled"``, ``--compile`` on CUDA), checked on the CPU:
one graph, no graph break, no recompilation for new inputs of the same shape, lookup tables
built once per device outside the graph, and the eager kernels' pixels.

Tracing (``torch._dynamo.explain``, a counting backend) needs no C++ compiler and takes a few
seconds; only the pixel test compiles with inductor (C++), on 8 images of 32×32."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch._dynamo

from hbacli import policy, space
from hbacli.runtime import has_cpp_compiler

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N, H, W = 8, 32, 32


def _inputs(seed: int) -> tuple[torch.Tensor, ...]:
    """Tiny batch, every op likely: probabilities high, magnitudes from random λ."""
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    images = torch.randint(0, 256, (N, 3, H, W), dtype=torch.uint8, generator=g)
    p = torch.tensor(rng.uniform(0.5, 1.0, (N, 30)), dtype=torch.float32)
    m = torch.tensor(np.nan_to_num(space.split_physical(space.lambda_to_physical(
        rng.normal(0, 2, (N, 54))))[1]), dtype=torch.float32)
    u = torch.rand(N, policy.UNIFORMS_PER_IMAGE, generator=g)
    return images, p, m, u


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_compiled_policy_traces_to_one_graph_without_breaks(fresh_dynamo):
    """Before #17: 26 graphs, 25 breaks on Python 3.11 (cached_property's lock in ops.Batch),
    and the numpy lookup tables rebuilt and copied to the device inside the graph."""
    images, p, m, u = _inputs(0)
    constants = policy._constants(images.device, torch.float32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*functools.lru_cache")
        explained = torch._dynamo.explain(policy._masked_with_tables)(images, p, m, u, constants)
    assert explained.graph_count == 1, [r.reason for r in explained.break_reasons]
    assert explained.graph_break_count == 0
    code = explained.graphs[0].code
    assert "as_tensor" not in code and "numpy" not in code  # no table rebuilt in the graph


def test_compiled_policy_compiles_once_and_builds_tables_once(fresh_dynamo, monkeypatch):
    compilations = []

    def counting_backend(gm, example_inputs):
        compilations.append(gm)
        return gm.forward

    builds = []
    build = policy._build_constants

    def counted_build(device, dtype):
        builds.append((device, dtype))
        return build(device, dtype)

    compiled = torch.compile(policy._masked_with_tables, backend=counting_backend, dynamic=False)
    monkeypatch.setattr(policy, "_compiled_masked", lambda: compiled)
    monkeypatch.setattr(policy, "_build_constants", counted_build)
    policy._constants.cache_clear()
    unique_graphs = []
    for seed in range(3):  # new random images, probabilities, magnitudes and uniforms each call
        images, p, m, u = _inputs(seed)
        got = policy.augment_from_uniform(images, p, m, u, kernels="compiled")
        assert torch.equal(got, policy.augment_from_uniform(images, p, m, u, kernels="masked"))
        unique_graphs.append(torch._dynamo.utils.counters["stats"]["unique_graphs"])
    assert len(compilations) == 1  # one graph, traced once: no recompilation
    assert unique_graphs[0] == unique_graphs[1] == unique_graphs[2]
    assert builds == [(images.device, torch.float32)]  # once per device, for 6 calls
    assert policy._constants.cache_info().currsize == 1


@pytest.mark.skipif(not has_cpp_compiler(), reason="torch.compile needs a C++ compiler")
@pytest.mark.slow
def test_compiled_policy_gives_the_eager_kernels_pixels():
    """Inductor's kernels against the eager masked and sorted torch kernels, same uniforms."""
    for seed in (0, 1):  # the second call reuses the compiled graph
        images, p, m, u = _inputs(seed)
        got = policy.augment_from_uniform(images.clone(), p, m, u, kernels="compiled")
        masked = policy.augment_from_uniform(images, p, m, u, kernels="masked")
        assert torch.equal(got, masked)
        assert torch.equal(got, policy.augment_from_uniform(images, p, m, u, kernels="sorted"))
        assert (got != images).flatten(1).any(1).float().mean() > 0.5  # the test has teeth
