"""Modified backward passes: the one mechanism behind LRP, deep Taylor, Deep SHAP, deconvnet and guided backprop.

Each of these methods keeps the forward pass of the network and changes what the backward pass does at some
layers. A *rule* here is a function ``rule(module, inputs, output)`` run as a forward hook: it returns the
layer's output again, equal in value, but with the backward pass the method wants. Two ways to build one:

- ``rescaled(output, z, scale)`` = [output] + (z - [z]) [scale], with [.] detached: the value of the output,
  and a backward pass that sends the incoming gradient c back through z multiplied by ``scale``. LRP (z a
  rule's modified forward pass, scale = output / z) and Deep SHAP's rescale rule (scale = dy / dz) are so.
- ``relu_rule(backward)``: every ReLU *call* of one forward pass, functional ones (``F.relu``, ``x.relu()``)
  included, gets a backward pass that is any function of the incoming gradient R_out (deconvnet's max(R_out, 0),
  guided backprop's R_out 1[z > 0] 1[R_out > 0]), through a hook on the call's node in the autograd graph, or
  ``ReLURule``, an autograd function.

``modified(model, rules)`` registers rules on modules and removes them when the block ends, even on an error.
Neither patches anything outside the model; ``relu_rule`` watches function calls, when it must, only in the calling
thread (a ``TorchFunctionMode``). ``LAYERS`` is the one registry of layer types, ``check_layers`` says which a
method supports; max-pooling's switches and unpooling live here once. Introduced in chapter 01.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .core import describe


class Sum(nn.Module):
    """An explicit residual addition ``a + b``, so that a rule can be attached to it (``lrp.canonize``). Chapter 01."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


LAYERS = {  # the layer types the engine knows, by what they do
    "weighted": (nn.Conv1d, nn.Conv2d, nn.Linear),
    "relu": (nn.ReLU, nn.LeakyReLU),  # positively homogeneous: z * dy/dz = y
    "activation": (
        nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Softsign,
        nn.ReLU6, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.PReLU,
    ),  # fmt: skip
    "maxpool": (nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d),
    "avgpool": (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d),
    "sum": (Sum,),
    "shape": (nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d),
    "batchnorm": (nn.BatchNorm1d, nn.BatchNorm2d),
}
SUPPORTS = {  # the kinds each method explains; a layer of another kind is refused, never guessed
    "LRP": ("weighted", "relu", "activation", "maxpool", "avgpool", "sum", "shape"),
    "Deep SHAP": ("weighted", "relu", "activation", "maxpool", "avgpool", "sum", "shape", "batchnorm"),
}


def kind(module: nn.Module) -> str | None:
    """The kind of ``module`` in ``LAYERS`` ("weighted", "relu", ...), or None for an unknown layer. Chapter 01."""
    return next((k for k, types in LAYERS.items() if isinstance(module, types)), None)


def supported(method: str) -> str:
    """The names of the layer types ``method`` (a key of ``SUPPORTS``) explains, for messages. Chapter 01."""
    return ", ".join(t.__name__ for k in SUPPORTS[method] for t in LAYERS[k])


def check_layers(model: nn.Module, method: str) -> list[tuple[str, nn.Module, str]]:
    """The layers of ``model`` (modules without children) as (name, module, kind); ``NotImplementedError`` naming
    the first one that ``method`` does not support, and listing what it supports. Chapter 01."""
    layers = []
    for name, module in model.named_modules():
        if list(module.children()):
            continue
        k = kind(module)
        if k not in SUPPORTS[method]:
            what = "; merge it into the layer before with lrp.canonize(model)" if k == "batchnorm" else ""
            raise NotImplementedError(
                f"model: {method} has no rule for layer {name!r} ({type(module).__name__}){what}; "
                f"supported: {supported(method)}"
            )
        layers.append((name, module, k))
    return layers


# ----------------------------------------------------------------------------- rules as forward hooks


