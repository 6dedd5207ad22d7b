"""Deep Taylor decomposition (DTD): root points, and why z+, zB and w^2 fall out of a Taylor expansion.

Montavon, Lapuschkin, Binder, Samek & Müller (2017, Pattern Recognition 65:211-222) explain a ReLU
network one layer at a time. The relevance of a neuron j is modelled as R_j = c_j max(0, z_j), with
z_j = sum_i x_i w_ij + b_j, c_j constant and b_j <= 0. Its first-order Taylor expansion at a root
point x~ (where R_j(x~) = 0),

    R_j(x) = R_j(x~) + sum_i (x_i - x~_i) dR_j/dx_i |x~,

is exact, because R_j is linear on the segment from x~ to x, and hands R_j to the inputs i. Searched
along a direction v, x~ = x - t v, the root gives R_i = sum_j v_i w_ij / (sum_i' v_i' w_i'j) R_j; the
direction, chosen so that x~ stays in the input domain, makes the rule:

- z+ (inputs >= 0: the hidden layers): v_i = x_i 1[w_ij > 0], so R_i is proportional to (x_i w_ij)^+;
- zB (inputs in a box [l, h]: the pixels): v_i = x_i - l_i where w_ij > 0, x_i - h_i elsewhere;
- w^2 (inputs anywhere in R^d): v_i = w_ij.

None of the three uses the bias, so every layer conserves relevance exactly, biases and all. The
choices made here where the paper leaves them open:

- Top layer: the target's logit f_c is the relevance of the top neuron (as in LRP), and the top linear
  layer gets z+ like the others. For f_c > 0 every relevance in the network is >= 0 and the map sums
  to f_c. The propagation is linear in f_c, so for f_c < 0 the map is f_c times the same distribution:
  <= 0 everywhere, summing to f_c. It says where the evidence for the class lies, scaled by a negative
  number, not what speaks against the class (DTD's relevance model max(0, z) has no counter-evidence).
- Max-pooling: winner-take-all. The max of inputs a >= 0 is linear between 0 and a, so its Taylor
  expansion at the root point 0 (the z+ direction v = a) gives all relevance to the maximum.
- Average pooling and residual sums: z+ with their unit weights (``zplus_norm``, the composite's norm). A
  residual sum and the convolutions that feed it straight (conv2 and the downsampling shortcut of a
  canonized ResNet block) are one linear layer before the ReLU, so z+ treats them as one: each branch
  gets relevance in proportion to its positive contributions sum_j (a_j w_jk)^+, an identity shortcut
  in proportion to a^+. A branch that is positive only through its bias gets none.
- Activations: z+ assumes inputs >= 0, which ReLU, ReLU6, Sigmoid, Softplus and Hardsigmoid give (the
  smooth ones pass relevance on, LRP's Pass rule). An activation that can be negative (LeakyReLU, Tanh, ELU,
  ...) feeds z+ values outside its domain: an average over negative values has no positive contribution to
  share its relevance by, and the relevance is lost, so ``explain`` refuses such a model.
- A neuron kept active by a positive bias alone (no positive contribution, z_j > 0) has no root along
  the z+ direction; the rule has nowhere to send its relevance, which is lost. With b_j <= 0, as DTD
  assumes, this cannot happen. Otherwise conservation is exact up to the stabilizer 1e-6 that every
  denominator gets (a relative loss of about 1e-6 per layer).

``explain`` runs DTD through the engine of ``lrp``; ``root_point`` and ``taylor_neuron`` expand one
neuron explicitly; ``input_invariance`` runs the test of Kindermans et al. (2019). Introduced in
chapter 06.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from . import backward, core, gradient, lrp

INPUT_RULES = ("zb", "w2", "zplus")
DIRECTIONS = ("zplus", "zb", "w2")
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.Softplus, nn.Hardsigmoid)  # outputs >= 0: the domain of z+


@dataclass(frozen=True)
class ZPlusNoBias(lrp.Rule):
    """Deep Taylor's z+ (Montavon et al. 2017), no bias:

        R_j = sum_k (a_j w_jk)^+ / sum_j' (a_j' w_j'k)^+ R_k.

    No bias absorbs relevance. With ``zplus_norm``, the output of such a layer that goes straight
    into a ``Sum`` or average pooling is explained together with it, as one z+ layer. Chapter 06.
    """

    def groups(self) -> tuple[lrp.Group, ...]:
        terms = lrp.Term("a+", lrp.positive, None), lrp.Term("a-", lrp.negative, None)  # no bias
        return (lrp.Group(terms),)


def zplus_norm(args: tuple, producers: dict) -> list[torch.Tensor]:
    """z+ for sums and average pooling (unit weights): the positive contributions of their inputs,
    a^+ for an input a, sum_j (a_j w_jk)^+ for the output of a ``ZPlusNoBias`` layer. Chapter 06."""
    contributions = []
    for a in args:
        _, layer, a_in, rule = producers.get(id(a), (None,) * 4)
        if isinstance(rule, ZPlusNoBias):  # the layer and the sum act as one z+ layer
            contributions.append(lrp.group_output(rule.groups()[0], layer, a_in, rule, {}))
        else:
            contributions.append(lrp.positive(a))
    return contributions


def composite(input_rule: str = "zb", *, low=0.0, high=1.0) -> lrp.Composite:
    """The ``lrp.Composite`` of deep Taylor decomposition: z+ without bias everywhere,
    ``input_rule`` at the input.

    ``input_rule`` is "zb" (inputs in [low, high]), "w2" (unbounded inputs) or "zplus" (z+ at the input
    too: the root point of inputs >= 0 is 0). Sums and average pooling split by positive contributions. Chapter 06.
    """
    if input_rule not in INPUT_RULES:
        raise ValueError(
            f"input_rule: expected one of {list(INPUT_RULES)}, got {core.describe(input_rule)}"
        )
    lrp.check_bounds(low, high)
    first = {"zb": lrp.ZBox(low, high), "w2": lrp.WSquare(), "zplus": None}[input_rule]
    return lrp.Composite(first=first, conv=ZPlusNoBias(), linear=ZPlusNoBias(), norm=zplus_norm)


def _check_activations(model: nn.Module) -> None:
    """NotImplementedError for an activation module whose output can be negative (outside the domain of z+)."""
    negative = [f"{name} ({type(m).__name__})" for name, m in core.check_model(model).named_modules()
                if backward.kind(m) in ("relu", "activation") and not isinstance(m, ACTIVATIONS)]  # fmt: skip
    if negative:
        raise NotImplementedError(
            f"model: deep Taylor decomposition needs activations >= 0 (its z+ rule loses the relevance of negative "
            f"ones), got {', '.join(negative)}; supported: {core.type_names(ACTIVATIONS)}; use lrp.explain instead"
        )


@core.contract(signed=True, needs="layers", random=False, sums_to="the logit (biases ignored)")
def explain(
    model, x, target: core.Target = None, *, input_rule: str = "zb", low=0.0, high=1.0, return_layers: bool = False
):
    """Deep Taylor decomposition of the target's logit onto the input (Montavon et al. 2017).

    Parameters
    ----------
    model, x, target : the calling contract (``core``); the model is evaluated in eval mode and left unchanged.
    input_rule : the rule of the first layer: "zb" (default; inputs within [low, high]), "w2" (unbounded
        inputs) or "zplus".
    low, high : the bounds of the input for zB (numbers or tensors broadcastable to ``x``, e.g. (1, 3, 1, 1)
        per channel); ``x`` must lie within them.
    return_layers : also return the relevance at the input of every conv and linear layer (``lrp.explain``).

    Returns a tensor of the shape of ``x`` that sums to the target's logit: no bias absorbs relevance (see
    the module docstring for max-pooling, residual sums and negative logits). Raises ``NotImplementedError`` for
    an activation that can be negative (LeakyReLU, Tanh, ...) and for what ``lrp.explain`` refuses. Chapter 06.
    """
    _check_activations(model)
    rules = composite(input_rule, low=low, high=high)
    return lrp.explain(model, x, target, composite=rules, low=low, high=high, return_layers=return_layers)


def zero_biases(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose convolution and linear biases are 0: where DTD and LRP z+/zB coincide. Chapter 06."""
    copied = copy.deepcopy(core.check_model(model))
    for module in copied.modules():
        if isinstance(module, lrp.WEIGHTED) and module.bias is not None:
            nn.init.zeros_(module.bias)
    return copied


