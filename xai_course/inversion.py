"""Inversion: rebuilding the input from what a layer keeps.

phi(x) is the output of one module of the model (a "layer", named as in ``model.named_modules()``),
captured with a forward hook that stops the forward pass there. Three ways to go back from phi to x:

- **Optimization** (Mahendran & Vedaldi 2015, "Understanding deep image representations by inverting
  them"). Starting from noise, find

      x* = argmin_{x in [0, 1]^(C x H x W)}  ||phi(x) - phi0||^2 / ||phi0||^2 + lambda_alpha R_alpha(x)
                                                                              + lambda_V R_V^beta(x)

  with the alpha-norm prior R_alpha(x) = mean |(x - 1/2) / B|^alpha, B = 1/2 (the image centred and scaled
  by half the pixel range, as the paper's mean-subtracted images scaled by B), and the total-variation prior
  R_V^beta(x) = mean_{c,i,j} ((x_{c,i,j+1} - x_{c,i,j})^2 + (x_{c,i+1,j} - x_{c,i,j})^2)^(beta/2) with
  forward differences and replicate boundary (deep-goggle's choice); both averaged over the C H W values, so
  their weights do not depend on the image size. The paper uses alpha = 6 and beta = 2 for CNNs. The
  reconstruction is kept in the valid pixel range [0, 1] by projection: after every Adam step the pixels are
  clamped to [0, 1] (projected gradient descent). A sigmoid parametrization would also keep the range but
  slows pixels near 0 and 1 down, and the course images have many of those.
- **A trained decoder** (Dosovitskiy & Brox 2016, "Inverting visual representations with convolutional
  networks"): a small network f(phi(x), w) trained with the pixel MSE sum_i ||x_i - f(phi(x_i), w)||^2 on
  images, which learns the expected pre-image E[x | phi(x)]. Its upsampling is either a resize-convolution
  (nearest-neighbour x2, then a 3x3 convolution) or a stride-2 transposed convolution whose kernel (3 or 5)
  is not divisible by the stride, which gives the checkerboard artifact (Odena, Dumoulin & Olah 2016);
  ``checkerboard`` measures it.
- **A prediction-vector attack** (Yang, Zhang, Chang & Liang 2019, "Neural network inversion in adversarial
  setting via background knowledge alignment"): an inversion network from the released softmax vector to the
  image, trained on auxiliary data the attacker owns; the vector may be truncated to its top-k entries.

Every reconstruction comes with its relative feature error ||phi(x*) - phi(x)|| / ||phi(x)||, its pixel error
(root mean square over the C H W values) and its SSIM (Wang, Bovik, Sheikh & Simoncelli 2004) against the
original (``Inversion``). The model is never changed (``core.model_guard``): it runs in eval mode with its
parameters frozen, and the hooks are removed. Decoders and attacks are trained by ``training`` (``train_decoder``,
``train_attack``); the shipped ones come from ``load``. Introduced in chapter 04.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import data, models
from .backward import modified
from .core import (
    batch_slices,
    check_differentiable,
    check_input,
    check_model,
    check_number,
    check_positive_int,
    check_seed,
    contract,
    describe,
    model_guard,
)
from .layers import names, output, submodule

LOW, HIGH = 0.0, 1.0  # the valid pixel range of the course images
STEPS = 200  # default optimization steps (shapes_cnn, first block: relative feature error < 0.1 well before)
LR = 0.1  # Adam step size in pixel units, decayed to zero by a cosine schedule
TV_WEIGHT = 2.0  # lambda_V, for the priors averaged over pixels
ALPHA_WEIGHT = 0.05  # lambda_alpha
LEAKY_SLOPE = 0.2  # negative slope of the decoders' leaky ReLUs (Dosovitskiy & Brox)
YANG_C = 50.0  # the constant c added to the log-probabilities (Yang et al.'s repository)
UPSAMPLING = ("resize_conv", "transposed")
OPTIMIZERS = ("adam", "sgd")  # sgd: with momentum 0.9, as Mahendran & Vedaldi

# ----------------------------------------------------------------------------- argument checks


def _check_images(model: nn.Module, x, name: str = "x") -> tuple[torch.Tensor, bool]:
    """``check_input`` for images (N, C, H, W) whose values lie in the valid pixel range."""
    x, unbatched = check_input(model, x, name)
    if x.ndim != 4:
        raise ValueError(f"{name}: expected images (N, C, H, W) or (C, H, W), got {describe(x)}")
    if x.min() < LOW or x.max() > HIGH:
        raise ValueError(
            f"{name}: expected pixel values in [{LOW}, {HIGH}], got values in [{x.min().item():.3g}, "
            f"{x.max().item():.3g}]"
        )
    return x, unbatched


def images_of(data, model: nn.Module, name: str) -> torch.Tensor:
    """The images of ``data`` (a tensor (N, C, H, W) in [0, 1] or a ``data.Shapes`` batch), checked. Chapter 04."""
    images = getattr(data, "images", data)
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name}: expected images (N, C, H, W) or a data.Shapes batch, got {describe(data)}")
    return _check_images(model, images, name)[0]


# ----------------------------------------------------------------------------- the layers to invert


_PASS_THROUGH = (nn.Flatten, nn.Unflatten, nn.Identity, nn.modules.dropout._DropoutNd)
_MIXING = (nn.modules.conv._ConvNd, nn.Linear)


def _units(module: nn.Module, prefix: str = ""):
    """(name, module) of the children, descending into containers (Sequential, ModuleList, ModuleDict)."""
    for name, child in module.named_children():
        if isinstance(child, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
            yield from _units(child, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", child


@contract
def blocks(model, x) -> list[str]:
    """The default layers of ``reconstruct_layers``: the output of every block of ``model``.

    The model's units are its children, looking inside containers (``nn.Sequential``, ...), in the order of
    their first call on ``x[:1]``. A block starts at each unit holding a convolution or a linear layer and
    ends at the last unit called before the next block starts (or the last unit called), skipping units that
    only reshape (Flatten, Identity, Dropout). For ``ShapesCNN``: the three max-pools, the ReLU between the
    two 64-channel convolutions, the hidden ReLU of the classifier and the logits. Chapter 04.
    """
    check_model(model)
    x, _ = check_input(model, x)
    units = dict(_units(model))
    order: list[str] = []

    def record(name):
        return lambda m, args: None if name in order else order.append(name)

    with model_guard(model), torch.no_grad(), modified(model, {}, {unit: record(name) for name, unit in units.items()}):
        model(x[:1])
    starts = [i for i, name in enumerate(order) if any(isinstance(m, _MIXING) for m in units[name].modules())]
    ends = []
    for start, stop in zip(starts, [*starts[1:], len(order)]):
        kept = [name for name in order[start:stop] if not isinstance(units[name], _PASS_THROUGH)]
        ends.append(kept[-1])
    return ends


# ----------------------------------------------------------------------------- priors and metrics


def _per_image(x: torch.Tensor, name: str = "x") -> tuple[torch.Tensor, bool]:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim not in (3, 4):
        raise TypeError(f"{name}: expected a float tensor (N, C, H, W) or (C, H, W), got {describe(x)}")
    return (x.unsqueeze(0), True) if x.ndim == 3 else (x, False)


def alpha_prior(x: torch.Tensor, alpha: float = 6) -> torch.Tensor:
    """R_alpha(x) = mean |(x - 1/2) / (1/2)|^alpha over each image's C H W values (Mahendran & Vedaldi).

    Images in [0, 1] give values in [0, 1]; shape (N,) for x (N, C, H, W), a scalar for (C, H, W). Chapter 04.
    """
    alpha = check_number("alpha", alpha, 1.0)
    x, unbatched = _per_image(x)
    centre, half = (LOW + HIGH) / 2, (HIGH - LOW) / 2
    r = ((x - centre) / half).abs().pow(alpha).flatten(1).mean(1)
    return r[0] if unbatched else r


def total_variation(x: torch.Tensor, beta: float = 2) -> torch.Tensor:
    """R_V^beta(x) = mean over c, i, j of ((x_{c,i,j+1} - x_{c,i,j})^2 + (x_{c,i+1,j} -
    x_{c,i,j})^2)^(beta/2).

    Forward differences with replicate boundary (the difference past the last row or column is
    zero), as in Mahendran & Vedaldi's code; beta = 2 for CNNs, beta = 1 gives their spiky
    artifacts. Shape (N,) for x (N, C, H, W), a scalar for (C, H, W). Chapter 04.
    """
    beta = check_number("beta", beta, 0.0, strict=True)
    x, unbatched = _per_image(x)
    dx = F.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1, 0, 0))
    dy = F.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    squared = dx**2 + dy**2
    if beta != 2:  # d^beta has an infinite slope at 0 for beta < 2: keep the gradient finite
        squared = squared.clamp(min=1e-10)
    r = squared.pow(beta / 2).flatten(1).mean(1)
    return r[0] if unbatched else r


def ssim(a: torch.Tensor, b: torch.Tensor, *, win_size: int | None = None, data_range: float = 1.0) -> torch.Tensor:
    """Structural similarity of the images ``a`` and ``b`` (N, C, H, W), one value per image (Wang et al. 2004).

    SSIM = (2 mu_a mu_b + C1)(2 s_ab + C2) / ((mu_a^2 + mu_b^2 + C1)(s_a^2 + s_b^2 + C2)) in every
    ``win_size`` x ``win_size`` window (uniform weights, sample covariances), C1 = (0.01 L)^2,
    C2 = (0.03 L)^2, L = ``data_range``, averaged over the windows inside the image and over the channels:
    scikit-image's ``structural_similarity`` defaults (with ``channel_axis``). ``win_size`` None means 7, or
    the largest odd size that fits a smaller image (NaN below 3 pixels). Chapter 04.
    """
    a, unbatched = _per_image(a, "a")
    b, _ = _per_image(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"b: expected the shape of a {tuple(a.shape)}, got {describe(b)}")
    side = min(a.shape[-2:])
    if win_size is None:
        win_size = min(7, side - (side % 2 == 0))
        if win_size < 3:
            nan = torch.full((a.shape[0],), math.nan, dtype=a.dtype, device=a.device)
            return nan[0] if unbatched else nan
    check_positive_int("win_size", win_size, 3)
    if win_size % 2 == 0 or win_size > side:
        raise ValueError(f"win_size: expected an odd int <= the image side {side}, got {win_size}")
    n, c, h, w = a.shape
    dtype = a.dtype
    a, b = (t.double().reshape(n * c, 1, h, w) for t in (a, b))
    mean = lambda t: F.avg_pool2d(t, win_size, stride=1)
    mu_a, mu_b = mean(a), mean(b)
    unbiased = win_size**2 / (win_size**2 - 1)
    var_a = unbiased * (mean(a * a) - mu_a**2)
    var_b = unbiased * (mean(b * b) - mu_b**2)
    cov = unbiased * (mean(a * b) - mu_a * mu_b)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = (2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    s = s.view(n, -1).mean(1).to(dtype)
    return s[0] if unbatched else s


def rmse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Root mean square of a - b over each image's C H W values, shape (N,) for (N, C, H, W), a scalar for
    (C, H, W). Chapter 04."""
    a, unbatched = _per_image(a, "a")
    b, _ = _per_image(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"b: expected the shape of a {tuple(a.shape)}, got {describe(b)}")
    r = (a - b).flatten(1).pow(2).mean(1).sqrt()
    return r[0] if unbatched else r


