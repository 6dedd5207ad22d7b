"""Deconvnet, guided backprop and the deconvolutional network of Zeiler & Fergus.

Zeiler & Fergus (2014, "Visualizing and understanding convolutional networks") project one activation of a
layer back to pixel space with a deconvolutional network attached to the model. All other activations of the
layer are set to zero, then each layer is undone in turn, down to the pixels:

- unpooling: each value goes back to the position the forward max-pool picked (its recorded *switch*);
- rectification: R <- max(R, 0), whatever the forward ReLU let through;
- filtering: the transposed filters, i.e. a transposed convolution with the layer's own weights (no bias);
  a linear layer multiplies by W^T.

``project`` builds that network explicitly for a chain of layers (ShapesCNN). It equals the gradient of the
kept activations with one change: at every ReLU the backward pass sends max(R_out, 0) instead of
R_out 1[z > 0]. Max-pooling's gradient already unpools by the switches, and a convolution's gradient is the
transposed convolution. ``deconvnet`` computes that modified gradient of the target's logit, for any network.
Guided backprop (Springenberg, Dosovitskiy, Brox & Riedmiller 2015, "Striving for simplicity") applies both
masks: R_in = R_out 1[z > 0] 1[R_out > 0]. Saliency (Simonyan, Vedaldi & Zisserman 2014) keeps the plain
gradient (``gradient.saliency``).

The modified backward pass is a rule for the ReLU (``deconvnet_rule``, ``guided_rule``) that ``backward.relu_rule``
applies to every ReLU *call*: ``nn.ReLU`` modules (in place or not, one module reused several times) and functional
calls (``F.relu``, ``torch.relu``, ``x.relu()``) alike. A call of any other activation (sigmoid, tanh, GELU, leaky
ReLU, softmax, clamp, ...) raises ``NotImplementedError``. A ReLU written as other arithmetic (``x * (x > 0)``,
``torch.where``) cannot be seen and keeps its plain gradient. TorchScript modules may not be seen either.

The maps hardly depend on the target class or on the upper layers' weights (Nie, Zhang & Patel 2018;
Adebayo et al. 2018): ``target_similarity`` and ``evaluate.randomization_check`` measure this.
Deconvolutional (transposed-convolution) layers also upsample images, as in super-resolution networks. Their
uneven overlap makes checkerboard artifacts (Odena, Dumoulin & Olah 2016); ``train_upsampler`` shows both
effects, and ``inversion.checkerboard`` measures the artifacts.

Speed (``python benchmarks/deconvnet_speed.py``: 1, 8 and 32 course images, ShapesCNN, median of 21): the model's
own forward pass and a backward pass with one hook call per ReLU, which writes the rule into the ReLU's gradient;
Captum's hooks add two autograd nodes, several Python calls and a new tensor per ReLU. The time ratio to Captum
is 0.83 to 0.98 for 8 and 32 images; for one image (0.93 to 1.02) the package's own checks and model guard weigh
as much as the saving. Introduced in chapter 07.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations

import torch
import torch.nn.functional as F
from torch import nn

from . import data as course_data
from . import inversion, training
from .backward import LAYERS, max_pool_switches, modified, relu_rule, unpool
from .core import (
    batch_slices,
    check_input,
    check_model,
    check_number,
    check_positive_int,
    check_seed,
    check_spatial,
    contract,
    describe,
    model_guard,
    output_like,
    predict,
    target_gradient,
)
from .evaluate import spearman

# ----------------------------------------------------------------------------- the modified ReLU backward passes


def deconvnet_rule(r_out: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """The deconvnet's ReLU backward pass: R_in = max(R_out, 0), whatever the ReLU let through.

    ``gradient`` = R_out 1[z > 0], the ReLU's own gradient, is not needed: R_in is written into
    it (a tensor of this backward pass alone, so no new one is allocated). Chapter 07."""
    return torch.clamp(r_out, min=0, out=gradient)


def guided_rule(r_out: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """Guided backprop's ReLU backward pass: R_in = R_out 1[z > 0] 1[R_out > 0], the ReLU's own
    gradient ``gradient`` = R_out 1[z > 0], then max(., 0) (in place). Chapter 07."""
    return gradient.clamp_(min=0)


@contract(signed=True, needs="gradients", random=False)
def deconvnet(model, x, target=None) -> torch.Tensor:
    """The deconvnet map of the target's logit (Zeiler & Fergus 2014), as a modified gradient.

    Backpropagates the target's logit with R_in = max(R_out, 0) at every ReLU call (the forward mask is
    ignored) and the plain gradient everywhere else: max-pooling unpools by its switches, a convolution
    applies its transposed filters. For a chain of layers this is ``project`` from the logits divided by
    the logit. Same shape as ``x``; the model is evaluated in eval mode and left unchanged. Chapter 07.
    """
    x, r, unbatched = target_gradient(model, x, target, forward=relu_rule(deconvnet_rule))
    return output_like(r, x, unbatched)


@contract(signed=True, needs="gradients", random=False)
def guided_backprop(model, x, target=None) -> torch.Tensor:
    """Guided backprop (Springenberg et al. 2015): R_in = R_out 1[z > 0] 1[R_out > 0] at every ReLU call.

    The gradient's forward mask and the deconvnet's backward mask at once; everything else as in
    ``deconvnet``. Same shape as ``x``. Chapter 07.
    """
    x, r, unbatched = target_gradient(model, x, target, forward=relu_rule(guided_rule))
    return output_like(r, x, unbatched)


# ----------------------------------------------------------------------------- the explicit deconvolutional network

_CONVS = (nn.Conv1d, nn.Conv2d)
_MAXPOOLS = (nn.MaxPool1d, nn.MaxPool2d)  # not the adaptive ones of LAYERS["maxpool"]
_AFFINE = (*LAYERS["avgpool"], *LAYERS["batchnorm"])  # linear maps: transposed by their gradient
_RESHAPES = (nn.Flatten, nn.Unflatten, nn.Identity, nn.modules.dropout._DropoutNd)
_PROJECTABLE = (nn.ReLU, *LAYERS["weighted"], *_MAXPOOLS, *_AFFINE, *_RESHAPES)  # ReLU only, not LeakyReLU
_SUPPORTED = ", ".join(t.__name__.lstrip("_").replace("DropoutNd", "Dropout") for t in _PROJECTABLE)


@dataclass(frozen=True)
class _Layer:
    """One layer of the chain: its name, the module, and the shapes of one sample's input and output."""

    name: str
    module: nn.Module
    input_shape: tuple
    output_shape: tuple


