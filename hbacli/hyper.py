"""Hyper-layers and the weight-sharing conversion (HBA paper §3.3, §3.4, Appendix C).

A hyper-layer computes its parameters from the hyperparameters λ ∈ R^n as

    θ(λ) = φ0 + diag(φV λ) φU            (bias, and BN's [γ; β], likewise)

with φ0, φU shaped like the plain parameter and φV of shape (units, n): every output unit
gets a base weight plus a λ-dependent scalar times a second weight. For a batch whose
examples carry their own λ_i the layer is evaluated twice for the whole batch,

    out = layer(x; φ0) + s(λ_i) ⊙ layer(x; φU),   s(λ_i) = φV λ_i,

broadcast over spatial positions; no per-example loop and no per-example weights.

Initialisation (so the converted network starts as the plain one): φ0 is a copy of the
plain layer's parameters; φU is drawn like PyTorch's default init of that layer type
(U(±1/√fan_in) for conv and linear weights and biases; ones for BN's γ and β so both
affine paths are live); φV ~ N(0, (0.01/√n)²), so s(λ) has standard deviation
0.01·rms(λ): at HBA's starting point (every λ = logit 0.05 ≈ -2.9, plus N(0, 1) noise) a
BN's γ and β move by about ±0.03 and a conv's filters by about 1%. φV is small but not
zero: with φV = 0 the gradient reaching λ at the first step would be exactly zero.
Gradients reach λ, φV (through s) and φU from the first step.

This module knows nothing about augmentation: λ is any (N, n) tensor.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .catalogue import STRATEGIES, choices
from .errors import HbaError

V_INIT_STD = 0.01   # φV ~ N(0, (V_INIT_STD / √n)²)


class HyperLayer(nn.Module):
    """What the three hyper-layers share: φV for weight and bias, and the λ slot.

    ``lam`` is set by ``HyperNetwork.forward`` for the duration of one forward pass and
    cleared afterwards; called outside it, a hyper-layer refuses to run.
    """

    def _init_hyper(self, units: int, num_hyperparameters: int, has_bias: bool,
                    like: Tensor, v_init_std: float = V_INIT_STD) -> None:
        if num_hyperparameters < 1:
            raise HbaError(f"a hyper-layer needs at least one hyperparameter, got "
                           f"{num_hyperparameters}")
        self.num_hyperparameters = num_hyperparameters
        std = v_init_std / math.sqrt(num_hyperparameters)

        def small_normal() -> nn.Parameter:
            shape = (units, num_hyperparameters)
            return nn.Parameter(torch.randn(shape, device=like.device, dtype=like.dtype) * std)

        self.weight_v = small_normal()
        self.bias_v = small_normal() if has_bias else None
        self.lam: Tensor | None = None

    def _scales(self) -> tuple[Tensor, Tensor | None]:
        """s = λ φVᵀ for the weight and the bias: (N, units) each (bias: None if no bias)."""
        if self.lam is None:
            raise RuntimeError(f"{type(self).__name__} ran without λ; call it through "
                               "HyperNetwork.forward(x, lam)")
        # In float32 even under autocast: in bf16 a hyper-BN's per-example γ would take only
        # about 10 distinct values per channel over a batch of 128 (8 bits of mantissa).
        with torch.autocast(self.lam.device.type, enabled=False):
            lam = self.lam.to(self.weight_v.dtype)
            bias_scale = None if self.bias_v is None else F.linear(lam, self.bias_v)
            return F.linear(lam, self.weight_v), bias_scale

    @staticmethod
    def _materialise(base: Tensor, u: Tensor, v: Tensor, lam: Tensor) -> Tensor:
        """φ0 + diag(φV λ) φU for one λ of shape (n,)."""
        scale = v @ lam.to(v.dtype)
        return base + scale.view((-1,) + (1,) * (base.dim() - 1)) * u

    def extra_repr(self) -> str:
        return f"num_hyperparameters={self.num_hyperparameters}"


def _default_uniform(shape_like: Tensor, fan_in: int) -> nn.Parameter:
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return nn.Parameter(torch.empty_like(shape_like).uniform_(-bound, bound))


def _copy(parameter: Tensor | None) -> nn.Parameter | None:
    if parameter is None:
        return None
    return nn.Parameter(parameter.detach().clone(), requires_grad=parameter.requires_grad)


def _per_example(scale: Tensor, like: Tensor, unit_dim: int = 1) -> Tensor:
    """(N, units) → broadcastable against `like` (units at `unit_dim`, 1 elsewhere), in
    `like`'s dtype so a bf16 activation is not promoted to fp32 by an fp32 product."""
    shape = [1] * like.dim()
    shape[0], shape[unit_dim] = scale.shape
    return scale.view(shape).to(like.dtype)