# ----------------------------------------------------------------------------- one neuron, explicitly


@dataclass
class TaylorExpansion:
    """The first-order Taylor expansion of one neuron R(x) = max(0, x . w + b) at its root point. Chapter 06.

    Attributes
    ----------
    value : R(x)
    root : the root point x~ = x - t v (R(x~) = 0); x itself when R(x) = 0
    t, direction : the step and the rule's search direction v
    gradient : dR/dx at the root, taken on the segment from x~ to x (R has a kink at x~ itself)
    relevance : (x - x~) * gradient, the expansion's terms; they sum to R(x)
    in_domain : whether x~ lies in the rule's domain (sign of x kept for z+, within [low, high] for zB)
    """

    value: float
    root: torch.Tensor
    t: float
    direction: torch.Tensor
    gradient: torch.Tensor
    relevance: torch.Tensor
    in_domain: bool


def _neuron_inputs(x, w, b, rule: str, low, high) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple]:
    """x, w, b as tensors of one dtype, and (low, high) broadcast to x; checked."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 1 or x.numel() == 0:
        raise TypeError(f"x: expected a non-empty 1-D float tensor (the inputs of one neuron), got {core.describe(x)}")
    if not isinstance(w, torch.Tensor) or w.shape != x.shape:
        raise ValueError(f"w: expected a tensor of the shape of x {tuple(x.shape)}, got {core.describe(w)}")
    if isinstance(b, bool) or not isinstance(b, (int, float, torch.Tensor)) or torch.as_tensor(b).numel() != 1:
        raise TypeError(f"b: expected a number (the neuron's bias), got {core.describe(b)}")
    if rule not in DIRECTIONS:
        raise ValueError(f"rule: expected one of {list(DIRECTIONS)}, got {core.describe(rule)}")
    low, high = (torch.as_tensor(v, dtype=x.dtype).expand_as(x) for v in (low, high))
    if rule == "zb" and ((x < low).any() or (x > high).any()):
        raise ValueError(f"x: expected values within [low, high] for zB, got values in [{x.min():.3g}, {x.max():.3g}]")
    return x.detach(), w.detach().to(x), torch.as_tensor(b, dtype=x.dtype).reshape(()), (low, high)


def search_direction(
    x: torch.Tensor, w: torch.Tensor, rule: str, low: torch.Tensor, high: torch.Tensor
) -> torch.Tensor:
    """The rule's search direction v (Montavon et al. 2017, sections 4.1-4.3). Chapter 06."""
    if rule == "zplus":
        return x * (x * w > 0)  # x_i 1[w_i > 0] for x >= 0
    if rule == "zb":
        return torch.where(w > 0, x - low, x - high)  # numbers as bounds: x keeps its dtype
    return w.clone()


