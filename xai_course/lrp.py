"""Layer-wise Relevance Propagation (LRP): rules as data, composites, canonization and one engine.

LRP (Bach et al. 2015) explains the score f_c(x) by sending it backwards through the network as
relevance R, layer by layer. A conv or linear layer computes z_k = sum_j a_j w_jk + b_k; a rule
hands the relevance R_k of each output k down to the inputs j in proportion to (modified)
contributions (Montavon et al. 2019):

    R_j = sum_k  a_j rho(w_jk) / (eps + sum_j' a_j' rho(w_j'k) + rho(b_k)) * R_k.

A rule here is data: ``groups()`` lists the modified forward passes (a ``Term``: what the rule
does to the input, the weights and the bias) that share one denominator (a ``Group``). One
function, ``relevance_step``, applies any rule to any conv or linear layer in the four steps of
Montavon et al. (2019, section 10.2.3): z = eps + forward pass with modified parameters,
s = R / z, c = gradient of sum(z * s), R_j = a_j * c_j.

``explain`` runs the same steps for a whole network in one forward and one backward pass: the
backward pass carries c = R / a, so R = a * c at every layer. A forward hook on each conv or linear
layer returns the layer's own output z, but with the gradient of the rule,

    out = [z] + sum_g (z_g - [z_g]) * [coefficient * z / (z_g + eps sign z_g)]    ([.] = detached),

which is z in value. ReLU activations need no hook (their gradient already passes relevance on
unchanged, Zennit's Pass rule), nor does max-pooling as winner-take-all, nor reshaping. Average
pooling and explicit residual ``Sum`` modules split relevance in proportion to their inputs (an
epsilon rule, Zennit's Norm), or to the tensors a ``Composite.norm`` function makes of them.
``check_model`` says what happens to every module and refuses what this cannot handle (BatchNorm,
functional residual additions and layers, unknown modules); ``canonize`` removes the first two.
Introduced in chapter 01.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import fx, nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from . import backward, core, models
from .backward import LAYERS, Sum, as_average, rescaled

STABILIZER = 1e-6  # the small epsilon in the denominators of every rule but Epsilon
PRESETS = ("epsilon", "epsilon_gamma_box", "epsilon_plus", "epsilon_alpha2_beta1")
MAXPOOL = ("winner_take_all", "average")
CONSTANT_INPUTS = ("low", "high", "ones")

Modifier = Callable[[torch.Tensor], torch.Tensor]


def stabilize(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """z + epsilon * sign(z), with sign(0) = +1, so that a denominator never reaches zero. Chapter 01."""
    return torch.where(z >= 0, z + epsilon, z - epsilon)  # where(z >= 0, eps, -eps) would round eps to float32


def _ratio(n: torch.Tensor, z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """n / (z + epsilon sign z), and 0 where that denominator is 0 (possible only with epsilon = 0)."""
    d = stabilize(z, epsilon)
    return n / d if epsilon > 0 else torch.where(d == 0, 0.0, n / d.where(d != 0, 1.0))


def same(t: torch.Tensor) -> torch.Tensor:
    """The unmodified parameter. Chapter 01."""
    return t


def positive(t: torch.Tensor) -> torch.Tensor:
    """t^+ = max(0, t). Chapter 01."""
    return t.clamp(min=0)


def negative(t: torch.Tensor) -> torch.Tensor:
    """t^- = min(0, t). Chapter 01."""
    return t.clamp(max=0)


# ----------------------------------------------------------------------------- rules as data


@dataclass(frozen=True)
class Term:
    """One modified forward pass of a layer: ``layer(input, weight(w), bias(b))``. Chapter 01.

    ``input`` is "a", "a+" or "a-" (the layer's input, or its positive or negative part) or a
    constant input, "low", "high" or "ones", whose relevance is added to the pixels'. A ``bias``
    of None drops the bias.
    """

    input: str = "a"
    weight: Modifier = same
    bias: Modifier | None = same


@dataclass(frozen=True)
class Group:
    """Terms that share one denominator z_g = sum of the terms + eps sign(z_g). Chapter 01.

    Their relevance is multiplied by ``coefficient`` and kept only for the outputs whose
    unmodified z_k is positive (``where="positive"``), negative, or for all of them.
    """

    terms: tuple[Term, ...]
    coefficient: float = 1.0
    where: str = "all"
    epsilon: float = STABILIZER


class Rule:
    """An LRP rule for conv and linear layers: ``groups()`` says what it does. Chapter 01."""

    def groups(self) -> tuple[Group, ...]:
        raise NotImplementedError


@dataclass(frozen=True)
class Epsilon(Rule):
    """LRP-epsilon: R_j = sum_k a_j w_jk / (z_k + eps sign z_k) R_k; 0 is LRP-0 (Bach et al. 2015). Chapter 01."""

    epsilon: float = 1e-6

    def __post_init__(self):
        if not self.epsilon >= 0:
            raise ValueError(f"epsilon: expected a number >= 0, got {self.epsilon!r}")

    def groups(self) -> tuple[Group, ...]:
        return (Group((Term(),), epsilon=self.epsilon),)


@dataclass(frozen=True)
class Gamma(Rule):
    """LRP-gamma: w + gamma w^+ favours positive contributions (Montavon et al. 2019). Chapter 01.

    Generalized to inputs of both signs: outputs with z_k > 0 share relevance among the
    contributions that push z_k up (a^+ with w + gamma w^+, a^- with w + gamma w^-), outputs with
    z_k < 0 among those that push it down. For a >= 0 and z_k > 0 it is the original rule.
    """

    gamma: float = 0.25

    def __post_init__(self):
        if not self.gamma >= 0:
            raise ValueError(f"gamma: expected a number >= 0, got {self.gamma!r}")

    def groups(self) -> tuple[Group, ...]:
        up = lambda t: t + self.gamma * t.clamp(min=0)
        down = lambda t: t + self.gamma * t.clamp(max=0)
        return (
            Group((Term("a+", up, up), Term("a-", down, None)), where="positive"),
            Group((Term("a+", down, down), Term("a-", up, None)), where="negative"),
        )


@dataclass(frozen=True)
class AlphaBeta(Rule):
    """LRP-alpha-beta: alpha times the positive, minus beta times the negative contributions (Bach et al. 2015).

    Each part is normalized on its own, with the bias on its side; alpha - beta = 1 conserves
    relevance. Chapter 01.
    """

    alpha: float = 2.0
    beta: float = 1.0

    def __post_init__(self):
        if self.beta < 0 or abs(self.alpha - self.beta - 1) > 1e-9:
            raise ValueError(f"alpha, beta: expected beta >= 0 and alpha - beta = 1, got {self.alpha}, {self.beta}")

    def groups(self) -> tuple[Group, ...]:
        return (
            Group((Term("a+", positive, positive), Term("a-", negative, None)), coefficient=self.alpha),
            Group((Term("a+", negative, negative), Term("a-", positive, None)), coefficient=-self.beta),
        )


@dataclass(frozen=True)
class ZPlus(Rule):
    """z+: only the positive contributions a^+ w^+ and a^- w^- (alpha=1, beta=0; Montavon et al. 2017). Chapter 01."""

    def groups(self) -> tuple[Group, ...]:
        return (Group((Term("a+", positive, positive), Term("a-", negative, None))),)


@dataclass(frozen=True, eq=False)
class ZBox(Rule):
    """zB for the pixel layer: x w - low w^+ - high w^-, no bias, for inputs in [low, high]
    (Montavon et al. 2017).

    ``low`` and ``high`` are numbers or tensors broadcastable to the input, e.g. (1, 3, 1, 1)
    per channel. Only for a layer that reads the model input. Chapter 01.
    """

    low: float | torch.Tensor
    high: float | torch.Tensor

    def groups(self) -> tuple[Group, ...]:
        low = Term("low", lambda w: -positive(w), None)
        high = Term("high", lambda w: -negative(w), None)
        return (Group((Term("a", bias=None), low, high)),)


@dataclass(frozen=True)
class WSquare(Rule):
    """w^2: R_i = sum_j w_ij^2 / sum_i' w_i'j^2 R_j, no bias, the input does not matter (Montavon et al. 2017).

    For a first layer on unbounded inputs; only for a layer that reads the model input. Chapter 01.
    """

    def groups(self) -> tuple[Group, ...]:
        return (Group((Term("ones", torch.square, None),)),)


@dataclass(frozen=True)
class Flat(Rule):
    """Flat: like w^2 with every weight 1, relevance spread evenly over the receptive field (Lapuschkin 2019).

    Only for a layer that reads the model input. Chapter 01.
    """

    def groups(self) -> tuple[Group, ...]:
        return (Group((Term("ones", torch.ones_like, None),)),)


@dataclass(frozen=True)
class Pass(Rule):
    """Relevance passes unchanged through an element-wise module (an activation). Chapter 01."""

    def groups(self) -> tuple[Group, ...]:
        return ()


# ----------------------------------------------------------------------------- module kinds


WEIGHTED = LAYERS["weighted"]  # conv and linear layers: the layers with rules
_KINDS = {"weighted": "weighted", "relu": "gradient", "shape": "gradient", "activation": "pass",
          "maxpool": "maxpool", "avgpool": "norm", "sum": "norm", "batchnorm": "batchnorm"}  # fmt: skip


def _kind(name: str, module: nn.Module, composite: Composite) -> str:
    """How the engine treats ``module``: weighted, gradient, pass, maxpool, norm, batchnorm or unsupported.

    ReLU (positively homogeneous) and reshaping need no hook: their gradient passes relevance on unchanged."""
    if isinstance(composite.layers.get(name), Pass) and not isinstance(module, WEIGHTED):
        return "pass"
    return _KINDS.get(backward.kind(module), "unsupported")


# ----------------------------------------------------------------------------- composites


@dataclass(frozen=True)
class Composite:
    """Which rule goes where: the first conv or linear layer the input meets, the other convolutions,
    the other linear layers; ``layers`` maps module names to rules and wins over the rest. ``norm`` is
    how ``Sum`` and average pooling split relevance: None in proportion to their inputs (Zennit's Norm),
    or a function ``norm(args, producers)`` that returns the tensors to split by instead, one per input;
    ``producers`` maps ``id(out)`` to ``(out, layer, a, rule)`` for the output of every conv or linear
    layer with a rule. Chapter 01."""

    first: Rule | None = None
    conv: Rule | None = None
    linear: Rule | None = None
    layers: Mapping[str, Rule] | None = None
    norm: Callable[[tuple, dict], list[torch.Tensor]] | None = None

    def __post_init__(self):
        object.__setattr__(self, "layers", dict(self.layers or {}))
        if self.norm is not None and not callable(self.norm):
            raise TypeError(f"norm: expected None or a function norm(args, producers), got {core.describe(self.norm)}")

    def rule_for(self, name: str, module: nn.Module, first: bool) -> Rule | None:
        """The rule for one call of ``module`` (None: no rule, the plain gradient, i.e. LRP-0)."""
        if name in self.layers:
            return self.layers[name]
        if not isinstance(module, WEIGHTED):
            return None
        if first and self.first is not None:
            return self.first
        return self.linear if isinstance(module, nn.Linear) else self.conv

    @classmethod
    def preset(cls, name: str, *, epsilon: float = 1e-6, gamma: float = 0.25, low=0.0, high=1.0) -> Composite:
        """One of ``PRESETS``; each has epsilon on the linear layers (Montavon et al. 2019, Zennit's composites).

        "epsilon": epsilon everywhere; "epsilon_gamma_box": zB on the first layer, gamma on the
        convolutions; "epsilon_plus": z+ on the convolutions; "epsilon_alpha2_beta1": alpha=2,
        beta=1 on the convolutions. Chapter 01.
        """
        conv = {"epsilon": Epsilon(epsilon), "epsilon_gamma_box": Gamma(gamma), "epsilon_plus": ZPlus(),
                "epsilon_alpha2_beta1": AlphaBeta(2.0, 1.0)}  # fmt: skip
        if name not in conv:
            raise ValueError(f"composite: expected one of {list(PRESETS)} or a Composite, got {name!r}")
        check_bounds(low, high)
        first = ZBox(low, high) if name == "epsilon_gamma_box" else None
        return cls(first=first, conv=conv[name], linear=Epsilon(epsilon))


def _broadcasts(shape: torch.Size, to: torch.Size) -> bool:
    try:
        return torch.broadcast_shapes(shape, to) == to
    except RuntimeError:
        return False


def check_bounds(low, high, shape: torch.Size | None = None) -> None:
    """Raise unless ``low`` and ``high`` (the input range of zB) are finite numbers or float tensors, low < high,
    broadcastable to ``shape`` (that of x) when it is given. Chapter 01."""
    for name, value in (("low", low), ("high", high)):
        real = isinstance(value, (int, float)) and not isinstance(value, bool)
        expected = "a number or a float tensor broadcastable to x" + ("" if shape is None else f" {tuple(shape)}")
        if not (real or (isinstance(value, torch.Tensor) and value.is_floating_point())):
            raise TypeError(f"{name}: expected {expected}, got {core.describe(value)}")
        if not torch.isfinite(torch.as_tensor(value)).all():
            raise ValueError(f"{name}: expected finite values, got {core.describe(value)} with NaN or inf")
        if shape is not None and not _broadcasts(torch.as_tensor(value).shape, shape):
            raise ValueError(f"{name}: expected {expected}, got {core.describe(value)}")
    if not (torch.as_tensor(low) < torch.as_tensor(high)).all():
        raise ValueError(f"low, high: expected low < high, got {core.describe(low)} and {core.describe(high)}")


def _composite(composite, low=0.0, high=1.0) -> Composite:
    if isinstance(composite, Composite):
        return composite
    if isinstance(composite, str):
        return Composite.preset(composite, low=low, high=high)
    raise TypeError(f"composite: expected one of {list(PRESETS)} or a Composite, got {core.describe(composite)}")


# ----------------------------------------------------------------------------- one layer, explicitly


def _forward(layer: nn.Module, a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``layer`` applied to ``a`` with the given parameters."""
    if isinstance(layer, nn.Linear):
        return F.linear(a, weight, bias)
    return layer._conv_forward(a, weight, bias)


def _term_input(name: str, a: torch.Tensor, rule: Rule, leaves: dict) -> torch.Tensor:
    """The input of a term; constant inputs become leaves (one per name and rule) whose gradient gives their relevance.

    A leaf made earlier in the shape of the model input is seen in the shape of ``a``, which reshapes it.
    """
    if name in ("a", "a+", "a-"):
        return {"a": same, "a+": positive, "a-": negative}[name](a)
    key = (name, id(rule))  # two zB layers with different bounds need two leaves "low"
    if key not in leaves:
        value = {"low": getattr(rule, "low", None), "high": getattr(rule, "high", None), "ones": 1.0}[name]
        leaves[key] = (torch.zeros_like(a) + torch.as_tensor(value, dtype=a.dtype, device=a.device)).requires_grad_()
    return leaves[key].view_as(a)


def group_output(group: Group, layer: nn.Module, a: torch.Tensor, rule: Rule, leaves: dict) -> torch.Tensor:
    """z_g: the sum of the group's modified forward passes (unstabilized). Chapter 01."""
    skip_negative = bool(a.min() >= 0)  # a^- = 0: a term on it without bias contributes nothing
    z = None
    for term in group.terms:
        if term.input == "a-" and term.bias is None and skip_negative:
            continue
        bias = None if term.bias is None or layer.bias is None else term.bias(layer.bias)
        out = _forward(layer, _term_input(term.input, a, rule, leaves), term.weight(layer.weight), bias)
        z = out if z is None else z + out
    return z


def _where(where: str, z: torch.Tensor) -> torch.Tensor | float:
    """1 for the outputs a group explains, 0 for the others."""
    if where == "positive":
        return (z > 0).to(z)
    if where == "negative":
        return (z < 0).to(z)
    return 1.0


def relevance_step(
    rule: Rule, layer: nn.Module, a: torch.Tensor, relevance: torch.Tensor
) -> torch.Tensor:
    """The relevance R_j of the inputs ``a`` of a conv or linear ``layer``, from R_k of its outputs.

    For each group of the rule, the four steps of Montavon et al. (2019, section 10.2.3):
    (1) z = the group's forward passes + eps sign(z); (2) s = R / z, times the group's
    coefficient where its sign condition holds; (3) c = gradient of sum(z * s) with respect to
    each input; (4) R_j = sum over the inputs of input * c (zB and w^2 have constant inputs too).
    Returns a tensor of the shape of ``a``. Chapter 01.
    """
    if not isinstance(rule, Rule) or isinstance(rule, Pass):
        expected = "a rule for conv and linear layers, e.g. Epsilon()"
        raise TypeError(f"rule: expected {expected}, got {core.describe(rule)}")
    if not isinstance(layer, WEIGHTED):
        expected = core.type_names(WEIGHTED)
        raise NotImplementedError(f"layer: expected one of {expected}, got {type(layer).__name__}")
    leaves: dict = {}
    with torch.enable_grad():
        a, relevance = a.detach().requires_grad_(), relevance.detach()
        z = _forward(layer, a, layer.weight, layer.bias).detach()
        total = 0.0
        for group in rule.groups():
            z_g = group_output(group, layer, a, rule, leaves)  # step 1 (stabilized in step 2)
            ratio = _ratio(relevance, z_g.detach(), group.epsilon)
            s = group.coefficient * _where(group.where, z) * ratio  # step 2
            total = total + (z_g * s).sum()  # step 3: c = d total / d input
        inputs = [a, *leaves.values()]
        grads = torch.autograd.grad(total, inputs, allow_unused=True)
    return sum(t * c for t, c in zip(inputs, grads) if c is not None).detach()  # step 4


# ----------------------------------------------------------------------------- the engine


@dataclass
class _Run:
    """What one LRP pass records: the model input, the constant inputs of the first layer, the input of every layer."""

    composite: Composite
    maxpool: str
    x: torch.Tensor
    leaves: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)
    calls: dict = field(default_factory=dict)
    producers: dict = field(default_factory=dict)  # id(out) -> (out, layer, a, rule), for the composite's norm

    def key(self, name: str, module: nn.Module) -> str:
        """The name of this call of ``module``: its name, then "name (call 2)" if it is used again."""
        self.calls[module] = self.calls.get(module, 0) + 1
        return name if self.calls[module] == 1 else f"{name} (call {self.calls[module]})"


def rule_output(
    rule: Rule, layer: nn.Module, a: torch.Tensor, z: torch.Tensor, leaves: dict
) -> torch.Tensor:
    """The output z of ``layer``, whose backward pass turns c = R / z into c = R / a by ``rule``:
    the gradient of sum_g z_g * (coefficient * z / (z_g + eps sign z_g)), where the group's
    condition on z holds. Chapter 01."""
    scaled = 0.0
    for group in rule.groups():
        z_g = z if group.terms == (Term(),) else group_output(group, layer, a, rule, leaves)
        scale = _ratio(z, z_g.detach(), group.epsilon)
        if group.where != "all" or group.coefficient != 1:
            scale = group.coefficient * _where(group.where, z) * scale
        scaled = scaled + z_g * scale.detach()
    return rescaled(z, scaled, 1.0)


def _constant_inputs(rule: Rule | None) -> list[str]:
    """The constant inputs ("low", "high", "ones") that the terms of ``rule`` read."""
    return [] if rule is None else [t.input for g in rule.groups() for t in g.terms if t.input in CONSTANT_INPUTS]


def _check_first_input(rule: Rule, name: str, a: torch.Tensor, run: _Run) -> None:
    """Check that a rule with constant inputs reads the model input, within zB's bounds; make the constant inputs."""
    if _constant_inputs(rule) and not core.is_model_input(a, run.x):
        raise NotImplementedError(f"composite: {rule} on {name} needs the model input, but {name} reads another tensor")
    if isinstance(rule, ZBox):
        x = run.x  # a is x or a reshape of it; the bounds broadcast to x
        low, high = (torch.as_tensor(v).to(x) for v in (rule.low, rule.high))
        if (x < low - 1e-6).any() or (x > high + 1e-6).any():
            raise ValueError(
                f"x: expected values within the zB bounds [low, high] = [{low.min().item():.3g}, "
                f"{high.max().item():.3g}], got values in [{x.min().item():.3g}, {x.max().item():.3g}]; "
                "pass the true bounds of the input (for normalized images (0 - mean) / std and (1 - mean) / std)"
            )
    for name in _constant_inputs(rule):  # made in the shape of x, so that their relevance is the pixels'
        _term_input(name, run.x, rule, run.leaves)


def _weighted_hook(run: _Run, name: str):
    def hook(module, args, z):
        a = args[0]
        rule = run.composite.rule_for(name, module, first=not run.inputs)
        run.inputs[run.key(name, module)] = a
        if rule is None:
            return None
        _check_first_input(rule, name, a, run)
        out = rule_output(rule, module, a, z, run.leaves)
        if run.composite.norm is not None:  # kept alive with out, so that its id stays unique
            run.producers[id(out)] = (out, module, a, rule)
        return out

    return hook


def _norm_hook(run: _Run):
    """Sum and average pooling: relevance split by the inputs (Zennit's Norm), or by what ``composite.norm`` returns."""

    def hook(module, args, z):
        norm = run.composite.norm
        z_n = z if norm is None else module.forward(*norm(args, run.producers))  # forward: no recursion into hook
        return rescaled(z, z_n, _ratio(z, z_n.detach(), STABILIZER))

    return hook


def _average_hook(module, args, m):
    """Max-pooling seen as average pooling in the backward pass (Montavon et al. 2019, section 10.3.2)."""
    z = as_average(module, args[0])
    return rescaled(m, z, _ratio(m, z.detach(), STABILIZER))


def _pass_hook(module, args, y):
    """Relevance passes unchanged: R_in = a * (y / a) * c_out = R_out."""
    a = args[0]
    if a is y:
        raise NotImplementedError(f"model: the Pass rule needs the input of {type(module).__name__}; set inplace=False")
    return rescaled(y, a, _ratio(y, a.detach(), STABILIZER))


def _rules(model: nn.Module, run: _Run) -> dict:
    """The engine's rule (a forward hook) for each layer that needs one; ``check_model`` has refused the others."""
    rules = {}
    for name, module in model.named_modules():
        kind = _kind(name, module, run.composite)
        rule = {"weighted": _weighted_hook(run, name), "norm": _norm_hook(run), "pass": _pass_hook,
                "maxpool": _average_hook if run.maxpool == "average" else None}.get(kind)  # fmt: skip
        if rule is not None and not list(module.children()):
            rules[module] = rule
    return rules


def _propagate(model: nn.Module, target, run: _Run, return_layers: bool):
    """One forward pass with the rules, one backward pass: the pixel relevance and, if asked, every layer's."""
    with backward.modified(model, _rules(model, run)):
        # a copy: a model may write into its input; flatten: (N, classes) also for an output (N, classes, 1, ...)
        logits = model(run.x.clone()).flatten(1)
    target = core.resolve_target(target, logits)
    onehot = F.one_hot(target, logits.shape[1]).to(logits)
    names = [n for n in run.inputs if not core.is_model_input(run.inputs[n], run.x)] if return_layers else []
    tensors = [run.x, *run.leaves.values(), *(run.inputs[n] for n in names)]
    # the scalar <logits, onehot>, not grad_outputs=onehot: torch imports sympy (0.7 s) at its first grad_outputs
    grads = torch.autograd.grad((logits * onehot).sum(), tensors, allow_unused=True)
    products = [t.detach() * (0.0 if c is None else c) for t, c in zip(tensors, grads)]
    n_pixel_terms = 1 + len(run.leaves)  # the input, and the constant inputs of zB or w^2
    relevance = sum(products[:n_pixel_terms])
    if not return_layers:
        return relevance, None
    by_name = dict(zip(names, products[n_pixel_terms:]))
    layers = {n: by_name.get(n, relevance) for n in run.inputs}  # layers reading the input get the pixels'
    layers["output"] = (logits * onehot).detach()
    return relevance, layers


@core.contract(signed=True, needs="layers", random=False, sums_to="the logit, less what biases absorb")
def explain(
    model,
    x,
    target: core.Target = None,
    *,
    composite: str | Composite = "epsilon_gamma_box",
    maxpool: str = "winner_take_all",
    low=0.0,
    high=1.0,
    return_layers: bool = False,
):
    """LRP relevance of every input value for the target's logit.

    Parameters
    ----------
    model, x, target : the calling contract (``core``); the model is evaluated in eval mode and left unchanged.
    composite : one of ``PRESETS`` (default "epsilon_gamma_box") or a ``Composite``.
    maxpool : "winner_take_all" (relevance to the maximum, the gradient) or "average" (max-pooling
        treated as average pooling in the backward pass, Montavon et al. 2019).
    low, high : the bounds of the input values, for the zB rule of the presets (numbers or tensors
        broadcastable to ``x``, e.g. (1, 3, 1, 1) per channel).
    return_layers : also return a dict: the relevance arriving at the input of every conv and linear
        layer, in forward order (the first layer's input is the pixels), then "output", the relevance
        of the logits (the target's logit, zeros elsewhere).

    Returns a tensor of the shape of ``x`` whose sum is the target's logit minus what biases and
    epsilons absorb (and, with ``return_layers``, the dict). Raises ``NotImplementedError`` with the
    ``check_model`` report for a model LRP would explain wrongly. Chapter 01.
    """
    x, unbatched = core.check_input(model, x)
    check_bounds(low, high, x.shape)
    composite = _composite(composite, low, high)
    report = check_model(model, composite, maxpool=maxpool, x=x)
    if not report.ok:
        raise NotImplementedError(f"model: LRP would explain this model wrongly.\n{report}")
    with core.model_guard(model), torch.enable_grad():
        run = _Run(composite, maxpool, x.contiguous().requires_grad_())  # check_input's copy
        relevance, layers = _propagate(model, target, run, return_layers)
    relevance = core.output_like(relevance, x, unbatched)
    if not return_layers:
        return relevance
    return relevance, {name: core.output_like(r, x, unbatched) for name, r in layers.items()}


# ----------------------------------------------------------------------------- what the engine sees


@dataclass
class Report:
    """What LRP does to each module call, what it cannot see or handle, and notes. Chapter 01.

    ``rows`` are (module name, type, what LRP does) in forward order; ``problems`` make ``explain``
    refuse the model; ``notes`` are things handled correctly that are worth knowing.
    """

    rows: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        widths = [max([len(h)] + [len(r[i]) for r in self.rows]) for i, h in enumerate(("module", "type"))]
        lines = [f"{'module':{widths[0]}}  {'type':{widths[1]}}  LRP"]
        lines += [f"{n:{widths[0]}}  {t:{widths[1]}}  {what}" for n, t, what in self.rows]
        lines += [f"PROBLEM: {p}" for p in self.problems] + [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    __repr__ = __str__


@dataclass(frozen=True)
class _Functional:
    """A call of a function between the layers: its name, the module whose forward made it, its tensor arguments."""

    name: str
    scope: str
    tensors: int

    @property
    def residual(self) -> bool:
        """An addition of two tensors the model computes (a residual connection)."""
        return self.name in _ADDITIONS and self.tensors == 2

    @property
    def harmless(self) -> bool:
        """Reshaping, a sign flip or a ReLU: relevance a * c passes on through them unchanged."""
        return self.name in _HARMLESS


_ADDITIONS = ("add", "add_", "iadd", "__add__", "__iadd__", "__radd__")
_HARMLESS = ("flatten", "reshape", "view", "contiguous", "squeeze", "unsqueeze", "getitem", "__getitem__", "neg",
             "__neg__", "relu", "relu_")  # fmt: skip
_RESHAPES = ("flatten", "reshape", "view", "contiguous")


class _Recorder(TorchFunctionMode):
    """Records the function calls a forward pass makes between the layers (not inside them), in this thread only."""

    def __init__(self):
        super().__init__()
        self.scopes, self.depth, self.calls = [""], 0, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.depth == 0 and isinstance(out, torch.Tensor) and out.grad_fn is not None:  # computed from x
            tensors = sum(isinstance(a, torch.Tensor) for a in args)
            call = _Functional(getattr(func, "__name__", str(func)), self.scopes[-1], tensors)
            self.calls.append((call, out.grad_fn))
        return out


def _recorded(model: nn.Module, x: torch.Tensor) -> tuple[list, list, None]:
    """The layer calls (name, reads the model input) and function calls of ``model`` on one sample of ``x``,
    in forward order: a forward pass watched by hooks and a ``TorchFunctionMode``, nothing patched."""
    names, calls, recorder = {m: n for n, m in model.named_modules()}, [], _Recorder()
    x = x[:1].clone().requires_grad_(True)

    def enter(module, args):
        if list(module.children()):
            recorder.scopes.append(names[module])
        else:
            calls.append((names[module], bool(args) and core.is_model_input(args[0], x)))
            recorder.depth += 1

    def leave(module, args, out):
        if list(module.children()):
            recorder.scopes.pop()
        else:
            recorder.depth -= 1

    modules = [m for m in model.modules() if m is not model]
    with core.model_guard(model), torch.enable_grad():
        with backward.modified(model, dict.fromkeys(modules, leave), before=dict.fromkeys(modules, enter)):
            copy_of_x = x.clone()  # a model may write into its input
            with recorder:
                logits = model(copy_of_x)
    on_path = backward.autograd_nodes(logits) if isinstance(logits, torch.Tensor) else set()
    return calls, [call for call, node in recorder.calls if node in on_path], None


class _Tracer(fx.Tracer):
    """torch.fx tracer that keeps ``Sum`` modules as calls (as it does for torch.nn layers)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, Sum) or super().is_leaf_module(m, qualname)


def _scope(node: fx.Node) -> str:
    """The module a functional call was made in ("" for the top level)."""
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack)[-1] if stack else ""


def _functional(node: fx.Node) -> _Functional:
    """A traced function call, as ``_recorded`` sees it."""
    tensors = sum(isinstance(a, fx.Node) and a.target not in _NOT_TENSORS for a in node.args)
    return _Functional(getattr(node.target, "__name__", str(node.target)), _scope(node), tensors)


_NOT_TENSORS = ("size", "dim", getattr, len)


def _traced(model: nn.Module) -> tuple[list, list, str | None]:
    """``_recorded`` without an input: the layer and function calls of ``model`` from a torch.fx trace."""
    try:
        with core.EXPLAINING:  # the trace patches nn.Module.__call__ for the whole process
            graph = _Tracer().trace(model)
    except Exception as error:  # data-dependent control flow and the like
        leaves = [n for n, m in model.named_modules() if not list(m.children())]
        return [(n, None) for n in leaves], [], f"{type(error).__name__}: {error}"
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    for node in graph.nodes:  # in forward order: the input reshaped (nn.Flatten, x.view) is still the input
        if node.args and node.args[0] in inputs and _is_reshape(node, model):
            inputs.append(node)
    calls = [(n.target, bool(n.args) and n.args[0] in inputs) for n in graph.nodes if n.op == "call_module"]
    functional = [n for n in graph.nodes if n.op in ("call_function", "call_method") and n.target not in _NOT_TENSORS]
    return calls, [_functional(n) for n in functional], None


def _is_reshape(node: fx.Node, model: nn.Module) -> bool:
    """A call that passes its input on with the same values in the same order (a reshape, identity or dropout)."""
    if node.op == "call_module":
        return backward.kind(model.get_submodule(node.target)) == "shape"
    return node.op in ("call_function", "call_method") and _functional(node).name in _RESHAPES


def _functional_problem(call: _Functional) -> str | None:
    where = f" in {call.scope or 'the top-level forward'}"
    if call.residual:
        return (f"residual addition {call.name}{where}: relevance would follow the gradient, not a rule; "
                "make it an explicit Sum with lrp.canonize(model)")  # fmt: skip
    if call.harmless:
        return None
    return f"functional call {call.name}{where}: there is no module to attach a rule to; use a module instead"


def _module_row(name, module, kind, rule, maxpool, reads_input, norm) -> tuple[str, str | None]:
    """What LRP does to one call of ``module``, and the problem that stops it (or None)."""
    if kind == "weighted":
        problem = f"{name}: {rule} needs the model input, but {name} reads another tensor"
        return (repr(rule) if rule else "no rule: LRP-0 (the plain gradient)"), (
            problem if _constant_inputs(rule) and reads_input is False else None)  # fmt: skip
    if kind == "maxpool" and maxpool == "average":
        odd = getattr(module, "dilation", 1) not in (1, (1, 1)) or getattr(module, "return_indices", False)
        return "as average pooling (epsilon rule)", f"{name}: dilation or return_indices" if odd else None
    if kind == "pass" and getattr(module, "inplace", False):
        return "Pass", f"{name}: Pass needs the input of an in-place {type(module).__name__}; set inplace=False"
    split = "Norm: split by the inputs" if norm is None else f"Norm: split by {getattr(norm, '__name__', norm)}"
    what = {"gradient": "passes relevance on (the gradient)", "pass": "Pass", "norm": split,
            "maxpool": "winner-take-all (the gradient)"}  # fmt: skip
    if kind in what:
        return what[kind], None
    if kind == "batchnorm":
        return "-", f"{name} (BatchNorm): merge it into the layer before with lrp.canonize(model)"
    return "-", f"{name}: {type(module).__name__} has no LRP rule; supported: {backward.supported('LRP')}"


def _notes(seen: dict, modules: dict, composite: Composite) -> list[str]:
    """Notes on modules called several times or in place that the engine handles correctly, grouped."""
    groups: dict = {}
    for name, calls in seen.items():
        module, kind = modules[name], _kind(name, modules[name], composite)
        facts = [f"called {calls} times"] * (calls > 1) + ["in-place"] * bool(getattr(module, "inplace", False))
        if facts and kind not in ("pass", "batchnorm", "unsupported"):
            how = "no hook, the gradient passes relevance on" if kind == "gradient" else "every call is hooked"
            groups.setdefault((" and ".join(facts), how), []).append(f"{name} ({type(module).__name__})")
    return [f"{facts}: {', '.join(names)}; fine, {how}" for (facts, how), names in groups.items()]


def _check_composite(model: nn.Module, composite: Composite) -> None:
    modules = dict(model.named_modules())
    unknown = [n for n in composite.layers if n not in modules]
    if unknown:
        raise ValueError(f"composite: layers names {unknown} are not modules of model, e.g. {list(modules)[1:4]}")
    for rule in (composite.first, composite.conv, composite.linear, *composite.layers.values()):
        if rule is not None and not isinstance(rule, Rule):
            raise TypeError(f"composite: expected Rule objects, got {core.describe(rule)}")
    for name, rule in composite.layers.items():
        if isinstance(modules[name], WEIGHTED) == isinstance(rule, Pass):
            raise ValueError(
                f"composite: layers[{name!r}] is {rule!r}, but Pass is the rule for element-wise "
                f"modules and the others for {core.type_names(WEIGHTED)}; {name} is {type(modules[name]).__name__}"
            )


@core.contract
def check_model(
    model, composite: str | Composite = "epsilon_gamma_box", *, maxpool: str = "winner_take_all", x=None
) -> Report:
    """A report of what LRP does to each layer call of ``model`` and of what it cannot see.

    Runs the model on one sample of ``x``, watched by hooks on its modules and a ``TorchFunctionMode``
    (both local to the call), to find the layers in forward order (the first conv or linear layer gets
    the composite's ``first`` rule), layers used several times, in-place activations, and function calls
    between the layers that lead to the output (``x + y`` residuals, functional layers). Without ``x``
    it traces the model with ``torch.fx`` instead, which patches ``nn.Module.__call__`` for the whole
    process while it traces (explanations in other threads wait; other forward passes should not run).
    ``explain`` refuses a model whose report lists problems. Chapter 01.
    """
    composite = _composite(composite)
    if maxpool not in MAXPOOL:
        raise ValueError(f"maxpool: expected one of {list(MAXPOOL)}, got {core.describe(maxpool)}")
    _check_composite(model, composite)
    modules = dict(model.named_modules())
    calls, functional, untraced = _traced(model) if x is None else _recorded(model, core.check_input(model, x)[0])
    report, seen, first = Report(), Counter(), True
    for name, reads_input in calls:
        module = modules[name]
        seen[name] += 1
        kind = _kind(name, module, composite)
        rule = composite.rule_for(name, module, first) if kind == "weighted" else None
        first = first and kind != "weighted"
        what, problem = _module_row(name, module, kind, rule, maxpool, reads_input, composite.norm)
        report.rows.append((name if seen[name] == 1 else f"{name} (call {seen[name]})", type(module).__name__, what))
        if problem and seen[name] == 1:
            report.problems.append(problem)
    report.problems += [p for p in map(_functional_problem, functional) if p]
    harmless = Counter(call.name for call in functional if call.harmless)
    if harmless:
        counts = ", ".join(f"{name} ({n}x)" for name, n in harmless.items())
        report.notes.append(f"functional calls {counts}: fine, reshaping and ReLU pass relevance on as their gradient")
    report.notes += _notes(seen, modules, composite)
    if untraced:
        report.notes.append(f"torch.fx could not trace the model ({untraced}): functional calls, reuse and the "
                            "order of the layers were not checked (registration order shown)")  # fmt: skip
    return report


# ----------------------------------------------------------------------------- canonization


def _merge_batchnorm(gm: fx.GraphModule, node: fx.Node, uses: dict) -> None:
    """Fold the BatchNorm called at ``node`` into the conv or linear layer that feeds only it."""
    bn, producer = gm.get_submodule(node.target), node.args[0]
    if not (isinstance(producer, fx.Node) and producer.op == "call_module" and len(producer.users) == 1):
        return
    layer = gm.get_submodule(producer.target)
    if not isinstance(layer, WEIGHTED) or uses[producer.target] > 1 or not (bn.affine and bn.track_running_stats):
        return
    parent, _, child = producer.target.rpartition(".")
    setattr(gm.get_submodule(parent), child, models.merge_batch_norm(layer, bn))
    node.replace_all_uses_with(producer)
    gm.graph.erase_node(node)


def _make_sum(gm: fx.GraphModule, node: fx.Node) -> None:
    """Replace the residual addition at ``node`` by a call of a new ``Sum`` module."""
    first_operand = node.args[0]
    if _functional(node).name in ("iadd", "add_", "__iadd__") and len(first_operand.users) > 1:
        return  # an in-place addition whose first operand is read elsewhere: left for check_model to report
    scope = _scope(node)
    base = f"{scope}.residual" if scope else "residual"
    name, k = base, 0
    while name in dict(gm.named_modules()):
        k, name = k + 1, f"{base}_{k + 1}"
    gm.add_submodule(name, Sum())
    with gm.graph.inserting_after(node):
        call = gm.graph.call_module(name, tuple(node.args))
    node.replace_all_uses_with(call)
    gm.graph.erase_node(node)


@core.contract
def canonize(model, x=None) -> fx.GraphModule:
    """A copy of ``model`` that LRP can explain: BatchNorm merged, residual additions made explicit.

    Every BatchNorm that follows a conv or linear layer (used once, feeding only it) is folded into
    that layer with ``models.merge_batch_norm`` (w' = w gamma / sqrt(var + eps), b' = (b - mean)
    gamma / sqrt(var + eps) + beta); every addition of two tensors becomes a ``Sum`` module. Returns
    a ``torch.fx.GraphModule`` in eval mode with the outputs of the model in eval mode; ``model`` is
    untouched. If ``x`` is given, the outputs on ``x`` are compared and a ``RuntimeError`` raised if
    they differ by more than 1e-5 (relative to the largest logit). Chapter 01.
    """
    original = model
    model = copy.deepcopy(model).eval()
    try:
        with core.EXPLAINING:  # the trace patches nn.Module.__call__ for the whole process
            gm = fx.GraphModule(model, _Tracer().trace(model), class_name=f"Canonized{type(model).__name__}")
    except Exception as error:
        raise NotImplementedError(f"model: canonize needs torch.fx to trace the model, it failed: {error}") from None
    uses = Counter(node.target for node in gm.graph.nodes if node.op == "call_module")
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and backward.kind(gm.get_submodule(node.target)) == "batchnorm":
            _merge_batchnorm(gm, node, uses)
        elif node.op in ("call_function", "call_method") and _functional(node).residual:
            _make_sum(gm, node)
    gm.graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    if x is not None:
        x, _ = core.check_input(original, x)
        with core.model_guard(original):
            expected, got = core.predict(original, x), core.predict(gm, x)
        error = (expected - got).abs().max().item()
        if error > 1e-5 * max(1.0, expected.abs().max().item()):
            raise RuntimeError(f"canonize: the canonized model's outputs differ from the model's by {error:.3g} on x")
    return gm.eval()