def _problems(names: dict, calls: list) -> list[str]:
    """Why the recorded calls cannot be walked as a chain: reused or unsupported layers, odd settings."""
    problems = []
    for module in dict.fromkeys(m for m, _ in calls):
        name, count = names[module], sum(m is module for m, _ in calls)
        if count > 1:
            problems.append(f"{name} ({type(module).__name__}) is called {count} times")
        if not isinstance(module, _PROJECTABLE):
            problems.append(f"{name} ({type(module).__name__}) has no deconvolutional counterpart")
        elif isinstance(module, _CONVS) and (module.padding == "same" or module.padding_mode != "zeros"):
            problems.append(f"{name}: padding {module.padding!r} with mode {module.padding_mode!r}")
        elif isinstance(module, _MAXPOOLS) and module.return_indices:
            problems.append(f"{name}: return_indices=True")
    return problems


def _replay(calls: list, x: torch.Tensor, out) -> tuple[list[tuple], str | None]:
    """The output shape of each call when the layers are applied one after the other to ``x``, and whether
    that chain gives the model's output (None) or not (the reason)."""
    a, shapes = x, []
    try:
        for module, input_shape in calls:
            a = module(a.reshape(input_shape))
            shapes.append(tuple(a.shape))
    except RuntimeError as error:
        return shapes, f"its layers applied one after the other fail ({str(error).splitlines()[0]})"
    if not isinstance(out, torch.Tensor) or a.shape != out.shape or not torch.allclose(a, out, rtol=1e-5, atol=1e-6):
        return shapes, "its layers applied one after the other do not give its output"
    return shapes, None