class HyperConv2d(HyperLayer):
    """Conv2d with θ = φ0 + diag(φV λ) φU per output filter; built from a plain Conv2d."""

    def __init__(self, conv: nn.Conv2d, num_hyperparameters: int, v_init_std: float = V_INIT_STD):
        super().__init__()
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride, self.padding = conv.kernel_size, conv.stride, conv.padding
        self.dilation, self.groups = conv.dilation, conv.groups
        self.padding_mode = conv.padding_mode
        self._padding_repeated = conv._reversed_padding_repeated_twice
        self.weight = _copy(conv.weight)
        self.bias = _copy(conv.bias)
        fan_in = conv.weight[0].numel()
        self.weight_u = _default_uniform(conv.weight, fan_in)
        self.bias_u = None if conv.bias is None else _default_uniform(conv.bias, fan_in)
        self._init_hyper(self.out_channels, num_hyperparameters, conv.bias is not None,
                         conv.weight, v_init_std)

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if self.padding_mode != "zeros":
            x = F.pad(x, self._padding_repeated, mode=self.padding_mode)
            return F.conv2d(x, weight, bias, self.stride, 0, self.dilation, self.groups)
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x: Tensor) -> Tensor:
        weight_scale, bias_scale = self._scales()
        out = self._conv(x, self.weight, self.bias)
        out = out + _per_example(weight_scale, out) * self._conv(x, self.weight_u, None)
        if self.bias_u is not None:
            out = out + _per_example(bias_scale * self.bias_u, out)
        return out

    def to_plain(self, lam: Tensor | None = None) -> nn.Conv2d:
        """A plain Conv2d holding θ(λ) (φ0 when lam is None); lam of shape (n,)."""
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                         self.padding, self.dilation, self.groups, self.bias is not None,
                         self.padding_mode, device=self.weight.device, dtype=self.weight.dtype)
        _fill_plain(conv, self, lam)
        return conv


class HyperLinear(HyperLayer):
    """Linear with W = φ0 + diag(φV λ) φU per output unit; built from a plain Linear."""

    def __init__(self, linear: nn.Linear, num_hyperparameters: int,
                 v_init_std: float = V_INIT_STD):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = _copy(linear.weight)
        self.bias = _copy(linear.bias)
        self.weight_u = _default_uniform(linear.weight, self.in_features)
        self.bias_u = None if linear.bias is None else _default_uniform(linear.bias,
                                                                        self.in_features)
        self._init_hyper(self.out_features, num_hyperparameters, linear.bias is not None,
                         linear.weight, v_init_std)

    def forward(self, x: Tensor) -> Tensor:
        weight_scale, bias_scale = self._scales()
        out = F.linear(x, self.weight, self.bias)
        # Units are the last dimension; the scale broadcasts over any middle dimensions.
        out = out + _per_example(weight_scale, out, -1) * F.linear(x, self.weight_u)
        if self.bias_u is not None:
            out = out + _per_example(bias_scale * self.bias_u, out, -1)
        return out

    def to_plain(self, lam: Tensor | None = None) -> nn.Linear:
        linear = nn.Linear(self.in_features, self.out_features, self.bias is not None,
                           device=self.weight.device, dtype=self.weight.dtype)
        _fill_plain(linear, self, lam)
        return linear


