"""Dropout whose rate can differ from one example of the batch to the next.

Self-Tuning Networks (MacKay et al. 2019) trains one network on a batch in which every example
carries its own perturbed hyperparameters, dropout rates included; its kernels
(asteroidhouse/self-tuning-networks, cnn/util/dropout.py ``dropout`` and ``dropout_2d``) draw
one Bernoulli(1 − r_i) mask per example, divide it by 1 − r_i (inverted dropout: the output's
expectation is the input) and detach the rates, so that no gradient reaches them through the
mask. ``per_example_dropout`` is that kernel, batched: no loop over examples and no host
synchronisation. ``RateDropout`` is a module holding it at a named *site* of a network; the
search sets the sites' rates by name (``set_dropout_rates``, ``dropout_rates``) and plain use
of the network gets the module's default rate, like ``nn.Dropout`` / ``nn.Dropout2d``.

Rates lie in [0, 1). A float rate is checked when it is set; a tensor of rates is not (reading
it would synchronise with the device), and its rates of 1 give zeros rather than NaN.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..errors import HbaError

Rates = Tensor | float | None


def per_example_dropout(x: Tensor, rates: Tensor, channelwise: bool = False,
                        generator: torch.Generator | None = None) -> Tensor:
    """Inverted dropout of ``x`` (N × …) where example i drops with rate ``rates[i]``.

    ``channelwise``: one draw per (example, channel) of an N×C×… tensor, shared by the
    channel's positions (STN's ``dropout_2d``); else one draw per element (STN's ``dropout``).
    The rates are detached, as in STN. ``generator`` None draws from torch's global generator
    (as ``F.dropout`` does); else it must live on ``x``'s device.
    """
    if x.ndim < (2 if channelwise else 1) or not x.is_floating_point():
        raise HbaError(f"per-example {'channel ' if channelwise else ''}dropout takes a floating "
                       f"N×{'C×' if channelwise else ''}… tensor, got {x.dtype} of shape "
                       f"{tuple(x.shape)}")
    if rates.ndim != 1 or rates.shape[0] != x.shape[0]:
        raise HbaError(f"per-example dropout needs one rate per example: {x.shape[0]} for this "
                       f"batch, got rates of shape {tuple(rates.shape)}")
    # Low-precision activations (autocast) get a float32 mask: keep probabilities such as
    # 1 − 0.05 are not representable in bf16.
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    keep = 1 - rates.detach().to(device=x.device, dtype=compute)
    draws = x.shape[:2] + (1,) * (x.ndim - 2) if channelwise else x.shape
    keep = keep.view((-1,) + (1,) * (len(draws) - 1))
    # U < k is Bernoulli(k) (U uniform on [0, 1)); a keep probability of 1 keeps every element
    # exactly, and the clamp turns a rate of 1 into zeros instead of 0/0.
    kept = torch.rand(draws, generator=generator, device=x.device, dtype=compute) < keep
    mask = kept.to(compute) / keep.clamp_min(torch.finfo(compute).tiny)
    return x * mask.to(x.dtype)


def _checked_rate(value: object, site: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0.0 <= float(value) < 1.0:
        raise HbaError(f"the dropout rate of site '{site}' must be a number in [0, 1), got "
                       f"{value!r}")
    return float(value)


def _checked_rates(value: object, site: str) -> Rates:
    """``value`` as a site's ``rates``: None, a float in [0, 1) or a floating (N,) tensor."""
    if value is None:
        return None
    if isinstance(value, Tensor):
        if value.ndim != 1 or not value.is_floating_point():
            raise HbaError(f"the rates of dropout site '{site}' must be a floating (N,) tensor, "
                           f"got {value.dtype} of shape {tuple(value.shape)}")
        return value
    return _checked_rate(value, site)


class RateDropout(nn.Module):
    """Dropout at a named site whose rate the search can set per example.

    ``p``: the rate of plain use. ``site``: the name a search space refers to.
    ``channelwise``: drop whole channels of N×C×H×W activations (``nn.Dropout2d``) rather than
    elements (``nn.Dropout``). ``rates`` overrides ``p`` while set: a float for every example,
    or an (N,) tensor, one rate per example of the batch (its values are not checked: see the
    module docstring). In eval mode the module is the identity, whatever the rates.
    """

    def __init__(self, p: float, site: str, channelwise: bool):
        super().__init__()
        if not isinstance(site, str) or not site:
            raise HbaError(f"a dropout site needs a non-empty name, got {site!r}")
        self.p = _checked_rate(p, site)
        self.site = site
        self.channelwise = bool(channelwise)
        self._rates: Rates = None

    @property
    def rates(self) -> Rates:
        return self._rates

    @rates.setter
    def rates(self, value: Rates) -> None:
        self._rates = _checked_rates(value, self.site)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        rates = self.p if self._rates is None else self._rates
        if isinstance(rates, float):
            if rates == 0.0:
                return x
            if not self.channelwise:
                return F.dropout(x, rates, training=True)
            if x.ndim == 4:
                return F.dropout2d(x, rates, training=True)
            rates = torch.full((x.shape[0],), rates, device=x.device)
        elif rates.shape[0] != x.shape[0]:
            raise HbaError(f"dropout site '{self.site}' holds {rates.shape[0]} rates for a batch "
                           f"of {x.shape[0]} examples")
        return per_example_dropout(x, rates, self.channelwise)

    def extra_repr(self) -> str:
        return f"p={self.p}, site={self.site!r}, channelwise={self.channelwise}"


def dropout_sites(model: nn.Module) -> dict[str, RateDropout]:
    """Every RateDropout of ``model`` by site name, in registration order."""
    sites: dict[str, RateDropout] = {}
    for module in model.modules():
        if isinstance(module, RateDropout):
            if module.site in sites:
                raise HbaError(f"two dropout modules share the site name '{module.site}'")
            sites[module.site] = module
    return sites


def _named_sites(model: nn.Module, names: Mapping[str, Rates]) -> dict[str, RateDropout]:
    sites = dropout_sites(model)
    unknown = [name for name in names if name not in sites]
    if unknown:
        raise HbaError(f"unknown dropout site '{unknown[0]}' (this network has: "
                       f"{', '.join(sites) or 'none'})")
    return sites


def set_dropout_rates(model: nn.Module, rates: Mapping[str, Rates]) -> None:
    """Set the ``rates`` of the named sites (None: back to the site's default rate)."""
    sites = _named_sites(model, rates)
    # Check every value before changing any site, so that an error leaves the model as it was.
    checked = {name: _checked_rates(value, name) for name, value in rates.items()}
    for name, value in checked.items():
        sites[name].rates = value


@contextmanager
def dropout_rates(model: nn.Module, rates: Mapping[str, Rates]) -> Iterator[None]:
    """Set the named sites' rates inside the block; their previous rates come back after it."""
    sites = _named_sites(model, rates)
    previous = {name: sites[name].rates for name in rates}
    set_dropout_rates(model, rates)
    try:
        yield
    finally:
        for name, value in previous.items():
            sites[name].rates = value