def _chain(model: nn.Module, x: torch.Tensor) -> list[_Layer]:
    """The layers of ``model`` in call order on ``x[:1]``, checked to form a chain that computes the model.

    ``NotImplementedError`` names what breaks the chain: a layer called several times or with no
    deconvolutional counterpart, residual additions, functional layers (F.relu, torch.cat) between modules.
    """
    names = {m: n for n, m in model.named_modules()}
    leaves = [m for m in model.modules() if not list(m.children())]
    calls: list = []
    record = lambda m, args: calls.append((m, tuple(args[0].shape)))
    with model_guard(model), torch.no_grad():
        with modified(model, {}, dict.fromkeys(leaves, record)):
            out = model(x[:1])
        problems = _problems(names, calls)
        shapes, mismatch = _replay(calls, x[:1], out) if not problems else ([], None)
    if problems or mismatch:
        found = "; ".join(problems) if problems else mismatch
        raise NotImplementedError(
            f"model: project walks a chain of layers, each called once, from the input to the logits (such as "
            f"ShapesCNN), and cannot walk {type(model).__name__}: {found}. Residual networks cannot be projected "
            f"this way; deconvnet and guided_backprop work for them. Supported layers: {_SUPPORTED}"
        )
    return [_Layer(names[m], m, shape, output) for (m, shape), output in zip(calls, shapes)]


def _up_to(chain: list[_Layer], model: nn.Module, layer) -> list[_Layer]:
    """``chain`` up to the layer called ``layer`` (a container: up to its last layer)."""
    if not isinstance(layer, str):
        raise TypeError(f"layer: expected a module name (str) from model.named_modules(), got {describe(layer)}")
    names = [step.name for step in chain]
    inside = [i for i, name in enumerate(names) if name == layer or name.startswith(layer + ".")]
    if not layer or not inside or layer not in dict(model.named_modules()):
        raise ValueError(f"layer: expected one of the layers {names} or a container of them, got {layer!r}")
    return chain[: inside[-1] + 1]