def _bisect(z, t_low: float, t_high: float, steps: int = 200) -> float:
    """The smallest t in [t_low, t_high] with z(t) <= 0, for z decreasing, z(t_low) > 0 >= z(t_high)."""
    for _ in range(steps):
        middle = 0.5 * (t_low + t_high)
        if middle in (t_low, t_high):
            break
        t_low, t_high = (t_low, middle) if z(middle) <= 0 else (middle, t_high)
    return t_high


def line_search(x, w, b, v) -> float:
    """The step t of the root x - t v of z(x) = x . w + b: bracketed by doubling, then bisected.
    Chapter 06."""
    z = lambda t: ((x - t * v) @ w + b).item()
    if z(0.0) <= 0:
        return 0.0
    t_high = 1.0
    for _ in range(64):
        if z(t_high) <= 0:
            return _bisect(z, 0.0, t_high)
        t_high *= 2
    raise ValueError(
        f"no root point along the rule's direction: z(x - t v) stays positive "
        f"(v . w = {(v @ w).item():.3g}, b = {b.item():.3g}); a positive bias can keep a neuron "
        "active wherever the rule looks"
    )


def root_point(x, w, b=0.0, *, rule: str = "zplus", low=0.0, high=1.0) -> torch.Tensor:
    """The root point x~ of the neuron max(0, x . w + b), found by a line search along the rule's direction.

    Parameters
    ----------
    x, w : 1-D tensors, the neuron's inputs and weights; b : its bias.
    rule : the direction v: "zplus" (v_i = x_i 1[w_i > 0]), "zb" (v_i = x_i - low_i or x_i - high_i by the
        sign of w_i) or "w2" (v_i = w_i), Montavon et al. (2017).
    low, high : the box of zB (numbers or tensors of the shape of x).

    Returns x~ = x - t v with t the smallest step that makes x~ . w + b <= 0 (bisection to machine
    precision); x itself if the neuron is inactive. Raises ``ValueError`` if no step does. Chapter 06.
    """
    x, w, b, (low, high) = _neuron_inputs(x, w, b, rule, low, high)
    v = search_direction(x, w, rule, low, high)
    return x - line_search(x, w, b, v) * v