def region_error(
    reconstruction: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, *, relative: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel error (root mean square over channels and pixels) inside and outside ``mask``, each shape (N,).

    ``mask`` (N, H, W) bool marks a region, e.g. the class-defining shape of ``data.shapes``. A region of
    high contrast has large errors for any blurry guess, so with ``relative=True`` each error is divided by
    that of the flat guess, the image's mean colour, in the same region: 0 is exact, 1 no better than knowing
    the mean colour. NaN for an empty region. Chapter 04.
    """
    reconstruction, unbatched = _per_image(reconstruction, "reconstruction")
    x, _ = _per_image(x)
    if x.shape != reconstruction.shape:
        raise ValueError(f"x: expected the shape of reconstruction {tuple(reconstruction.shape)}, got {describe(x)}")
    expected = (x.shape[0], *x.shape[-2:])
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"mask: expected a bool tensor of shape {expected}, got {describe(mask)}")
    if unbatched and mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask.shape != expected:
        raise ValueError(f"mask: expected a bool tensor of shape {expected}, got {describe(mask)}")
    mask = mask.unsqueeze(1).to(x.device)

    def errors(guess):
        squared = (guess - x).pow(2).mean(1, keepdim=True)
        inside = (squared * mask).flatten(1).sum(1) / mask.flatten(1).sum(1)
        outside = (squared * ~mask).flatten(1).sum(1) / (~mask).flatten(1).sum(1)
        return inside.sqrt(), outside.sqrt()

    inside, outside = errors(reconstruction)
    if relative:
        flat_inside, flat_outside = errors(x.mean((2, 3), keepdim=True).expand_as(x))
        inside, outside = inside / flat_inside, outside / flat_outside
    return (inside[0], outside[0]) if unbatched else (inside, outside)


@dataclass
class Inversion:
    """Reconstructions of images from one layer, with their errors. Chapter 04.

    Attributes
    ----------
    images : the reconstructions x*, shape of the input (N, C, H, W) or (C, H, W)
    layer : the module name inverted ("prediction vector" for the attack)
    feature_error : (N,) relative feature error ||phi(x*) - phi(x)|| / ||phi(x)||
    pixel_error : (N,) root mean square of x* - x over C H W
    ssim : (N,) SSIM of x* against x
    history : (steps, N) relative feature error at each optimization step, or None
    """

    images: torch.Tensor
    layer: str
    feature_error: torch.Tensor
    pixel_error: torch.Tensor
    ssim: torch.Tensor
    history: torch.Tensor | None = None


def _result(x_star, x, phi_star, phi0, layer, unbatched, history=None) -> Inversion:
    x_star = x_star.detach()
    feature_error = (phi_star - phi0).flatten(1).norm(dim=1) / phi0.flatten(1).norm(dim=1).clamp(min=1e-12)
    values = [x_star, feature_error, rmse(x_star, x), ssim(x_star, x)]
    if unbatched:
        values = [v[0] for v in values]
        history = None if history is None else history[:, 0]
    return Inversion(values[0], layer, *values[1:], history=history)


# ----------------------------------------------------------------------------- optimization (Mahendran & Vedaldi)


def _init(init, x: torch.Tensor, seed: int) -> torch.Tensor:
    """The starting image: "noise" (uniform in [0, 1], seeded), "gray" (all 1/2) or a tensor like x."""
    if isinstance(init, str) and init == "noise":
        g = torch.Generator().manual_seed(seed)
        return (LOW + (HIGH - LOW) * torch.rand(x.shape, generator=g)).to(x)
    if isinstance(init, str) and init == "gray":
        return torch.full_like(x, (LOW + HIGH) / 2)
    if isinstance(init, torch.Tensor) and init.is_floating_point():
        try:
            start = init.detach().to(x).expand_as(x).clone()
        except RuntimeError:
            start = None
        if start is not None and start.min() >= LOW and start.max() <= HIGH:
            return start
    raise ValueError(
        f"init: expected 'noise', 'gray' or a float tensor broadcastable to {tuple(x.shape)} with values in "
        f"[{LOW}, {HIGH}], got {describe(init)}"
    )


def minimize_objective(
    phi, x, start, *, steps, lr, tv_weight, beta, alpha, alpha_weight, optimizer, progress, desc
):
    """Projected Adam (or SGD) on Mahendran & Vedaldi's objective, from ``start``: the feature error
    ||phi(x*) - phi(x)||^2 / ||phi(x)||^2 plus the priors. Returns x*, phi(x*), phi(x), history.

    ``phi`` maps images to the features of one layer. The objective is summed over the images; the
    updates are element-wise, so each image is optimized as if alone. The step size decays from
    ``lr`` to zero on a cosine schedule. Chapter 04.
    """
    with torch.no_grad():
        phi0 = phi(x).detach()
    norm0 = phi0.flatten(1).pow(2).sum(1).clamp(min=1e-24)
    x_star = start.clone().requires_grad_(True)
    if optimizer == "adam":
        optimizer = torch.optim.Adam([x_star], lr=lr)
    else:
        optimizer = torch.optim.SGD([x_star], lr=lr, momentum=0.9)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    history = torch.empty(steps, x.shape[0])
    with torch.enable_grad():
        for step in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
            feature_loss = (phi(x_star) - phi0).flatten(1).pow(2).sum(1) / norm0
            objective = feature_loss
            if alpha_weight:
                objective = objective + alpha_weight * alpha_prior(x_star, alpha)
            if tv_weight:
                objective = objective + tv_weight * total_variation(x_star, beta)
            history[step] = feature_loss.detach().sqrt().cpu()
            optimizer.zero_grad()
            objective.sum().backward()
            optimizer.step()
            schedule.step()
            with torch.no_grad():
                x_star.clamp_(LOW, HIGH)
    x_star = x_star.detach()
    with torch.no_grad():
        phi_star = phi(x_star)
    return x_star, phi_star, phi0, history


@contract
def optimize(
    model,
    x,
    layer: str,
    *,
    steps: int = STEPS,
    lr: float = LR,
    tv_weight: float = TV_WEIGHT,
    beta: float = 2,
    alpha: float = 6,
    alpha_weight: float = ALPHA_WEIGHT,
    seed: int = 0,
    init="noise",
    optimizer: str = "adam",
    progress: bool = True,
) -> Inversion:
    """Invert the representation of ``x`` at ``layer`` by optimization (Mahendran & Vedaldi 2015).

    Minimizes ||phi(x*) - phi0||^2 / ||phi0||^2 + alpha_weight R_alpha(x*) + tv_weight R_V^beta(x*)
    with Adam (step ``lr``, cosine decay over ``steps``), clamping x* to [0, 1] after every step. Different
    starts (``seed``, ``init``) and optimizers reach different x* with the same features.

    Parameters
    ----------
    model : classifier; unchanged, run in eval mode with frozen parameters
    x : images (N, C, H, W) or (C, H, W) in [0, 1]
    layer : a module name of ``model`` (``names(model)``)
    steps, lr : optimization steps and step size (pixel units for Adam)
    tv_weight, beta : weight lambda_V and exponent of the total-variation prior (``total_variation``)
    alpha, alpha_weight : exponent and weight lambda_alpha of the alpha-norm prior (``alpha_prior``)
    seed : seed of the random start (``init="noise"``)
    init : "noise" (uniform in [0, 1]), "gray" (1/2 everywhere) or a tensor like ``x`` in [0, 1]
    optimizer : "adam", or "sgd" (momentum 0.9, the paper's; needs its own ``lr``). Gradient descent moves
        x* only within the span of the gradients, so without priors on a linear map it ends at the solution
        nearest to the start; Adam rescales each pixel's step and ends elsewhere.
    progress : show a progress bar

    Returns
    -------
    Inversion with the reconstructions, their feature, pixel and SSIM errors, and the feature error per step.
    The same call gives the same result. Each image is optimized as if alone, but a batch of a different size
    rounds the convolutions differently, and at deep layers the optimization can amplify that into another,
    equally valid, solution. Chapter 04.
    """
    check_model(model)
    submodule(model, layer)
    x, unbatched = _check_images(model, x)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {list(OPTIMIZERS)}, got {describe(optimizer)}")
    check_positive_int("steps", steps)
    check_number("lr", lr, 0.0, strict=True)
    check_number("tv_weight", tv_weight)
    check_number("beta", beta, 0.0, strict=True)
    check_number("alpha", alpha, 1.0)
    check_number("alpha_weight", alpha_weight)
    start = _init(init, x, check_seed(seed))

    def phi(images: torch.Tensor) -> torch.Tensor:
        features = output(model, images, layer)
        return check_differentiable(features, f"the features of layer {layer}") if images.requires_grad else features

    settings = dict(steps=steps, lr=lr, tv_weight=tv_weight, beta=beta, alpha=alpha, alpha_weight=alpha_weight)
    with model_guard(model):
        x_star, phi_star, phi0, history = minimize_objective(
            phi, x, start, **settings, optimizer=optimizer, progress=progress, desc=layer
        )
    return _result(x_star, x, phi_star, phi0, layer, unbatched, history)


@contract
def reconstruct_layers(model, x, layers: Sequence[str] | None = None, *, progress: bool = True, **kwargs):
    """``optimize`` at every layer of ``layers`` (default: ``blocks(model, x)``, the output of every block).

    ``kwargs`` are passed to ``optimize``; ``tv_weight`` may also be a sequence with one weight per layer
    (Mahendran & Vedaldi regularize deeper layers more). Returns a dict layer -> Inversion, in order. Chapter 04.
    """
    check_model(model)
    if layers is None:
        layers = blocks(model, x)
        if not layers:
            raise ValueError(
                "layers: found no block (a convolution or linear layer) among the model's children; "
                f"pass layers from {names(model)}"
            )
    if isinstance(layers, str) or not isinstance(layers, Sequence) or not layers:
        raise TypeError(f"layers: expected a non-empty list of module names, got {describe(layers)}")
    for layer in layers:
        submodule(model, layer)
    tv = kwargs.pop("tv_weight", TV_WEIGHT)
    tv = tv if isinstance(tv, Sequence) else [tv] * len(layers)
    if len(tv) != len(layers):
        raise ValueError(f"tv_weight: expected one weight per layer ({len(layers)}), got {len(tv)}")
    results = {}
    for layer, weight in tqdm(list(zip(layers, tv)), desc="layers", disable=not progress):
        results[layer] = optimize(model, x, layer, tv_weight=weight, progress=progress, **kwargs)
    return results


@dataclass
class Solutions:
    """Several reconstructions of the same images from different random starts. Chapter 04.

    Attributes
    ----------
    images : (S, N, C, H, W) one reconstruction per seed and image ((S, C, H, W) for one unbatched image)
    spread : (N, C, H, W) pixel-wise standard deviation over the seeds
    seeds : the S seeds
    results : the S Inversion results, with their errors
    """

    images: torch.Tensor
    spread: torch.Tensor
    seeds: list
    results: list


@contract
def many_solutions(model, x, layer: str, *, seeds: int | Sequence[int] = 4, progress: bool = True, **kwargs):
    """``optimize`` from several random starts: many images x* share the features of x.

    ``seeds`` is a number S (seeds 0 .. S-1) or a list of seeds; ``kwargs`` go to ``optimize``, and result s
    is exactly ``optimize(model, x, layer, seed=seeds[s], **kwargs)``. Chapter 04.
    """
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = list(range(check_positive_int("seeds", seeds, 2)))
    if isinstance(seeds, str) or not isinstance(seeds, Sequence) or len(seeds) < 2:
        raise TypeError(f"seeds: expected an int >= 2 or a list of at least two seeds, got {describe(seeds)}")
    seeds = [check_seed(s) for s in seeds]
    results = [
        optimize(model, x, layer, seed=s, progress=progress, **kwargs)
        for s in tqdm(seeds, desc="seeds", disable=not progress)
    ]
    images = torch.stack([r.images for r in results])
    return Solutions(images, images.std(dim=0), seeds, results)


# ----------------------------------------------------------------------------- decoders (Dosovitskiy & Brox)


def upsampling_stage(
    channels_in: int, channels_out: int, upsampling: str, kernel_size: int
) -> list[nn.Module]:
    """One x2 upsampling stage: resize-convolution or a stride-2 transposed convolution. Chapter 04.
    """
    if upsampling == "resize_conv":
        nearest = nn.Upsample(scale_factor=2, mode="nearest")
        return [nearest, nn.Conv2d(channels_in, channels_out, 3, padding=1)]
    padding = (kernel_size - 1) // 2  # with output_padding=1 the output is exactly twice the input
    return [
        nn.ConvTranspose2d(channels_in, channels_out, kernel_size, 2, padding, output_padding=1)
    ]


class Decoder(nn.Module):
    """A small decoder f(phi, w) from the features of one layer to an image in [0, 1].

    Spatial features (C, h, w) go through a 3x3 convolution, vectors (D,) through a linear layer to a
    (width, 4, 4) map; then x2 upsampling stages (``upsampling``: "resize_conv", nearest-neighbour x2 then a
    3x3 convolution, or "transposed", a stride-2 transposed convolution of ``kernel_size`` 3 or 5) with
    leaky ReLUs (slope 0.2) up to the image size, the channels halving from ``width`` (at least 8). The last
    stage makes the image's channels directly, through a sigmoid. Follows Dosovitskiy & Brox 2016, scaled
    down to train in seconds on a CPU. Chapter 04.
    """

    def __init__(
        self,
        feature_shape: Sequence[int],
        image_shape: Sequence[int],
        *,
        upsampling: str = "resize_conv",
        kernel_size: int = 3,
        width: int = 32,
    ):
        super().__init__()
        if upsampling not in UPSAMPLING:
            raise ValueError(f"upsampling: expected one of {list(UPSAMPLING)}, got {upsampling!r}")
        if upsampling == "transposed" and kernel_size not in (3, 5):
            raise ValueError(f"kernel_size: expected 3 or 5 (not divisible by the stride 2), got {kernel_size!r}")
        check_positive_int("width", width)
        feature_shape, image_shape = tuple(feature_shape), tuple(image_shape)
        channels, height, width_px = image_shape
        if len(feature_shape) == 1:
            stem = [nn.Linear(feature_shape[0], width * 16), nn.LeakyReLU(LEAKY_SLOPE), nn.Unflatten(1, (width, 4, 4))]
            size = (4, 4)
        elif len(feature_shape) == 3:
            stem = [nn.Conv2d(feature_shape[0], width, 3, padding=1), nn.LeakyReLU(LEAKY_SLOPE)]
            size = feature_shape[1:]
        else:
            raise NotImplementedError(
                f"Decoder: features of shape {feature_shape}; supported are vectors (D,) and maps (C, h, w)"
            )
        ratio = height // size[0]
        if height % size[0] or width_px != ratio * size[1] or ratio & (ratio - 1):
            raise NotImplementedError(
                f"Decoder: features of size {size} cannot be upsampled by x2 stages to the image size "
                f"{(height, width_px)}; supported are sizes that divide the image by a power of two"
            )
        stages = ratio.bit_length() - 1
        layers, c = stem, width
        for s in range(stages):
            last = s == stages - 1
            c_out = channels if last else max(width // 2 ** (s + 1), 8)
            layers += upsampling_stage(c, c_out, upsampling, kernel_size)
            layers += [] if last else [nn.LeakyReLU(LEAKY_SLOPE)]
            c = c_out
        if stages == 0:
            layers.append(nn.Conv2d(c, channels, 3, padding=1))
        layers.append(nn.Sigmoid())
        self.net = nn.Sequential(*layers)
        self.upsampling, self.kernel_size = upsampling, kernel_size
        self.feature_shape, self.image_shape = feature_shape, image_shape
        self.register_buffer("scale", torch.ones(()))  # 1 / std of the training features (training.train_decoder)
        self.layer: str | None = None  # the layer it inverts, set by training.train_decoder
        self.history: list[float] = []  # mean training loss per epoch

    def forward(self, phi: torch.Tensor) -> torch.Tensor:
        return self.net(phi * self.scale)


@contract
def decode(model, decoder: Decoder, x) -> Inversion:
    """Reconstruct ``x`` with a trained decoder: f(phi(x)), with the same errors as ``optimize``. Chapter 04."""
    check_model(model)
    if not isinstance(decoder, Decoder) or decoder.layer is None:
        raise TypeError(f"decoder: expected a Decoder from training.train_decoder, got {describe(decoder)}")
    submodule(model, decoder.layer)
    x, unbatched = _check_images(model, x)
    with model_guard(model), model_guard(decoder), torch.no_grad():
        phi0 = output(model, x, decoder.layer)
        x_star = decoder(phi0)
        phi_star = output(model, x_star, decoder.layer)
    return _result(x_star, x, phi_star, phi0, decoder.layer, unbatched)


def checkerboard(images: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
    """Amplitude of the period-2 patterns of each image: the checkerboard artifact, in pixel units.

    The high-pass filter h = [-1, 2, -1] / 4 keeps a pattern of period 2 as it is and removes constants and
    linear ramps. With h along the rows, along the columns and along both, the amplitudes of the three
    patterns of period 2 are a_r = mean h_i(x)_{ij} (-1)^i, a_c = mean h_j(x)_{ij} (-1)^j and
    a_d = mean h_i h_j(x)_{ij} (-1)^(i+j) over the pixels the filter covers; the result is
    sqrt(a_r^2 + a_c^2 + a_d^2), root mean square over the channels, shape (N,). A checkerboard of +-a
    around any level or ramp gives a, a constant or a ramp 0. With ``reference`` it measures the residual
    images - reference (Odena, Dumoulin & Olah 2016 show the artifact; the measure is ours). Chapter 04.
    """
    images, unbatched = _per_image(images, "images")
    if reference is not None:
        reference, _ = _per_image(reference, "reference")
        if reference.shape != images.shape:
            raise ValueError(
                f"reference: expected the shape of images {tuple(images.shape)}, got {describe(reference)}"
            )
        images = images - reference
    if min(images.shape[-2:]) < 3:
        raise ValueError(f"images: expected images of at least 3 x 3 pixels, got {describe(images)}")
    n, c, h, w = images.shape
    x = images.reshape(n * c, 1, h, w)
    hp = torch.tensor([-0.25, 0.5, -0.25], dtype=x.dtype, device=x.device)
    rows = F.conv2d(x, hp.view(1, 1, 3, 1))  # (n c, 1, h - 2, w)
    cols = F.conv2d(x, hp.view(1, 1, 1, 3))  # (n c, 1, h, w - 2)
    both = F.conv2d(rows, hp.view(1, 1, 1, 3))  # (n c, 1, h - 2, w - 2)

    def sign(length: int) -> torch.Tensor:
        return 1 - 2 * (torch.arange(length, device=x.device) % 2).to(x.dtype)

    a_r = (rows * sign(h - 2).view(-1, 1)).mean((1, 2, 3))
    a_c = (cols * sign(w - 2)).mean((1, 2, 3))
    a_d = (both * sign(h - 2).view(-1, 1) * sign(w - 2)).mean((1, 2, 3))
    amplitude = (a_r**2 + a_c**2 + a_d**2).view(n, c).mean(1).sqrt()
    return amplitude[0] if unbatched else amplitude


# ----------------------------------------------------------------------------- prediction-vector attack (Yang et al.)


def align(
    probabilities: torch.Tensor, truncation: int | None = None, c: float = YANG_C
) -> torch.Tensor:
    """Yang et al.'s input to the inversion network: the top-k of a prediction vector, aligned.

    Keeps the ``truncation`` = k largest probabilities of each row (all with None), takes log(p)
    clamped at -1000, adds ``c``, shifts the kept entries up so that their minimum is >= 0, and
    puts them back at their places in a vector of zeros (the released vector's other entries are
    unknown). Chapter 04.
    """
    is_float = isinstance(probabilities, torch.Tensor) and probabilities.is_floating_point()
    if not is_float or probabilities.ndim != 2:
        raise TypeError(
            f"probabilities: expected a float tensor (N, K), got {describe(probabilities)}"
        )
    n_classes = probabilities.shape[1]
    k = n_classes if truncation is None else check_positive_int("truncation", truncation)
    c = check_number("c", c, -math.inf)
    if k > n_classes:
        raise ValueError(f"truncation: expected at most the number of classes {n_classes}, got {k}")
    top, index = probabilities.topk(k, dim=1)
    top = top.log().clamp(min=-1000) + c
    top = top + F.relu(-top.min(dim=1, keepdim=True).values)
    return torch.zeros_like(probabilities).scatter(1, index, top)


def prediction_vectors(model, images, batch_size: int = 256) -> torch.Tensor:
    """The softmax vectors (N, K) that ``model`` releases for ``images``, in batches, without gradients. Chapter 04."""
    with model_guard(model), torch.no_grad():
        return torch.cat([model(images[s]).softmax(1) for s in batch_slices(len(images), batch_size)])


class Attack(nn.Module):
    """Yang et al.'s inversion network G, scaled down: aligned prediction vector (K,) -> image.

    As in their repository: a transposed convolution to a (4 width, 4, 4) map, then stride-2 transposed
    convolutions of kernel 4 (divisible by the stride: no checkerboard) with BatchNorm and tanh, halving
    the channels, and a last one to the image channels through a sigmoid; 4 -> 8 -> 16 -> 32 -> 64 pixels. Chapter 04.
    """

    def __init__(self, n_classes: int, image_shape: Sequence[int], *, truncation: int | None = None, width: int = 8):
        super().__init__()
        channels, height, width_px = tuple(image_shape)
        if (height, width_px) != (64, 64):
            raise NotImplementedError(f"Attack: images of size {(height, width_px)}; supported is 64 x 64")
        c = [4 * width, 2 * width, width, width]
        layers: list[nn.Module] = [nn.ConvTranspose2d(n_classes, c[0], 4, 1, 0), nn.BatchNorm2d(c[0]), nn.Tanh()]
        for c_in, c_out in zip(c[:-1], c[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), nn.BatchNorm2d(c_out), nn.Tanh()]
        layers += [nn.ConvTranspose2d(c[-1], channels, 4, 2, 1), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)
        self.n_classes, self.truncation = n_classes, truncation
        self.history: list[float] = []

    def forward(self, probabilities: torch.Tensor) -> torch.Tensor:
        z = align(probabilities, self.truncation)
        return self.net(z.view(*z.shape, 1, 1))


def _vector_result(model, x_star, x, unbatched) -> Inversion:
    """Inversion of the prediction vector: the feature error is that of the softmax vectors."""
    if x_star.shape != x.shape:
        raise ValueError(
            f"x: expected images of the size of the reconstructions, {tuple(x_star.shape[1:])} (the attack's output "
            f"or the auxiliary images), got {describe(x)}"
        )
    phi_star, phi0 = prediction_vectors(model, x_star), prediction_vectors(model, x)
    return _result(x_star, x, phi_star, phi0, "prediction vector", unbatched)


@contract
def invert_predictions(model, attack: Attack, x) -> Inversion:
    """Reconstruct ``x`` from the prediction vectors the model releases for it, with a trained attack. Chapter 04."""
    check_model(model)
    if not isinstance(attack, Attack):
        raise TypeError(f"attack: expected an Attack from training.train_attack, got {describe(attack)}")
    x, unbatched = _check_images(model, x)
    with model_guard(attack), torch.no_grad():
        x_star = attack(prediction_vectors(model, x))
    return _vector_result(model, x_star, x, unbatched)


def class_means(model, auxiliary) -> torch.Tensor:
    """The mean auxiliary image of each class the model predicts, shape (K, C, H, W).

    The auxiliary images are grouped by the model's own prediction (what an attacker sees); a class the model
    never predicts on them gets the mean of all auxiliary images. The answers of ``class_mean_baseline``. Chapter 04.
    """
    check_model(model)
    images = images_of(auxiliary, model, "auxiliary")
    probabilities = prediction_vectors(model, images)
    predicted, n_classes = probabilities.argmax(1), probabilities.shape[1]
    means = images.mean(0, keepdim=True).repeat(n_classes, 1, 1, 1)
    for k in range(n_classes):
        if (predicted == k).any():
            means[k] = images[predicted == k].mean(0)
    return means


@contract
def class_mean_baseline(model, auxiliary, x) -> Inversion:
    """The trivial attack: the mean auxiliary image of the class the model predicts for each x
    (``class_means``). Chapter 04."""
    means = class_means(model, auxiliary)
    x, unbatched = _check_images(model, x)
    return _vector_result(model, means[prediction_vectors(model, x).argmax(1)], x, unbatched)


def attack_table(model, auxiliary, victims, attacks: Sequence[Attack]) -> list[dict]:
    """Reconstruction error of trained attacks against their truncation k, next to the class-mean baseline.

    Each of the ``attacks`` (``load``-ed or from ``training.train_attack``; its k is its ``truncation``, None
    counting as K) inverts the prediction vectors of ``victims``. One row per attack: ``k``, ``attack_mse``,
    ``baseline_mse`` (the class-mean baseline on ``auxiliary``) and ``mean_mse`` (the mean auxiliary image, which
    ignores the vector): the mean per-pixel squared error over the victims, Yang et al.'s measure; and
    ``attack_ssim``, ``baseline_ssim``. Chapter 04.
    """
    check_model(model)
    if isinstance(attacks, Attack) or not all(isinstance(a, Attack) for a in attacks) or not attacks:
        raise TypeError(f"attacks: expected a non-empty list of Attack, got {describe(attacks)}")
    victims = images_of(victims, model, "victims")
    images = images_of(auxiliary, model, "auxiliary")
    released = prediction_vectors(model, victims)  # what the model releases, computed once for every attack
    baseline = class_means(model, images)[released.argmax(1)]
    mean_mse = (images.mean(0, keepdim=True) - victims).pow(2).mean().item()
    baseline_mse, baseline_ssim = (baseline - victims).pow(2).mean().item(), ssim(baseline, victims).mean().item()
    rows = []
    for attack in attacks:
        with model_guard(attack), torch.no_grad():
            x_star = attack(released)  # as invert_predictions, without the feature errors the table omits
        rows.append(
            {
                "k": attack.truncation or released.shape[1],
                "attack_mse": (x_star - victims).pow(2).mean().item(),
                "baseline_mse": baseline_mse,
                "mean_mse": mean_mse,
                "attack_ssim": ssim(x_star, victims).mean().item(),
                "baseline_ssim": baseline_ssim,
            }
        )
    return rows


# ----------------------------------------------------------------------------- shipped decoders and attacks


@dataclass(frozen=True)
class DecoderRecipe:
    """How a decoder for a course model is built (``load``) and trained (``training.train``). Chapter 04."""

    model: str = "shapes_cnn"  # a course model (models.RECIPES)
    layer: str = "features.10"
    upsampling: str = "resize_conv"
    n_train: int = 2000  # training images, data.shapes(n_train, "train", seed=data_seed)
    epochs: int = 10
    data_seed: int = 100  # the course models train on seeds 0 .. 5: these images are new to them
    threads: int = 1  # torch threads while training: the float sums, and so the weights, depend on it


@dataclass(frozen=True)
class AttackRecipe:
    """How an attack on a course model is built (``load``) and trained (``training.train``). Chapter 04."""

    model: str = "shapes_cnn"
    truncation: int | None = None  # top-k of the released vector; None: all of it
    n_train: int = 1000  # the attacker's auxiliary images, data.shapes(n_train, "train", seed=data_seed)
    epochs: int = 20
    width: int = 8
    data_seed: int = 101  # new to the course model and to the decoders
    threads: int = 1


DECODERS = {
    "decoder_shapes_cnn_features.10": DecoderRecipe(),
    "decoder_shapes_cnn_features.10_transposed": DecoderRecipe(upsampling="transposed"),
    "decoder_shapes_cnn_classifier.2": DecoderRecipe(layer="classifier.2"),
}
ATTACKS = {f"attack_shapes_cnn_top{k}": AttackRecipe(truncation=k) for k in range(1, len(data.CLASSES) + 1)}


def _recipe(name) -> DecoderRecipe | AttackRecipe:
    recipes = {**DECODERS, **ATTACKS}
    if not isinstance(name, str) or name not in recipes:
        raise ValueError(f"name: expected one of the decoders and attacks {sorted(recipes)}, got {describe(name)}")
    return recipes[name]


def load(name: str) -> Decoder | Attack:
    """The decoder or attack ``name`` with its shipped weights (hash-checked), in eval mode. Chapter 04."""
    recipe = _recipe(name)
    file = data.path(f"{name}.pt")
    model = models.load(recipe.model)
    image_shape = (3, data.SIZE, data.SIZE)
    if isinstance(recipe, AttackRecipe):
        with torch.no_grad():
            n_classes = model(torch.zeros(1, *image_shape)).shape[1]
        network = Attack(n_classes, image_shape, truncation=recipe.truncation, width=recipe.width)
    else:
        with torch.no_grad():
            feature_shape = output(model, torch.zeros(1, *image_shape), recipe.layer).shape[1:]
        network = Decoder(feature_shape, image_shape, upsampling=recipe.upsampling)
        network.layer = recipe.layer
    network.load_state_dict(torch.load(file, map_location="cpu", weights_only=True))
    return network.eval()