def _run(chain: list[_Layer], x: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """The forward pass through ``chain``: the last layer's output and the switches of every max-pool."""
    a, switches = x, {}
    for i, step in enumerate(chain):
        a = a.reshape(len(a), *step.input_shape[1:])  # functional reshapes between layers (torch.flatten)
        if isinstance(step.module, _MAXPOOLS):
            a, switches[i] = max_pool_switches(step.module, a)
        else:
            a = step.module(a)
    return a, switches


def _transposed_conv(conv: nn.Module, r: torch.Tensor, size: tuple) -> torch.Tensor:
    """The transposed filters of ``conv`` applied to ``r``, back to the input ``size`` (no bias)."""
    d = r.ndim - 2
    padding = (0,) * d if conv.padding == "valid" else conv.padding
    covered = [
        (r.shape[2 + i] - 1) * conv.stride[i] - 2 * padding[i] + conv.dilation[i] * (conv.kernel_size[i] - 1) + 1
        for i in range(d)
    ]
    extra = [size[2 + i] - covered[i] for i in range(d)]  # rows and columns the stride skipped at the end
    transpose = F.conv_transpose2d if d == 2 else F.conv_transpose1d
    return transpose(r, conv.weight, None, conv.stride, padding, extra, conv.groups, conv.dilation)


def _transposed_affine(module: nn.Module, r: torch.Tensor, size: tuple) -> torch.Tensor:
    """A linear layer's transpose (average pooling, BatchNorm in eval mode): its gradient, at any point."""
    with torch.enable_grad():
        a = torch.zeros(size, dtype=r.dtype, device=r.device, requires_grad=True)
        (t,) = torch.autograd.grad((module(a) * r).sum(), a)  # grad_outputs would import sympy (0.7 s) once
    return t


def undo_layer(
    module: nn.Module, r: torch.Tensor, size: tuple, switches: torch.Tensor | None
) -> torch.Tensor:
    """One layer of the deconvolutional network: from the layer's output back to its input of
    ``size``. Chapter 07."""
    if isinstance(module, nn.ReLU):
        return r.relu()  # rectification, whatever the forward ReLU let through
    if isinstance(module, _MAXPOOLS):
        return unpool(r, switches, size)
    if isinstance(module, _CONVS):
        return _transposed_conv(module, r, size)
    if isinstance(module, nn.Linear):
        return r @ module.weight  # W^T R
    if isinstance(module, _AFFINE):
        return _transposed_affine(module, r, size)
    return r.reshape(size)  # Flatten, Unflatten, Identity, Dropout


def project_back(chain: list[_Layer], switches: dict, r: torch.Tensor) -> torch.Tensor:
    """The deconvolutional network: ``r`` at the output of the last layer of ``chain`` back to the
    pixels. Chapter 07."""
    for i in reversed(range(len(chain))):
        step, n = chain[i], len(r)
        r = r.reshape(n, *step.output_shape[1:])
        r = undo_layer(step.module, r, (n, *step.input_shape[1:]), switches.get(i))
    return r


def _unravel(flat: torch.Tensor, shape: tuple) -> torch.Tensor:
    """Multi-indices (N, len(shape)) of flat indices into ``shape``."""
    index = []
    for size in reversed(shape):
        index.append(flat % size)
        flat = flat // size
    return torch.stack(index[::-1], 1) if index else flat.new_zeros(len(flat), 0)


def _check_channel(channel, a: torch.Tensor) -> int:
    if isinstance(channel, bool) or not isinstance(channel, int):
        raise TypeError(f"channel: expected an int, got {describe(channel)}")
    if not 0 <= channel < a.shape[1]:
        raise ValueError(f"channel: expected an int in [0, {a.shape[1] - 1}] (the layer's channels), got {channel}")
    return channel


def _positions(position, a: torch.Tensor, channel: int) -> torch.Tensor | None:
    """The kept position of each image (N, d), or None for the whole feature map (or a linear layer's unit)."""
    spatial = tuple(a.shape[2:])
    if position is None:
        return None
    if isinstance(position, str) and position == "max":
        return _unravel(a[:, channel].flatten(1).argmax(1), spatial) if spatial else None
    index = (position,) if type(position) is int else position
    valid = isinstance(index, tuple) and len(index) == len(spatial) and all(type(i) is int for i in index)
    if not valid or not all(0 <= i < s for i, s in zip(index, spatial)):
        raise ValueError(
            f"position: expected None, 'max' or a tuple of {len(spatial)} ints within {spatial} (the layer's "
            f"spatial size), got {describe(position)}"
        )
    return torch.tensor(index, device=a.device).expand(len(a), -1)


def _keep(a: torch.Tensor, channel: int, positions: torch.Tensor | None) -> torch.Tensor:
    """``a`` with every activation set to zero except feature map ``channel`` (or one position of it)."""
    kept = torch.zeros_like(a)
    if positions is None:
        kept[:, channel] = a[:, channel]
    else:
        index = (torch.arange(len(a), device=a.device), channel, *positions.unbind(1))
        kept[index] = a[index]
    return kept


@contract(signed=True, needs="gradients", random=False)
def project(model, x, layer: str, channel: int, *, position=None) -> torch.Tensor:
    """The deconvolutional network of Zeiler & Fergus (2014): one feature of ``layer`` projected to pixel space.

    Parameters
    ----------
    model : a chain of layers, each called once (ShapesCNN); others raise ``NotImplementedError``.
    x : images (N, C, H, W) (or series, or one unbatched sample).
    layer : a module name from ``model.named_modules()`` (a container stands for its last layer).
    channel : the feature map (for a linear layer: the unit) to keep.
    position : None keeps the whole feature map, "max" its largest activation in each image, a tuple of
        ints (one per spatial dimension of the layer) that one activation.

    The kept activations keep their values, all others are set to zero; then the network goes back layer by
    layer (``undo_layer``): unpooling by the recorded switches, rectification, transposed filters (no bias)
    or W^T, the gradient of average pooling and BatchNorm, reshaping. Returns the projection, of the shape of
    ``x``; from the logits (the last Linear, unit c) it is f_c(x) times ``deconvnet(model, x, c)`` when
    f_c(x) > 0. Chapter 07.
    """
    x, unbatched = check_input(model, x)
    chain = _up_to(_chain(model, x), model, layer)
    with model_guard(model), torch.no_grad():
        a, switches = _run(chain, x)
        channel = _check_channel(channel, a)
        r = project_back(chain, switches, _keep(a, channel, _positions(position, a, channel)))
    return output_like(r, x, unbatched)


# ----------------------------------------------------------------------------- top activations


@dataclass
class Gallery:
    """The k inputs that activate one feature map most, with their projections (Zeiler & Fergus 2014). Chapter 07.

    Attributes
    ----------
    layer, channel : the feature map
    indices : (k,) rows of the data, strongest first
    activations : (k,) the largest activation of the feature map in each of them
    positions : (k, d) where it is (d spatial dimensions; no columns for a linear layer)
    images : (k, C, *spatial) the inputs
    projections : (k, C, *spatial) ``project`` of that one activation
    boxes : (k, 2 d) its receptive field, clipped to the input: (start, stop) per spatial dimension
    patches, projection_patches : the images and projections cut to the boxes
    """

    layer: str
    channel: int
    indices: torch.Tensor
    activations: torch.Tensor
    positions: torch.Tensor
    images: torch.Tensor
    projections: torch.Tensor
    boxes: torch.Tensor
    patches: list[torch.Tensor]
    projection_patches: list[torch.Tensor]


def _per_dim(value, d: int) -> torch.Tensor:
    return torch.tensor(value if isinstance(value, tuple) else (value,) * d)


def _receptive_fields(chain: list[_Layer], positions: torch.Tensor, size: tuple) -> torch.Tensor:
    """(k, 2 d) boxes (start, stop) of the input values that can reach the activation at each position.

    Going down, a window of size s, stride t, padding p and dilation e maps the rows [lo, hi] of its
    output to [lo t - p, hi t - p + e (s - 1)] of its input; a linear or reshaping layer to everything.
    """
    size_t, d = torch.tensor(size), positions.shape[1]
    lo, hi, whole = positions.clone(), positions.clone(), d != len(size)
    for i in reversed(range(len(chain))):
        step, m = chain[i], chain[i].module
        reshaped = i > 0 and chain[i - 1].output_shape != step.input_shape
        if whole or reshaped or isinstance(m, (nn.Linear, nn.Flatten, nn.Unflatten)):
            whole = True
            break
        if isinstance(m, (*_CONVS, *_MAXPOOLS, nn.AvgPool1d, nn.AvgPool2d)):
            padding = 0 if m.padding == "valid" else m.padding
            k, t, p = (_per_dim(v, d) for v in (m.kernel_size, m.stride, padding))
            e = _per_dim(getattr(m, "dilation", 1), d)
            lo, hi = lo * t - p, hi * t - p + e * (k - 1)
        elif isinstance(m, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)):
            n_in, n_out = torch.tensor(step.input_shape[2:]), torch.tensor(step.output_shape[2:])
            lo, hi = lo * n_in // n_out, -(-(hi + 1) * n_in // n_out) - 1
    if whole:
        lo, hi = torch.zeros(len(positions), len(size), dtype=torch.long), (size_t - 1).expand(len(positions), -1)
    start, stop = lo.clamp(min=0), torch.minimum(hi + 1, size_t)
    return torch.stack([start, stop], 2).flatten(1)


