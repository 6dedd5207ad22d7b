"""Occlusion: hide part of the input, watch the output drop, credit what was hidden.

All five methods share that idea and differ in what they hide and how they average:

- **Sliding window** (Zeiler & Fergus 2014). A square of side ``window`` (a segment in a series) is moved
  with step ``stride`` and filled with a baseline; for the target logit S_c the drop
  d_w = S_c(x) - S_c(x with window w hidden) is credited to every pixel of window w, and a pixel's attribution
  is the mean drop over the windows that cover it. Windows start at 0, stride, 2 stride, ... until the axis is
  covered (the last one may be cut off by the border), as in Captum's ``Occlusion``.
- **Overlay**: the same, but the hidden window shows the corresponding patch of another image (the survey's
  figure 2).
- **RISE** (Petsiuk, Das & Saenko 2018). N random soft masks M_i: a Bernoulli(p) grid of s x s cells, resized
  bilinearly to (s + 1) cells of ceil(H / s) pixels and cropped at a random shift; with the softmax
  probability P_c, RISE estimates S_c(lambda) = E[P_c(x * M) M(lambda)] / p (E[M(lambda)] = p), the paper by
  1 / (N p) sum_i P_c(x * M_i) M_i(lambda). Since E[M(lambda)] = p, S_c = E[P_c] + Cov(P_c, M(lambda)) / p,
  and the course's default estimates that: the mean score plus the sample covariance, the same expectation
  with the score's large common part (times a random mask) taken out of the noise (a control variate).
- **SIDU** (Muddamsetty, Jahromi, Ciontos, Fenoy & Moeslund 2021; Pattern Recognition 2022). One mask per
  feature map A_k of a chosen layer: B_k = 1[A_k > 0.5] on the raw activations (the reference code's
  absolute threshold; ``relative=True`` takes a share of each map's maximum), resized bilinearly to the input.
  With the softmax vectors P = P(x) and P_k = P(x * M_k), the similarity difference
  SD_k = exp(-(P_c - P_k,c)^2 / (2 sigma^2)) and the uniqueness U_k = sum_j ||P_k - P_j|| (min-max scaled to
  [0, 1]) weight the masks: S_c = 1/K sum_k SD_k U_k M_k (``weights`` keeps one of the two terms).
- **TimeREISE** (Mercier, Dengel & Ahmed 2022) for series (N, C, L): RISE masks drawn per channel for every
  combination of a density p and a number of slices (granularity), and the sum of the scores weighted by the
  masks divided by how often each point was kept, S = sum_i P_c(x * m_i) m_i / sum_i m_i, min-max scaled to
  [0, 1].

By default masked positions take the baseline 0 in whatever space the model sees (RISE's convention): black for
the course images in [0, 1], the mean level for the zero-mean course series; ``baseline`` changes it
(``core.baseline_like``). Every method runs the model in eval mode under ``torch.no_grad()`` inside
``core.model_guard``, evaluates ``batch_size`` perturbed inputs per forward pass and builds them batch by batch,
so memory does not grow with the number of windows or masks. Random masks are drawn ``MASK_CHUNK`` at a time,
each chunk from its own generator seeded by (seed, chunk): the same seed gives the same masks whatever
``batch_size``. Introduced in chapter 03.
"""

from __future__ import annotations

import functools
import math
from itertools import product

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .core import (
    Target,
    baseline_like,
    batch_slices,
    check_input,
    check_number,
    check_positive_int,
    check_seed,
    check_spatial,
    contract,
    describe,
    explaining,
    model_guard,
    output_like,
    resolve_target,
)
from .layers import feature_maps

BATCH_SIZE = 64  # perturbed inputs per forward pass
MASK_CHUNK = 256  # random masks per generator; results do not depend on batch_size

# ----------------------------------------------------------------------------- checks


def _check_probability(name: str, p) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1:
        raise ValueError(f"{name}: expected a probability in (0, 1], got {describe(p)}")
    return float(p)