class HyperBatchNorm2d(HyperLayer):
    """BatchNorm2d whose affine [γ; β] = φ0 + diag(φV λ) φU; built from an affine BatchNorm2d.

    Normalises once, exactly as the plain layer would (batch statistics in training, running
    statistics in eval, the same running-stat updates), then applies a per-example affine.
    Parameter and buffer names match nn.BatchNorm2d (weight = γ0, bias = β0, running_*).
    """

    def __init__(self, bn: nn.BatchNorm2d, num_hyperparameters: int,
                 v_init_std: float = V_INIT_STD):
        super().__init__()
        if not bn.affine:
            raise HbaError("HyperBatchNorm2d needs an affine BatchNorm2d (affine=True)")
        self.num_features, self.eps, self.momentum = bn.num_features, bn.eps, bn.momentum
        self.track_running_stats = bn.track_running_stats
        self.weight = _copy(bn.weight)
        self.bias = _copy(bn.bias)
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            buffer = getattr(bn, name)
            self.register_buffer(name, None if buffer is None else buffer.detach().clone())
        self.weight_u = nn.Parameter(torch.ones_like(bn.weight))
        self.bias_u = nn.Parameter(torch.ones_like(bn.bias))
        self._init_hyper(self.num_features, num_hyperparameters, True, bn.weight, v_init_std)

    def _normalise(self, x: Tensor) -> Tensor:
        """nn.BatchNorm2d's forward without the affine part (same statistics, same updates)."""
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:   # cumulative average, as nn.BatchNorm2d does it
                factor = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        keep_stats = not self.training or self.track_running_stats
        return F.batch_norm(x, self.running_mean if keep_stats else None,
                            self.running_var if keep_stats else None, None, None,
                            use_batch_stats, factor, self.eps)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"HyperBatchNorm2d expects N×C×H×W input, got {x.dim()}D")
        weight_scale, bias_scale = self._scales()
        normalised = self._normalise(x)
        gamma = self.weight + weight_scale * self.weight_u     # (N, C)
        beta = self.bias + bias_scale * self.bias_u
        return torch.addcmul(_per_example(beta, normalised), normalised,
                             _per_example(gamma, normalised))

    def to_plain(self, lam: Tensor | None = None) -> nn.BatchNorm2d:
        bn = nn.BatchNorm2d(self.num_features, self.eps, self.momentum, True,
                            self.track_running_stats, device=self.weight.device,
                            dtype=self.weight.dtype)
        _fill_plain(bn, self, lam)
        with torch.no_grad():
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                if getattr(self, name) is not None:
                    getattr(bn, name).copy_(getattr(self, name))
        return bn

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, " + \
            super().extra_repr()


def _fill_plain(plain: nn.Module, hyper: HyperLayer, lam: Tensor | None) -> None:
    """Write φ0 (lam None) or θ(λ) of `hyper` into the weight and bias of `plain`, and put
    `plain` in `hyper`'s mode (a new module starts in training mode: a BN built from an eval
    hyper-layer would otherwise use batch statistics and overwrite its running ones)."""
    plain.train(hyper.training)
    with torch.no_grad():
        for name in ("weight", "bias"):
            base = getattr(hyper, name)
            if base is None:
                continue
            value = base if lam is None else hyper._materialise(
                base, getattr(hyper, f"{name}_u"), getattr(hyper, f"{name}_v"), lam)
            getattr(plain, name).copy_(value)


# --- conversion -------------------------------------------------------------------------

def _kind(module: nn.Module) -> str | None:
    """'conv', 'bn', 'linear' for the exact plain layer types a hyper-layer can replace.

    Exact types only: a subclass may change forward() (or, like MultiheadAttention's
    out_proj, may never be called), so replacing it could silently change the network.
    """
    if type(module) is nn.Conv2d:
        return "conv"
    if type(module) is nn.BatchNorm2d and module.affine:
        return "bn"
    if type(module) is nn.Linear:
        return "linear"
    return None


_KIND_NAMES = {"conv": "Conv2d", "bn": "affine BatchNorm2d", "linear": "Linear"}


def select_layers(model: nn.Module, strategy: str) -> list[str]:
    """Names (as in model.named_modules()) of the layers a strategy turns into hyper-layers.

    The strategies' layer kinds are in ``catalogue.STRATEGIES``. "First" (1st-conv, 1st-bn)
    is the first in module registration order (the order of named_modules(), which is
    forward order for networks that register their layers in the order they use them, as all
    of hbacli.nets do). Only affine BatchNorm2d layers count (a BN without affine parameters
    has nothing to generate).
    """
    if strategy not in STRATEGIES:
        raise HbaError(f"unknown strategy '{strategy}' (choose from: {choices(STRATEGIES)})")
    rule = STRATEGIES[strategy]
    names = [name for name, module in model.named_modules() if _kind(module) in rule.kinds]
    return names[:1] if rule.first_only else names


_HYPER_CLASS = {"conv": HyperConv2d, "bn": HyperBatchNorm2d, "linear": HyperLinear}


def _replace_modules(root: nn.Module, replacements: dict[int, nn.Module]) -> nn.Module:
    """Swap every occurrence (by identity, so shared modules stay shared) of the keyed
    modules under `root`; returns the new root (replaced itself when it is such a layer)."""
    if id(root) in replacements:
        return replacements[id(root)]
    for parent in list(root.modules()):
        # _modules, not named_children(): the latter skips a module's second occurrence.
        for child_name, child in list(parent._modules.items()):
            if id(child) in replacements:
                setattr(parent, child_name, replacements[id(child)])
    return root