def _crop(t: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    return t[(slice(None), *(slice(int(a), int(b)) for a, b in box.view(-1, 2)))]


def top_activations(model, data, layer: str, channel: int, k: int = 9, *, batch_size: int = 256) -> Gallery:
    """The ``k`` inputs of ``data`` whose feature map ``channel`` of ``layer`` has the largest maximum.

    Zeiler & Fergus's feature visualization: each input's strongest activation of the map is projected
    *separately* to pixel space (``project`` with that position) and shown next to the input patch of its
    receptive field. ``data`` is a float tensor (N, C, H, W) or a ``data.Shapes`` batch; the activations are
    computed in batches without gradients; ties keep the data order. Chapter 07.
    """
    check_model(model)
    images, _ = check_input(model, getattr(data, "images", data), "data")
    check_positive_int("k", k)
    if k > len(images):
        raise ValueError(f"k: expected at most the number of inputs {len(images)}, got {k}")
    chain = _up_to(_chain(model, images), model, layer)
    with model_guard(model), torch.no_grad():
        best, where = [], []
        for part in batch_slices(len(images), batch_size):
            a, _ = _run(chain, images[part])
            values = a[:, _check_channel(channel, a)].reshape(len(a), -1)
            best.append(values.max(1).values)
            where.append(values.argmax(1))
        order = torch.argsort(torch.cat(best), descending=True, stable=True)[:k]
        positions = _unravel(torch.cat(where)[order], tuple(a.shape[2:]))
        a, switches = _run(chain, images[order])
        projections = project_back(chain, switches, _keep(a, channel, positions))
    boxes = _receptive_fields(chain, positions.cpu(), tuple(images.shape[2:]))
    return Gallery(
        layer, channel, order, torch.cat(best)[order], positions, images[order], projections, boxes,
        [_crop(images[i], box) for i, box in zip(order, boxes)], [_crop(p, box) for p, box in zip(projections, boxes)],
    )  # fmt: skip


# ----------------------------------------------------------------------------- limitations, measured


@dataclass
class TargetSimilarity:
    """How alike one method's maps for different targets are, per image. Chapter 07.

    Attributes
    ----------
    targets : the classes explained
    cosine : (N,) mean over the pairs of targets of the cosine similarity of the signed maps (C x H x W)
    spearman : (N,) mean over the pairs of the Spearman rank correlation of the maps sum_c |R_c|
    maps : (T, N, C, *spatial) the maps, one per target
    """

    targets: list[int]
    cosine: torch.Tensor
    spearman: torch.Tensor
    maps: torch.Tensor


@contract
def target_similarity(method: Callable, model, x, targets=None) -> TargetSimilarity:
    """Explain every image of ``x`` for several targets and measure how similar the maps are.

    A class-discriminative method gives different maps for different classes (a low or negative cosine
    similarity of the signed maps); the deconvnet and guided backprop give nearly the same map whatever the
    class (Nie et al. 2018). The Spearman correlation of the magnitudes tells less: every method puts most
    magnitude on the objects in the image, whatever the class. ``method`` follows the calling contract
    (``method(model, x, target)``); ``targets``: at least two distinct class indices (default: all). Chapter 07.
    """
    if not callable(method):
        raise TypeError(f"method: expected a callable method(model, x, target), got {describe(method)}")
    x, _ = check_input(model, x)
    check_spatial(x)
    with model_guard(model):
        n_classes = predict(model, x[:1]).shape[1]
    targets = list(range(n_classes)) if targets is None else targets
    valid = isinstance(targets, (list, tuple)) and all(type(t) is int and 0 <= t < n_classes for t in targets)
    if not valid or len(set(targets)) < 2:
        raise ValueError(
            f"targets: expected a list of at least two distinct class indices in [0, {n_classes - 1}], "
            f"got {describe(targets)}"
        )
    maps = torch.stack([method(model, x, t) for t in targets])
    signed, magnitude = maps.flatten(2), maps.abs().sum(2).flatten(2)
    pairs = list(combinations(range(len(targets)), 2))
    cosine = torch.stack([F.cosine_similarity(signed[s], signed[t], dim=1) for s, t in pairs]).mean(0)
    rho = torch.stack([spearman(magnitude[s], magnitude[t]) for s, t in pairs]).nanmean(0)
    return TargetSimilarity(list(targets), cosine, rho, maps)


# ----------------------------------------------------------------------------- up-convolution: super-resolution


class Upsampler(nn.Module):
    """An up-convolutional network that doubles the resolution of images.

    The body is a 3x3 convolution (channels -> ``width``) with a ReLU, then one x2 upsampling stage of
    ``inversion.Decoder``: a stride-2 transposed convolution of ``kernel_size`` 3 or 5 (``upsampling=
    "transposed"``, the deconvolutional layer, whose kernel is not divisible by its stride) or a
    resize-convolution ("resize_conv"). With ``residual=True`` the output is bilinear(x) + body(x), and the
    last layer starts at zero, so training starts from bilinear upsampling (residual learning, Kim, Lee &
    Lee 2016); with ``residual=False`` it is body(x). Chapter 07.
    """

    def __init__(
        self, channels: int = 3, width: int = 16, *, upsampling: str = "transposed", kernel_size: int = 3,
        residual: bool = True,
    ):  # fmt: skip
        super().__init__()
        if upsampling not in inversion.UPSAMPLING:
            raise ValueError(f"upsampling: expected one of {list(inversion.UPSAMPLING)}, got {upsampling!r}")
        if upsampling == "transposed" and kernel_size not in (3, 5):
            raise ValueError(f"kernel_size: expected 3 or 5 (not divisible by the stride 2), got {kernel_size!r}")
        check_positive_int("width", width)
        check_positive_int("channels", channels)
        stage = inversion.upsampling_stage(width, channels, upsampling, kernel_size)
        self.body = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), *stage)
        self.residual = residual
        if residual:
            nn.init.zeros_(self.body[-1].weight)
            nn.init.zeros_(self.body[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.residual:
            return self.body(x)
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False) + self.body(x)


@dataclass
class UpsamplerResult:
    """A trained ``Upsampler`` and its errors on held-out images, against bilinear upsampling. Chapter 07.

    Attributes
    ----------
    net : the trained network, in eval mode
    rmse, rmse_bilinear : root mean square pixel error of each test image (64 x 64, in [0, 1]), averaged
    checkerboard, checkerboard_bilinear : mean ``inversion.checkerboard`` of the error images
    seconds : the training time (wall clock)
    history : the mean training loss (pixel MSE) of each epoch
    """

    net: Upsampler
    rmse: float
    rmse_bilinear: float
    checkerboard: float
    checkerboard_bilinear: float
    seconds: float
    history: list[float]


def downsample(images: torch.Tensor) -> torch.Tensor:
    """Half the resolution by averaging 2 x 2 blocks: the low-resolution images the upsampler starts from.

    ``images`` (N, C, H, W) of at least 2 x 2 pixels; an odd last row or column is dropped. Chapter 07.
    """
    if not isinstance(images, torch.Tensor) or not images.is_floating_point() or images.ndim != 4:
        raise TypeError(f"images: expected a float tensor (N, C, H, W), got {describe(images)}")
    if min(images.shape[-2:]) < 2:
        raise ValueError(f"images: expected images of at least 2 x 2 pixels, got {describe(images)}")
    return F.avg_pool2d(images, 2)


def train_upsampler(
    *,
    n_train: int = 1000,
    n_test: int = 100,
    epochs: int = 3,
    width: int = 16,
    upsampling: str = "transposed",
    kernel_size: int = 3,
    residual: bool = True,
    batch_size: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
    progress: bool = False,
) -> UpsamplerResult:
    """Train an ``Upsampler`` to take 32 x 32 course images back to 64 x 64, and measure it.

    The training images are ``n_train`` course images (``data.shapes``, train split, ``seed``) and their
    ``downsample``; the network is fitted with Adam on the pixel MSE (``training.fit``, a one-cycle schedule
    peaking at ``lr``), deterministic for a ``seed``. The errors are measured on ``n_test``
    test-split images, against bilinear upsampling of the same inputs. Chapter 07.
    """
    for name, value in (("n_train", n_train), ("n_test", n_test), ("epochs", epochs), ("batch_size", batch_size)):
        check_positive_int(name, value)
    check_number("lr", lr, 0.0, strict=True)
    seed = check_seed(seed)
    high = course_data.shapes(n_train, "train", seed=seed).images
    test = course_data.shapes(n_test, "test", seed=seed).images
    torch.optim.Adam([nn.Parameter(torch.zeros(1))])  # PyTorch's one-time import on a first optimizer: not timed
    start = time.perf_counter()
    net, history = training.fit(
        lambda: Upsampler(high.shape[1], width, upsampling=upsampling, kernel_size=kernel_size, residual=residual),
        (downsample(high), high), epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, progress=progress,
        desc="upsampler",
    )  # fmt: skip
    seconds = time.perf_counter() - start
    with torch.no_grad():
        low = downsample(test)
        output = net(low)
        bilinear = F.interpolate(low, scale_factor=2, mode="bilinear", align_corners=False)
    rmse = [inversion.rmse(y, test).mean().item() for y in (output, bilinear)]
    board = [inversion.checkerboard(y, test).mean().item() for y in (output, bilinear)]
    return UpsamplerResult(net, rmse[0], rmse[1], board[0], board[1], seconds, history)