def rescaled(output: torch.Tensor, z: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """[output] + (z - [z]) [scale] ([.] detached): ``output`` in value, whose backward pass sends
    the incoming gradient back through ``z``, multiplied by ``scale``. The one trick behind LRP and
    DeepLIFT. Chapter 01."""
    scale = scale.detach() if isinstance(scale, torch.Tensor) else scale
    return output.detach() + (z - z.detach()) * scale


Rule = Callable[[nn.Module, tuple, torch.Tensor], torch.Tensor | None]


@contextlib.contextmanager
def modified(model: nn.Module, rules: Mapping[nn.Module, Rule], before: Mapping | None = None) -> Iterator[nn.Module]:
    """Within the block, each module of ``rules`` (modules of ``model``) returns ``rule(module, inputs, output)``
    instead of its output (None keeps it), and ``before[module](module, inputs)`` runs before each module of
    ``before``. The hooks are removed when the block ends, even on an error. Chapter 01."""
    handles = []
    try:
        for module, rule in (before or {}).items():
            handles.append(module.register_forward_pre_hook(rule))
        for module, rule in rules.items():
            handles.append(module.register_forward_hook(rule))
        yield model
    finally:
        for handle in handles:
            handle.remove()


# ----------------------------------------------------------------------------- ReLU rules, for every ReLU call


class ReLURule(torch.autograd.Function):
    """y = max(z, 0) in the forward pass; ``backward(r_out, r_out 1[z > 0])`` in the backward pass: the rule gets the
    incoming gradient and the ReLU's own gradient of it, a new tensor that it may write into. Chapter 07."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, backward: Callable, inplace: bool) -> torch.Tensor:
        y = z.relu_() if inplace else z.relu()
        if inplace:
            ctx.mark_dirty(z)
        ctx.rule = backward
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, r_out: torch.Tensor):
        (y,) = ctx.saved_tensors
        return ctx.rule(r_out, torch.ops.aten.threshold_backward(r_out, y, 0)), None, None


_RELU_CALLS = (F.relu, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_)
_IN_PLACE = (torch.relu_, torch.Tensor.relu_)
_OTHER_ACTIVATIONS = frozenset(
    "sigmoid tanh leaky_relu elu selu celu gelu silu mish softplus softsign hardtanh relu6 hardswish hardsigmoid "
    "prelu rrelu threshold glu logsigmoid tanhshrink softshrink hardshrink softmax log_softmax clamp clamp_min "
    "clip".split()
)


class _EveryReLU(TorchFunctionMode):
    """Every ReLU call, module or functional, becomes ``ReLURule``; a call of another activation raises."""

    def __init__(self, backward: Callable):
        super().__init__()
        self.rule = backward

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RELU_CALLS:
            inplace = func in _IN_PLACE or (func is F.relu and bool(kwargs.get("inplace", args[1:2] == (True,))))
            return ReLURule.apply(args[0], self.rule, inplace)
        name = getattr(func, "__name__", "").rstrip("_")
        if name in _OTHER_ACTIVATIONS:
            raise NotImplementedError(
                f"model: it calls {name} (a module or a functional call); this rule defines the backward pass of "
                "ReLU only; supported: ReLU (nn.ReLU, F.relu, torch.relu, in place or not), convolutions, linear "
                "layers, max and average pooling, BatchNorm, reshaping, additions"
            )
        return func(*args, **kwargs)


def relu_rule(backward: Callable) -> Callable:
    """``forward(model, x)``: the model's output on ``x``, in which every ReLU call, module or
    functional, has the backward pass ``backward(r_out, r_out 1[z > 0])``: the incoming gradient
    and the ReLU's own gradient, which the rule may write into. Another activation raises
    ``NotImplementedError``.

    The forward pass runs unchanged; then the node of each ReLU call in the autograd graph of the
    output gets a hook that returns the rule instead of the ReLU's gradient. The graph belongs to
    this forward pass alone, so neither the model nor another thread sees the rule. If the graph
    holds another activation, or hides one (an in-place operation on a view), the forward pass
    runs again with every call watched (a ``TorchFunctionMode`` of this thread). Chapter 07.
    """

    def forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        out = model(x.clone())  # a copy: x stays untouched for a second pass
        relus = _relu_nodes(out) if isinstance(out, torch.Tensor) else None
        if relus is None:
            with _EveryReLU(backward):
                return model(x)
        for node in relus:  # a node's hook gets the gradients it computed and those it received
            node.register_hook(lambda gradient, r_out: (backward(r_out[0], gradient[0]),))
        return out

    return forward


_ACTIVATION_NODES = re.compile(
    "Relu|Threshold|Sigmoid|Tanh|Elu|Gelu|Silu|Mish|Softplus|Hardtanh|Hardswish|Softmax|Clamp|Prelu|Glu|shrink"
    "|CopySlices"
)  # the autograd nodes of activations (ReluBackward0, ...) and of in-place operations on views, which hide theirs


def _relu_nodes(output: torch.Tensor) -> list | None:
    """The nodes of the ReLU calls that ``output`` was computed through (its autograd graph); None if it was also
    computed through another activation, or an in-place operation on a view."""
    nodes = [node for node in autograd_nodes(output) if _ACTIVATION_NODES.search(type(node).__name__)]
    return nodes if all(type(node).__name__.startswith("ReluBackward") for node in nodes) else None


def autograd_nodes(output: torch.Tensor) -> set:
    """The nodes of the autograd graph that ``output`` was computed through. Chapter 01."""
    seen, todo = set(), [output.grad_fn]
    while todo:
        node = todo.pop()
        if node is not None and node not in seen:
            seen.add(node)
            todo.extend(next_node for next_node, _ in node.next_functions)
    return seen


# ----------------------------------------------------------------------------- max-pooling


def max_pool_switches(pool: nn.Module, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The output of the max-pooling module ``pool`` on ``a`` and its switches (where each maximum came from).
    Chapter 02."""
    if isinstance(pool, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)):
        adaptive = F.adaptive_max_pool1d if isinstance(pool, nn.AdaptiveMaxPool1d) else F.adaptive_max_pool2d
        return adaptive(a, pool.output_size, return_indices=True)
    max_pool = F.max_pool1d if isinstance(pool, nn.MaxPool1d) else F.max_pool2d
    return max_pool(a, pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode, return_indices=True)