def _forward(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The model on a batch of perturbed inputs; images go channels-last (faster convolutions on a CPU)."""
    if inputs.ndim == 4:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    return model(inputs)


# ----------------------------------------------------------------------------- sliding window and overlay


def window_starts(length: int, window: int, stride: int) -> torch.Tensor:
    """Start of every window along an axis of ``length``: 0, stride, ... until the axis is covered. Chapter 03."""
    return torch.arange(math.ceil((length - window) / stride) + 1) * stride


def _window_masks(index: torch.Tensor, counts: list[int], window: int, stride: int, spatial) -> torch.Tensor:
    """Bool masks (b, *spatial) of the windows with flat indices ``index`` (last axis fastest)."""
    mask = torch.ones(len(index), *[1] * len(spatial), dtype=torch.bool)
    for axis in reversed(range(len(spatial))):
        start = (index % counts[axis]) * stride
        index = index // counts[axis]
        shape = [-1 if a == axis else 1 for a in range(len(spatial))]
        coord = torch.arange(spatial[axis]).view(1, *shape)
        start = start.view(-1, *[1] * len(spatial))
        mask = mask & (coord >= start) & (coord < start + window)
    return mask


def _window_drops(model, x, fill, score, target, window, stride, batch_size) -> torch.Tensor:
    """d_w = S_c(x) - S_c(x with window w filled) for every image and window, shape (N, *counts)."""
    spatial = x.shape[2:]
    counts = [len(window_starts(n, window, stride)) for n in spatial]
    k = math.prod(counts)
    drops = torch.empty(x.shape[0] * k, dtype=x.dtype, device=x.device)
    for part in batch_slices(len(drops), batch_size):
        pair = torch.arange(part.start, part.stop)
        n, w = pair // k, pair % k
        hidden = _window_masks(w, counts, window, stride, spatial).unsqueeze(1).to(x.device)
        inputs = torch.where(hidden, fill[n], x[n])
        drops[part] = score[n] - _forward(model, inputs).gather(1, target[n][:, None])[:, 0]
    return drops.view(x.shape[0], *counts)


def spread_windows(drops: torch.Tensor, window: int, stride: int, spatial) -> torch.Tensor:
    """Mean of the drops of the windows covering each position, (N, 1, *spatial): a transposed
    convolution. Chapter 03."""
    transposed = F.conv_transpose2d if len(spatial) == 2 else F.conv_transpose1d
    ones = torch.ones(1, 1, *[window] * len(spatial), dtype=drops.dtype, device=drops.device)
    crop = (..., *[slice(0, n) for n in spatial])
    total = transposed(drops.unsqueeze(1), ones, stride=stride)[crop]
    count = transposed(torch.ones_like(drops[:1]).unsqueeze(1), ones, stride=stride)[crop]
    return total / count


def _occlusion(model, x, target, window, stride, baseline, name, batch_size) -> torch.Tensor:
    x, unbatched = check_input(model, x)
    check_spatial(x)
    for key, number in (("window", window), ("stride", stride), ("batch_size", batch_size)):
        check_positive_int(key, number)
    if window > min(x.shape[2:]):
        raise ValueError(f"window: expected at most the input's smallest side {min(x.shape[2:])}, got {window}")
    if stride > window:
        raise ValueError(f"stride: expected at most window = {window}, so that every position is hidden, got {stride}")
    fill = baseline_like(x, baseline, name=name)
    with explaining(model, x, target, batch_size) as (target, logits), torch.no_grad():
        score = logits.gather(1, target[:, None])[:, 0]
        drops = _window_drops(model, x, fill, score, target, window, stride, batch_size)
    attribution = spread_windows(drops, window, stride, x.shape[2:]).expand_as(x)
    return output_like(attribution, x, unbatched)


@contract(signed=True, needs="outputs", random=False)
def sliding_window(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    *,
    window: int = 8,
    stride: int = 4,
    baseline=0.0,
    batch_size: int = BATCH_SIZE,
) -> torch.Tensor:
    """Occlusion sensitivity with a sliding window (Zeiler & Fergus 2014).

    Parameters
    ----------
    model, x, target : the calling contract; ``x`` holds images (N, C, H, W) or series (N, C, L).
    window : side of the square (length of the segment) hidden on all channels at once.
    stride : step between windows, at most ``window``.
    baseline : what the window shows (``core.baseline_like``): a float, ``"mean"`` (each image's mean
        colour), ``"blur"`` or a tensor broadcastable to ``x``.
    batch_size : occluded inputs per forward pass.

    Returns
    -------
    The mean drop of the target logit over all windows covering each position, the same on every
    channel; equal to Captum's ``Occlusion`` with ``sliding_window_shapes=(C, window, window)``,
    ``strides=(C, stride, stride)`` and ``baselines=baseline``. Chapter 03.
    """
    return _occlusion(model, x, target, window, stride, baseline, "baseline", batch_size)


@contract(signed=True, needs="outputs", random=False)
def overlay(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    *,
    occluder: torch.Tensor,
    window: int = 8,
    stride: int = 4,
    batch_size: int = BATCH_SIZE,
) -> torch.Tensor:
    """Occlusion by pasting, window by window, the corresponding patch of another image.

    Parameters
    ----------
    model, x, target : the calling contract.
    occluder : the image (C, H, W) whose patches cover ``x``, or one per image (N, C, H, W).
    window, stride, batch_size : as in ``sliding_window``.

    Returns
    -------
    The mean drop of the target logit over the windows covering each position: ``sliding_window``
    with ``baseline=occluder``. Chapter 03.
    """
    if not isinstance(occluder, torch.Tensor):
        raise TypeError(f"occluder: expected a float tensor (C, H, W) or (N, C, H, W), got {describe(occluder)}")
    return _occlusion(model, x, target, window, stride, occluder, "occluder", batch_size)


# ----------------------------------------------------------------------------- random masks


def _masked(x_n: torch.Tensor, fill_n: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """x * M + (1 - M) * fill for masks (b, *spatial) shared by the channels; exactly x * M when the fill is 0.

    Images are written channels-last, the layout ``_forward`` feeds the model.
    """
    layout = torch.channels_last if x_n.ndim == 3 else torch.contiguous_format
    out = torch.empty(masks.shape[0], *x_n.shape, dtype=x_n.dtype, device=x_n.device, memory_format=layout)
    return torch.addcmul(fill_n, masks.unsqueeze(1), x_n - fill_n, out=out)


@functools.lru_cache(maxsize=64)
def _bilinear(n_in: int, n_out: int) -> torch.Tensor:
    """The (n_out, n_in) matrix of a bilinear resize with mirrored borders.

    Output sample j reads input position (j + 1/2) n_in / n_out - 1/2 (pixel centres aligned), and
    position -1 is position 1: scikit-image's ``resize(order=1, mode="reflect")``.
    """
    source = (torch.arange(n_out, dtype=torch.float64) + 0.5) * n_in / n_out - 0.5
    left = source.floor()
    matrix = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    period = max(2 * (n_in - 1), 1)
    for index, weight in ((left, 1 - (source - left)), (left + 1, source - left)):
        index = index.long().abs() % period
        index = torch.where(index >= n_in, period - index, index)  # mirror: -1 -> 1, n_in -> n_in - 2
        matrix.index_put_((rows, index), weight, accumulate=True)
    return matrix


def resize(maps: torch.Tensor, size, *, up=None, shifts=None) -> torch.Tensor:
    """Resize maps (k, *small) bilinearly to ``up`` (default ``size``) and crop ``size`` at ``shifts``.

    ``shifts`` (k, d) holds each map's crop offset along each axis (default 0). Bilinear with
    mirrored borders, as scikit-image's ``resize(order=1, mode="reflect")`` used by the RISE and
    SIDU reference code. One small matrix product per axis. Chapter 03.
    """
    up = tuple(size) if up is None else tuple(up)
    k = maps.shape[0]
    out = maps
    for axis, (n, n_up) in enumerate(zip(size, up)):
        n_in = maps.shape[axis + 1]
        rows = torch.arange(n).view(1, n)
        if shifts is not None:
            rows = rows + shifts[:, axis : axis + 1].cpu()
        matrix = _bilinear(n_in, n_up).to(maps)[rows].transpose(1, 2)  # (k or 1, n_in, n)
        moved = out.movedim(axis + 1, -1)
        out = (moved.reshape(k, -1, n_in) @ matrix).reshape(*moved.shape[:-1], n).movedim(-1, axis + 1)
    return out


def _chunk_generator(seed: int, stream: int, chunk: int) -> torch.Generator:
    entropy = np.random.SeedSequence([seed, stream, chunk]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(entropy[0]) << 32 | int(entropy[1]))


def _draw(seed: int, stream: int, part: slice, grid: tuple, highs: tuple, p: float):
    """Low-resolution masks ``part`` of a stream: Bernoulli(p) grids (k, *grid) and shifts (k, len(highs)).

    Drawn ``MASK_CHUNK`` at a time, so mask i is the same whatever slices it is asked for in."""
    first, last = part.start // MASK_CHUNK, (part.stop - 1) // MASK_CHUNK
    grids, shifts = [], []
    for chunk in range(first, last + 1):
        g = _chunk_generator(seed, stream, chunk)
        grids.append(torch.rand(MASK_CHUNK, *grid, generator=g) < p)
        shifts.append((torch.rand(MASK_CHUNK, len(highs), generator=g) * torch.tensor(highs)).long())
    pick = slice(part.start - first * MASK_CHUNK, part.stop - first * MASK_CHUNK)
    return torch.cat(grids)[pick].float(), torch.cat(shifts)[pick]


def rise_masks(size, n_masks: int, *, grid: int = 8, p: float = 0.5, seed=0, start: int = 0) -> torch.Tensor:
    """RISE masks ``start`` to ``start + n_masks - 1`` for inputs of spatial ``size`` (H, W) or (L,).

    Each mask: a Bernoulli(``p``) grid of ``grid`` cells per axis, resized bilinearly to
    (grid + 1) * ceil(n / grid) samples per axis, cropped at a random shift in [0, ceil(n / grid)).
    Soft values in [0, 1]; exactly the masks ``rise`` uses with the same ``seed``. Chapter 03.
    """
    if not isinstance(size, (tuple, list, torch.Size)) or len(size) not in (1, 2):
        raise TypeError(f"size: expected the spatial size (H, W) or (L,), got {describe(size)}")
    size = tuple(check_positive_int("size", n) for n in size)
    check_positive_int("n_masks", n_masks)
    check_positive_int("grid", grid)
    check_positive_int("start", start, minimum=0)
    p = _check_probability("p", p)
    cells = tuple(math.ceil(n / grid) for n in size)
    grids, shifts = _draw(check_seed(seed), 0, slice(start, start + n_masks), (grid,) * len(size), cells, p)
    return resize(grids, size, up=tuple((grid + 1) * c for c in cells), shifts=shifts)


# ----------------------------------------------------------------------------- RISE


@torch.no_grad()
def rise_scores(model, x_n, fill_n, t, n_masks, grid, p, seed, batch_size) -> torch.Tensor:
    """P_c(x * M_i) for the masks M_i, i = 0 ... N - 1, of ``rise_masks`` (float64). Chapter 03."""
    scores = torch.empty(n_masks, dtype=torch.float64, device=x_n.device)
    for part in batch_slices(n_masks, batch_size):
        n = part.stop - part.start
        masks = rise_masks(x_n.shape[1:], n, grid=grid, p=p, seed=seed, start=part.start).to(x_n)
        probabilities = F.softmax(_forward(model, _masked(x_n, fill_n, masks)), dim=1)
        scores[part] = probabilities[:, t].double()
    return scores


def rise_map(scores, size, grid, p, seed, control_variate, batch_size) -> tuple:
    """RISE saliency (*size) from the masks' scores P_i, and its standard errors. Chapter 03.

    With w_i = P_i - c, c the mean score (the control variate) or 0 (the paper's estimator):
    S = c + sum_i w_i M_i / (n p), n = N - 1 (the mean plus the sample covariance over p) or N.
    The standard error is that of the mean of the terms w_i M_i / p, each less its mean over the
    entries: the noise of the map about its own mean. In float64; the masks are drawn again,
    batch by batch, rather than kept.
    """
    n_masks = len(scores)
    c = scores.mean() if control_variate else 0.0
    w = scores - c
    total = torch.zeros(size, dtype=torch.float64, device=scores.device)
    squares = torch.zeros_like(total)
    for part in batch_slices(n_masks, batch_size):
        n = part.stop - part.start
        masks = rise_masks(size, n, grid=grid, p=p, seed=seed, start=part.start).to(total)
        about_mean = masks - masks.mean(dim=tuple(range(1, masks.ndim)), keepdim=True)
        total += torch.tensordot(w[part], masks, dims=1)
        squares += torch.tensordot(w[part] ** 2, about_mean**2, dims=1)
    n = n_masks - 1 if control_variate else n_masks
    variance = (squares - (total - total.mean()) ** 2 / n_masks).clamp(min=0) / (n_masks - 1)
    return c + total / (n * p), (variance / n_masks).sqrt() / p


def noise_to_contrast(saliency: torch.Tensor, error: torch.Tensor) -> torch.Tensor:
    """How noisy each map is: its typical standard error over the spread of the true map's values.

    For maps (N, ...) and their standard errors about each map's mean (``rise(..., return_error=True)``),
    over each map's entries: sqrt(mean e^2) / sqrt(var S - mean e^2), where var S less the part the
    noise adds to it estimates the true map's variance (infinite where the noise explains all of it).
    A map at ratio r correlates about 1 / sqrt(1 + r^2) with the map it estimates. Chapter 03.
    """
    if not isinstance(saliency, torch.Tensor) or not isinstance(error, torch.Tensor):
        raise TypeError(f"saliency, error: expected two tensors, got {describe(saliency)}, {describe(error)}")
    if saliency.shape != error.shape or saliency.ndim < 2:
        shapes = f"{tuple(error.shape)} and {tuple(saliency.shape)}"
        raise ValueError(f"error: expected the shape of saliency, (N, ...), got {shapes}")
    noise = error.double().flatten(1).pow(2).mean(1)
    contrast = saliency.double().flatten(1).var(1, correction=0) - noise
    return torch.where(contrast > 0, (noise / contrast.clamp(min=1e-300)).sqrt(), math.inf)


@contract(signed=False, needs="outputs", random=True)
def rise(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    *,
    n_masks: int = 4000,
    grid: int = 8,
    p: float = 0.5,
    baseline=0.0,
    seed=0,
    control_variate: bool = True,
    return_error: bool = False,
    batch_size: int = BATCH_SIZE,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """RISE: randomized input sampling for explanation (Petsiuk, Das & Saenko 2018).

    Parameters
    ----------
    model, x, target : the calling contract; images (N, C, H, W) or series (N, C, L).
    n_masks : number N >= 2 of random masks (the paper uses 4000 to 8000).
    grid : cells s per axis of the low-resolution Bernoulli grid.
    p : probability that a cell is kept.
    baseline : what masked positions show, x * M + (1 - M) * baseline (``core.baseline_like``): 0.0 as
        in the reference code (black for the course images), ``"mean"`` (each image's mean colour),
        ``"blur"``, another float or a tensor.
    seed : int or ``torch.Generator``; the same seed gives the same masks for every image.
    control_variate : estimate S_c as the mean score plus the sample covariance of the score with the
        mask over p (True, the course's default), or by the paper's 1 / (N p) sum_i P_c(x * M_i) M_i
        (False). Both have the expectation S_c(lambda) = E[P_c(x * M) M(lambda)] / p; the first is
        less noisy (chapter 03 measures by how much), and can dip below 0 where S_c is near 0: it is
        clipped at 0, which only lowers its error.
    return_error : also return the Monte-Carlo standard error of each entry about the map's mean (the
        noise the picture and every ranking of the pixels see; a common offset changes neither),
        estimated from the spread of the masks' terms; ``noise_to_contrast`` sums it up per map.
    batch_size : masked inputs per forward pass; does not change the result.

    Returns
    -------
    S_c with the softmax probability P_c and the masks of ``rise_masks``, the same map on every
    channel; with ``return_error``, (S_c, its standard errors). Chapter 03.
    """
    x, unbatched = check_input(model, x)
    check_spatial(x)
    for name, number in (("grid", grid), ("batch_size", batch_size)):
        check_positive_int(name, number)
    check_positive_int("n_masks", n_masks, minimum=2)
    for name, flag in (("control_variate", control_variate), ("return_error", return_error)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name}: expected True or False, got {describe(flag)}")
    p, seed, fill = _check_probability("p", p), check_seed(seed), baseline_like(x, baseline)
    with explaining(model, x, target, batch_size) as (target, _), torch.no_grad():
        maps = [
            rise_map(rise_scores(model, x_n, fill_n, t, n_masks, grid, p, seed, batch_size),
                     x.shape[2:], grid, p, seed, control_variate, batch_size)
            for x_n, fill_n, t in zip(x, fill, target.tolist())
        ]  # fmt: skip
    saliency, error = (output_like(torch.stack(m).unsqueeze(1).expand_as(x), x, unbatched) for m in zip(*maps))
    saliency = saliency.clamp(min=0) if control_variate else saliency  # S_c >= 0: below 0 is noise
    return (saliency, error) if return_error else saliency


# ----------------------------------------------------------------------------- SIDU

SIDU_WEIGHTS = ("both", "similarity", "uniqueness")  # W_k = SD_k U_k, SD_k alone, U_k alone


def sidu_map(
    model, x_n, fill_n, a, t, threshold, relative, sigma, weights, batch_size
) -> torch.Tensor:
    """SIDU saliency (*spatial) of one input for class t from its feature maps ``a`` (K, *small).
    Chapter 03."""
    cut = threshold * a.flatten(1).amax(1).view(-1, *[1] * (a.ndim - 1)) if relative else threshold
    binary = (a > cut).to(x_n.dtype)  # B_k, thresholded before upsampling
    p_x = F.softmax(model(x_n[None]), dim=1)[0].double()
    probs = []
    for part in batch_slices(a.shape[0], batch_size):
        masks = resize(binary[part], x_n.shape[1:])  # M_k
        probs.append(F.softmax(_forward(model, _masked(x_n, fill_n, masks)), dim=1).double())
    probs = torch.cat(probs)  # P_k, (K, classes)
    sd = torch.exp(-((p_x[t] - probs[:, t]) ** 2) / (2 * sigma**2))
    u = torch.cdist(probs, probs).sum(1)
    u = (u - u.min()) / (u.max() - u.min() + 1e-13)
    w = {"both": sd * u, "similarity": sd, "uniqueness": u}[weights].view(-1, *[1] * (a.ndim - 1))
    return resize((w * binary.double()).sum(0, keepdim=True), x_n.shape[1:])[0] / a.shape[0]


def _check_sidu_options(threshold, relative, sigma, weights) -> tuple[float, float]:
    """The checked ``threshold`` and ``sigma`` of ``sidu``; errors name the argument."""
    if not isinstance(relative, bool):
        raise TypeError(f"relative: expected True or False, got {describe(relative)}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise TypeError(f"threshold: expected a finite float, got {describe(threshold)}")
    threshold, sigma = float(threshold), check_number("sigma", sigma, 0.0, strict=True)
    if relative and not 0 <= threshold < 1:
        raise ValueError(
            f"threshold: with relative=True, expected a fraction of each map's maximum in [0, 1), got {threshold}"
        )
    if not isinstance(weights, str) or weights not in SIDU_WEIGHTS:
        raise ValueError(f"weights: expected one of {', '.join(map(repr, SIDU_WEIGHTS))}, got {describe(weights)}")
    return threshold, sigma


@contract(signed=False, needs="layers", random=False)
def sidu(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    *,
    layer,
    threshold: float = 0.5,
    relative: bool = False,
    sigma: float = 0.25,
    weights: str = "both",
    baseline=0.0,
    batch_size: int = BATCH_SIZE,
) -> torch.Tensor:
    """SIDU: similarity difference and uniqueness (Muddamsetty et al. 2021, 2022).

    The papers weight one mask per feature map by the similarity difference SD_k times the uniqueness
    U_k; the defaults follow the authors' reference code (``SIDU_XAI.py`` of
    ``satyamahesh84/SIDU_XAI_CODE``) in every detail: each feature map A_k of ``layer`` is binarized at
    the absolute value 0.5 *before* upsampling, B_k = 1[A_k > 0.5], and resized bilinearly (mirrored
    borders) to the input, M_k; the masked input is x * M_k; with softmax vectors P = P(x) and
    P_k = P(x * M_k), SD_k,c = exp(-(P_c - P_k,c)^2 / (2 sigma^2)) with sigma = 0.25, U_k =
    sum_j ||P_k - P_j||_2 over all classes, min-max scaled to [0, 1] over the K masks, and
    S_c = 1/K sum_k SD_k,c U_k M_k.

    Parameters
    ----------
    model, x, target : the calling contract; images (N, C, H, W) or series (N, C, L).
    layer : the sub-module (or its name) whose K feature maps give the masks; the authors use the last
        convolutional layer (e.g. ``"features.8"`` of ``ShapesCNN``, ``guide.last_conv``).
    threshold, relative : the mask B_k is 1 where A_k > ``threshold`` (the reference code's 0.5 on raw
        activations, which depends on the layer's scale: masks can come out empty or full on another
        network). ``relative=True``, the course's option, compares with ``threshold`` times each map's
        maximum on this input, ``threshold`` in [0, 1); it was the course's default before issue 21.
    sigma : kernel width of the similarity difference (0.25 in the reference code).
    weights : W_k = SD_k U_k (``"both"``, the papers'), SD_k alone (``"similarity"``, the reference
        code's ``explain_diff``) or U_k alone (``"uniqueness"``, the course's, for ablations).
    baseline : what masked positions show, as in ``rise``. The reference code multiplies by the mask,
        which fills with 0 in the model's input space (the default): black for the course images,
        the ImageNet mean colour for the authors' mean-subtracted inputs (``baseline="mean"``).
    batch_size : masked inputs per forward pass.

    Returns
    -------
    S_c, the same map on every channel. The reference code divides by K p1 with p1 = 0.5, a constant
    left over from RISE: the course leaves out the factor 2. Chapter 03.
    """
    x, unbatched = check_input(model, x)
    check_spatial(x)
    check_positive_int("batch_size", batch_size)
    threshold, sigma = _check_sidu_options(threshold, relative, sigma, weights)
    fill = baseline_like(x, baseline)
    logits, features = feature_maps(model, x, layer, batch_size)
    target = resolve_target(target, logits)
    with model_guard(model), torch.no_grad():
        maps = [
            sidu_map(model, x_n, fill_n, a, t, threshold, relative, sigma, weights, batch_size)
            for x_n, fill_n, a, t in zip(x, fill, features, target.tolist())
        ]
    return output_like(torch.stack(maps).unsqueeze(1).expand_as(x), x, unbatched)


# ----------------------------------------------------------------------------- TimeREISE


def _check_values(name: str, values, check) -> tuple:
    if isinstance(values, (str, bytes)) or not isinstance(values, (tuple, list)) or not values:
        raise TypeError(f"{name}: expected a non-empty tuple, got {describe(values)}")
    return tuple(check(name, v) for v in values)


def _timereise_one(model, x_n, fill_n, t, n_masks, probabilities, slices, seed, batch_size) -> torch.Tensor:
    """TimeREISE saliency (C, L) of one series for class t, before the min-max scaling."""
    (c, length), total = x_n.shape, torch.zeros(x_n.shape, dtype=torch.float64, device=x_n.device)
    occurrence = torch.zeros_like(total)
    for stream, (p, s) in enumerate(product(probabilities, slices)):
        cell = math.ceil(length / s)
        for part in batch_slices(n_masks, batch_size):
            grids, shifts = _draw(seed, stream, part, (c, s), (cell,) * c, p)
            masks = resize(grids.flatten(0, 1), (length,), up=((s + 1) * cell,), shifts=shifts.view(-1, 1))
            masks = masks.view(-1, c, length).to(x_n)
            scores = F.softmax(model(fill_n + masks * (x_n - fill_n)), dim=1)[:, t].double()
            total += torch.tensordot(scores, masks.double(), dims=1)
            occurrence += masks.double().sum(0)
    return torch.where(occurrence > 0, total / occurrence.clamp(min=1e-12), 0.0)


@contract(signed=False, needs="outputs", random=True)
def timereise(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    *,
    n_masks: int = 200,
    probabilities=(0.2, 0.5, 0.8),
    slices=(8, 16, 32),
    baseline=0.0,
    seed=0,
    batch_size: int = BATCH_SIZE,
) -> torch.Tensor:
    """TimeREISE: randomized evolving input sample explanation for time series (Mercier et al. 2022).

    Parameters
    ----------
    model, x, target : the calling contract; series (N, C, L).
    n_masks : masks per combination of a probability and a number of slices (the total is
        ``n_masks * len(probabilities) * len(slices)``).
    probabilities : densities p: the share of slices kept.
    slices : granularities s: each channel's mask is a Bernoulli(p) vector of s slices, resized
        linearly to (s + 1) ceil(L / s) samples and cropped at a random shift (RISE's recipe in one
        dimension, drawn independently per channel; the paper's exact smoothing is not specified).
    baseline : what masked points show, as in ``rise`` (0.0: the mean level of the course series).
    seed : int or ``torch.Generator``.
    batch_size : masked series per forward pass; does not change the result.

    Returns
    -------
    S = sum_i P_c(x * m_i) m_i / sum_i m_i (each point's mean score over the masks, weighted by how
    much they keep it), min-max scaled to [0, 1] per series; shape (N, C, L). Chapter 03.
    """
    x, unbatched = check_input(model, x)
    check_spatial(x, one_d=True)
    check_positive_int("n_masks", n_masks)
    check_positive_int("batch_size", batch_size)
    probabilities = _check_values("probabilities", probabilities, _check_probability)
    slices = _check_values("slices", slices, check_positive_int)
    seed, fill = check_seed(seed), baseline_like(x, baseline)
    with explaining(model, x, target, batch_size) as (target, _), torch.no_grad():
        maps = [
            _timereise_one(model, x_n, fill_n, t, n_masks, probabilities, slices, seed, batch_size)
            for x_n, fill_n, t in zip(x, fill, target.tolist())
        ]
    maps = torch.stack(maps)
    low = maps.amin((1, 2), keepdim=True)
    span = maps.amax((1, 2), keepdim=True) - low
    return output_like(torch.where(span > 0, (maps - low) / span.clamp(min=1e-300), 0.0), x, unbatched)