def check_strategy(model: nn.Module, strategy: str) -> list[str]:
    """The layers ``strategy`` selects in ``model``; HbaError (one line, naming the strategies
    that fit) when it selects none."""
    names = select_layers(model, strategy)
    if not names:
        kinds = " or ".join(_KIND_NAMES[k] for k in STRATEGIES[strategy].kinds)
        fitting = [name for name in STRATEGIES if select_layers(model, name)]
        raise HbaError(f"strategy '{strategy}' selects no layer: {type(model).__name__} has no "
                       f"{kinds} layer (strategies that fit it: {', '.join(fitting)})")
    return names


def to_hypernetwork(model: nn.Module, strategy: str, num_hyperparameters: int,
                    v_init_std: float = V_INIT_STD) -> HyperNetwork:
    """The hypernetwork of `model` under a weight-sharing strategy, for |λ| = num_hyperparameters.

    Works on any nn.Module: the layers that `select_layers` picks are replaced by hyper-layers
    built from them; everything else (including every other layer's weights) is kept as is.
    `model` itself is left unchanged (the hypernetwork holds a deep copy).
    """
    if isinstance(num_hyperparameters, bool) or not isinstance(num_hyperparameters, int) \
            or num_hyperparameters < 1:
        raise HbaError(f"num_hyperparameters must be a positive integer, got "
                       f"{num_hyperparameters!r}")
    names = check_strategy(model, strategy)
    model = copy.deepcopy(model)
    modules = dict(model.named_modules())
    replacements = {id(modules[name]): _HYPER_CLASS[_kind(modules[name])](
        modules[name], num_hyperparameters, v_init_std) for name in names}
    model = _replace_modules(model, replacements)
    return HyperNetwork(model, names, num_hyperparameters, strategy)


class HyperNetwork(nn.Module):
    """A network whose selected layers are hyper-layers; forward(x, λ).

    Trainable parameters (``parameters()``) are φ: every hyper-layer's φ0, φU, φV and every
    plain layer. λ is not a parameter here; the caller owns it and passes it to forward.
    """

    def __init__(self, model: nn.Module, hyper_layer_names: list[str], num_hyperparameters: int,
                 strategy: str):
        super().__init__()
        self.model = model
        self.strategy = strategy
        self.num_hyperparameters = num_hyperparameters
        self.hyper_layer_names: tuple[str, ...] = tuple(hyper_layer_names)
        # A plain list (not a ModuleList) so the layers are not registered twice.
        self.hyper_layers: list[HyperLayer] = [m for m in model.modules()
                                               if isinstance(m, HyperLayer)]

    def forward(self, x: Tensor, lam: Tensor) -> Tensor:
        """x: a batch of N inputs; lam: (N, n) per-example λ or (n,) shared by the batch."""
        if lam.dim() not in (1, 2) or lam.shape[-1] != self.num_hyperparameters:
            raise HbaError(f"λ must have shape (N, {self.num_hyperparameters}) or "
                           f"({self.num_hyperparameters},), got {tuple(lam.shape)}")
        if lam.dim() == 1:
            lam = lam.unsqueeze(0).expand(x.shape[0], -1)
        elif lam.shape[0] != x.shape[0]:
            raise HbaError(f"λ has {lam.shape[0]} rows for a batch of {x.shape[0]}")
        # λ lives on the layers only while this forward runs, so nothing leaks between calls.
        for layer in self.hyper_layers:
            layer.lam = lam
        try:
            return self.model(x)
        finally:
            for layer in self.hyper_layers:
                layer.lam = None

    def to_plain(self, lam: Tensor | None = None) -> nn.Module:
        """A plain copy of the network: every hyper-layer replaced by its plain layer holding
        θ(λ) for one λ of shape (n,), or φ0 when lam is None. Loads into the original net.

        Every module keeps its mode (``training``), the rebuilt layers that of the hyper-layer
        they replace: after ``eval()`` the copy computes what ``forward(x, lam)`` computes in
        eval (running statistics, which it leaves alone); after ``train()`` it uses batch
        statistics and updates its running ones, as the hypernetwork would."""
        if lam is not None and tuple(lam.shape) != (self.num_hyperparameters,):
            raise HbaError(f"to_plain takes one λ of shape ({self.num_hyperparameters},), "
                           f"got {tuple(lam.shape)}")
        model = copy.deepcopy(self.model)
        layers = [m for m in model.modules() if isinstance(m, HyperLayer)]
        return _replace_modules(model, {id(m): m.to_plain(lam) for m in layers})

    def plain_state_dict(self, lam: Tensor | None = None) -> dict[str, Tensor]:
        """The state dict of ``to_plain(lam)``: same keys as the original network's."""
        return self.to_plain(lam).state_dict()

    def extra_repr(self) -> str:
        return (f"strategy={self.strategy!r}, num_hyperparameters={self.num_hyperparameters}, "
                f"hyper_layers={len(self.hyper_layers)}")