def unpool(values: torch.Tensor, switches: torch.Tensor, size) -> torch.Tensor:
    """Each value put back where its max-pool switch points, zeros elsewhere (Zeiler & Fergus's
    unpooling).

    ``values`` and ``switches`` (N, C, *pooled) come from ``max_pool_switches`` (or
    ``F.max_pool2d(a, ..., return_indices=True)``) on ``a`` of shape ``size`` (N, C, *spatial);
    values that share a switch (overlapping windows) add up, as in the gradient of max-pooling.
    Chapter 07.
    """
    if not isinstance(values, torch.Tensor) or not isinstance(switches, torch.Tensor):
        raise TypeError(
            f"values, switches: expected tensors, got {describe(values)} and {describe(switches)}"
        )
    size = tuple(size)
    if switches.shape != values.shape or size[:2] != tuple(values.shape[:2]):
        raise ValueError(
            f"switches, size: expected switches of the shape of values {tuple(values.shape)} "
            f"and a size (N, C, ...) = {tuple(values.shape[:2])} + spatial, got "
            f"{describe(switches)} and size {size}"
        )
    out = values.new_zeros(*size[:2], math.prod(size[2:]))
    return out.scatter_add_(2, switches.flatten(2), values.flatten(2)).view(size)


def as_average(pool: nn.Module, a: torch.Tensor) -> torch.Tensor:
    """Average pooling of ``a`` over the windows of the max-pooling module ``pool``. Chapter 01."""
    if isinstance(pool, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)):
        adaptive = F.adaptive_avg_pool1d if isinstance(pool, nn.AdaptiveMaxPool1d) else F.adaptive_avg_pool2d
        return adaptive(a, pool.output_size)
    average = F.avg_pool1d if isinstance(pool, nn.MaxPool1d) else F.avg_pool2d
    return average(a, pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode)