def _in_domain(rule: str, x: torch.Tensor, root: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> bool:
    tolerance = 1e-9 * max(1.0, x.abs().max().item())
    if rule == "zplus":
        return bool((root * x.sign() >= -tolerance).all())
    if rule == "zb":
        return bool(((root >= low - tolerance) & (root <= high + tolerance)).all())
    return True


def taylor_neuron(x, w, b=0.0, *, rule: str = "zplus", low=0.0, high=1.0) -> TaylorExpansion:
    """The explicit first-order Taylor expansion of R(x) = max(0, x . w + b) at its root point.

    Same parameters as ``root_point``. The gradient dR/dx is computed by autograd at the middle of the
    segment from the root x~ to x, where the neuron is active and linear (at x~ itself R has a kink), and
    relevance_i = (x_i - x~_i) dR/dx_i. It equals the rule's formula v_i w_i / (v . w) R(x) and sums to
    R(x) (Montavon et al. 2017, section 3). Chapter 06.
    """
    x, w, b, (low, high) = _neuron_inputs(x, w, b, rule, low, high)
    v = search_direction(x, w, rule, low, high)
    t = line_search(x, w, b, v)
    root = x - t * v
    with torch.enable_grad():
        middle = (0.5 * (root + x)).requires_grad_()
        (slope,) = torch.autograd.grad(F.relu(middle @ w + b), middle)
    value = F.relu(x @ w + b).item()
    in_domain = _in_domain(rule, x, root, low, high)
    return TaylorExpansion(value, root, t, v, slope, (x - root) * slope, in_domain)


# ----------------------------------------------------------------------------- input invariance


@dataclass
class InvarianceResult:
    """Input invariance (Kindermans et al. 2019): maps of two models that compute the same function. Chapter 06.

    Attributes
    ----------
    output_difference : max |f(x) - g(x + m)| / max |f(x)|: the two models agree (rounding only)
    difference : for each method ("dtd_zb", "dtd_w2", "dtd_zplus", "gradient_x_input"),
        max |map_f - map_g| / max |map_f|
    maps : for each method, (map of f on x, map of g on x + m), on the input the first layer reads
        (zero padding made explicit: one pixel wider on each side for a 3x3 convolution with padding 1)
    """

    output_difference: float
    difference: dict
    maps: dict


def _first_layer(model: nn.Module, x: torch.Tensor) -> str:
    """The name of the conv or linear layer that reads the model input."""
    names, found = {m: n for n, m in model.named_modules()}, []

    def record(module, args):
        if args and core.is_model_input(args[0], x) and not found:
            found.append(names[module])

    weighted = [m for m in model.modules() if isinstance(m, lrp.WEIGHTED)]
    with torch.no_grad(), backward.modified(model, {}, dict.fromkeys(weighted, record)):
        model(x.clone())  # a model may write into its input: x stays the model input to compare with
    if not found:
        raise NotImplementedError("model: input_invariance needs a conv or linear layer that reads the model input")
    return found[0]


def _explicit_padding(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` padded as ``layer`` pads it, and ``layer`` set to pad no more (zero padding only)."""
    if isinstance(layer, nn.Linear):
        return x
    if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
        raise NotImplementedError(f"model: the first layer pads with {layer.padding!r} ({layer.padding_mode}); "
                                  "input_invariance supports numeric zero padding")  # fmt: skip
    pad = [p for p in reversed(layer.padding) for _ in (0, 1)]
    layer.padding = (0,) * len(layer.padding)
    return F.pad(x, pad)


def _absorb_shift(layer: nn.Module, m: torch.Tensor, x: torch.Tensor) -> None:
    """Set the bias of ``layer`` to b - W m, so that it computes the same on x + m as before on x.

    A linear layer reads one value of m per input feature (of x flattened, for images), a convolution one per channel.
    """
    m = m.expand_as(x[:1]) if isinstance(layer, nn.Linear) else m
    offset = torch.einsum("oi...,i->o", layer.weight.detach(), m.flatten())  # sum over inputs (and kernel) of W m
    bias = torch.zeros_like(offset) if layer.bias is None else layer.bias.detach()
    layer.bias = nn.Parameter(bias - offset, requires_grad=False)


def _shift(shift, x: torch.Tensor) -> torch.Tensor:
    """The shift m as a tensor broadcastable to ``x``: one value, or one per channel (images) or feature (vectors)."""
    if isinstance(shift, bool) or not isinstance(shift, (int, float, torch.Tensor)):
        raise TypeError(f"shift: expected a number or one value per channel, got {core.describe(shift)}")
    m = torch.as_tensor(shift, dtype=x.dtype, device=x.device)
    m = m.expand(x.shape[1]) if m.ndim == 0 else m
    if m.ndim != 1 or m.numel() != x.shape[1]:
        raise ValueError(f"shift: expected one value per channel ({x.shape[1]}), got {core.describe(shift)}")
    return m.reshape(1, -1, *[1] * (x.ndim - 2))


@core.contract
def input_invariance(model, x, shift, target: core.Target = None, *, low=0.0, high=1.0) -> InvarianceResult:
    """The input-invariance test of Kindermans et al. (2019, "The (un)reliability of saliency methods").

    Two copies of ``model``: f reads x, g reads x + m and its first layer absorbs the shift in its bias,
    b - W m, so g(x + m) = f(x) and every activation from the first layer on is the same (the first
    layer's zero padding is made explicit first, so that the padding is shifted too). A method is input
    invariant if it gives both the same map. Compared: DTD with zB and the bounds shifted with the input
    ("dtd_zb": invariant, x w - l w^+ - h w^- does not change), DTD with w^2 (invariant: it never looks at
    the input), DTD with z+ at the input ("dtd_zplus": root point 0) and gradient x input (a zero
    reference; neither is invariant).

    Parameters
    ----------
    model, x, target : the calling contract; the target is resolved once, on f(x).
    shift : the constant m added to the input: a number or one value per channel.
    low, high : the bounds of x for zB (numbers or per-channel tensors); g's are low + m, high + m.

    Chapter 06.
    """
    x, _ = core.check_input(model, x)
    lrp.check_bounds(low, high, x.shape)
    m = _shift(shift, x)
    f = copy.deepcopy(model).eval()  # f and g: copies with the first layer's zero padding made explicit
    first = _first_layer(f, x)
    x_f = _explicit_padding(f.get_submodule(first), x)
    g = copy.deepcopy(f)
    _absorb_shift(g.get_submodule(first), m, x_f)  # g(x_f + m) = f(x_f) = model(x)
    x_g = x_f + m
    if x_f.shape != x.shape and ((torch.as_tensor(low) > 0).any() or (torch.as_tensor(high) < 0).any()):
        raise ValueError(
            "low, high: the first layer pads with zeros, which input_invariance makes input pixels; expected "
            f"low <= 0 <= high, got {core.describe(low)} and {core.describe(high)}"
        )
    target = core.resolve_target(target, core.predict(f, x_f))
    bounds_f = {"low": low, "high": high}
    bounds_g = {k: torch.as_tensor(v, dtype=x.dtype) + m for k, v in bounds_f.items()}
    methods = {
        "dtd_zb": lambda net, inputs, bounds: explain(net, inputs, target, **bounds),
        "dtd_w2": lambda net, inputs, bounds: explain(net, inputs, target, input_rule="w2"),
        "dtd_zplus": lambda net, inputs, bounds: explain(net, inputs, target, input_rule="zplus"),
        "gradient_x_input": lambda net, inputs, bounds: gradient.gradient_x_input(net, inputs, target),
    }
    maps = {name: (method(f, x_f, bounds_f), method(g, x_g, bounds_g)) for name, method in methods.items()}
    output_difference = _relative(core.predict(g, x_g), core.predict(f, x_f))
    return InvarianceResult(output_difference, {k: _relative(b, a) for k, (a, b) in maps.items()}, maps)


def _relative(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max |got - expected| / max |expected| (0 when both are 0)."""
    scale = expected.abs().max().item()
    error = (got - expected).abs().max().item()
    if scale == 0:
        return 0.0 if error == 0 else float("inf")
    return error / scale
