"""Shapley additive explanations: exact Shapley values, Kernel SHAP and Deep SHAP.

The players of the game are the M superpixels of an image (SLIC, Achanta et al. 2012, or a regular
grid). The value of a coalition S is the target's logit on the image whose segments outside S are
replaced by a baseline (``core.baseline_like``: a float, "mean", "blur" or an image),

    v(S) = f_c(x_S, baseline_rest).

We use the logit, not the probability: the logit is what the network computes before the softmax
couples all classes, and Shapley values of a logit add up in the units the other chapters use. The
Shapley value of player i (Shapley 1953) is

    phi_i = sum_{S without i} |S|! (M - |S| - 1)! / M! * [v(S u {i}) - v(S)],

and it is efficient: sum_i phi_i = v(all) - v(empty) = f_c(x) - f_c(baseline). ``exact`` enumerates
all 2^M coalitions; ``kernel`` (Lundberg & Lee 2017) fits a linear model to sampled coalitions with
the Shapley kernel pi_x(z') = (M - 1) / [C(M, |z'|) |z'| (M - |z'|)]. Each segment's value is
spread evenly over its pixels and channels, so the attribution sums to f_c(x) - f_c(baseline).

``deep`` is Deep SHAP: the DeepLIFT rescale rule (Shrikumar et al. 2017) against each background row
b, averaged over the rows, so that it sums to f_c(x) - mean_b f_c(b). Introduced in chapter 02.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from itertools import combinations

import numpy as np
import torch
from skimage.segmentation import slic
from torch import nn

from .backward import check_layers, kind, max_pool_switches, modified, rescaled, unpool
from .core import (
    Target,
    baseline_like,
    batch_slices,
    check_input,
    check_model,
    check_positive_int,
    check_seed,
    contract,
    describe,
    explaining,
    output_like,
    predict,
    resolve_target,
)

MAX_EXACT_PLAYERS = 20  # 2^20 model calls per image; above this use Kernel SHAP
BATCH_SIZE = 64  # small batches of masked images run fastest on a laptop CPU
RESCALE_EPS = 1e-10  # |delta x| below this: DeepLIFT falls back to the gradient (Captum's threshold)

# ----------------------------------------------------------------------------- players and baselines


def superpixels(x: torch.Tensor, *, n_segments: int = 16, method: str = "slic") -> torch.Tensor:
    """Integer label maps (N, H, W) with labels 0..M-1: the players of the game.

    ``method="slic"`` runs scikit-image's SLIC (Achanta et al. 2012) on each image (channels last,
    values as given); ``"grid"`` cuts the image into an r x c grid with r = floor(sqrt(n_segments))
    and c = n_segments // r. An unbatched image (C, H, W) gives one map (H, W). Chapter 02.
    """
    check_positive_int("n_segments", n_segments)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim not in (3, 4):
        raise TypeError(f"x: expected a float tensor (N, C, H, W) or (C, H, W), got {describe(x)}")
    unbatched = x.ndim == 3
    images = x.detach().cpu().unsqueeze(0) if unbatched else x.detach().cpu()
    if method == "slic":
        maps = [_slic(image, n_segments) for image in images]
    elif method == "grid":
        maps = [_grid(images.shape[-2:], n_segments)] * images.shape[0]
    else:
        raise ValueError(f"method: expected 'slic' or 'grid', got {method!r}")
    labels = torch.stack([_relabel(m) for m in maps]).to(x.device)
    return labels[0] if unbatched else labels


def _slic(image: torch.Tensor, n_segments: int) -> torch.Tensor:
    channels_last = image.permute(1, 2, 0).double().numpy()
    labels = slic(channels_last, n_segments=n_segments, start_label=0, channel_axis=-1)
    return torch.from_numpy(labels).long()


def _grid(size: tuple[int, int], n_segments: int) -> torch.Tensor:
    (h, w), r = size, max(math.isqrt(n_segments), 1)
    c = n_segments // r
    rows = torch.arange(h) * r // h
    cols = torch.arange(w) * c // w
    return rows[:, None] * c + cols[None, :]


def _relabel(labels: torch.Tensor) -> torch.Tensor:
    """The same partition with labels 0..M-1 in order of the original labels."""
    return torch.unique(labels, return_inverse=True)[1].view(labels.shape)


def _check_segments(segments, x: torch.Tensor) -> list[torch.Tensor]:
    """One label map (H, W) with labels 0..M_n-1 per image of ``x`` (N, C, H, W)."""
    n, (h, w) = x.shape[0], x.shape[-2:]
    if isinstance(segments, np.ndarray):
        segments = torch.from_numpy(segments)
    expected = f"an integer label map ({h}, {w}) or ({n}, {h}, {w}) (e.g. from superpixels)"
    if not isinstance(segments, torch.Tensor) or segments.is_floating_point() or segments.is_complex():
        raise TypeError(f"segments: expected {expected}, got {describe(segments)}")
    if segments.shape == (h, w):
        segments = segments.expand(n, h, w)
    if segments.shape != (n, h, w):
        raise ValueError(f"segments: expected {expected}, got {describe(segments)}")
    return [_relabel(s.to(x.device).long()) for s in segments]


# ----------------------------------------------------------------------------- the game


def _values(model: nn.Module, x, baseline, segments, target: int, z: torch.Tensor, batch_size: int) -> torch.Tensor:
    """v(S) for each coalition row of ``z`` (K, M) bool, one batch of masked images at a time (float64)."""
    v = []
    for part in batch_slices(z.shape[0], batch_size):
        keep = z[part].to(segments.device)[:, segments].unsqueeze(1)  # (k, 1, H, W): pixel in a player of S
        masked = torch.where(keep, x, baseline).contiguous(memory_format=torch.channels_last)  # faster convs on CPU
        v.append(model(masked)[:, target].double().cpu())
    return torch.cat(v)


def _spread(phi: torch.Tensor, segments: torch.Tensor, channels: int) -> torch.Tensor:
    """Pixel attribution (C, H, W): each phi_i divided evenly over the pixels and channels of segment i."""
    size = torch.bincount(segments.flatten(), minlength=phi.shape[0])
    per_value = phi.to(segments.device) / (size * channels)
    return per_value[segments].unsqueeze(0).expand(channels, -1, -1)


def _explain(model, x, target, segments, baseline, batch_size, shapley: Callable, return_values: bool):
    """Shared driver of ``exact`` and ``kernel``: phi = shapley(v, M) per image, spread onto the pixels."""
    check_model(model)
    check_positive_int("batch_size", batch_size)
    x, unbatched = check_input(model, x)
    if x.ndim != 4:
        raise ValueError(f"x: expected images (N, C, H, W) or (C, H, W) to cut into segments, got {describe(x)}")
    players = _check_segments(segments, x)
    x_bar = baseline_like(x, baseline)
    with explaining(model, x, target, batch_size) as (target, _), torch.no_grad():
        phis = []
        for n in range(x.shape[0]):
            v = lambda z, n=n: _values(model, x[n], x_bar[n], players[n], int(target[n]), z, batch_size)
            phis.append(shapley(v, int(players[n].max()) + 1))
    attribution = torch.stack([_spread(phi, s, x.shape[1]) for phi, s in zip(phis, players)])
    attribution = output_like(attribution, x, unbatched)
    if not return_values:
        return attribution
    values = torch.zeros(len(phis), max(len(phi) for phi in phis), dtype=torch.float64)
    for n, phi in enumerate(phis):
        values[n, : len(phi)] = phi
    values = output_like(values, x, unbatched)
    return attribution, values


# ----------------------------------------------------------------------------- exact Shapley values


def _bits(codes: torch.Tensor, m: int) -> torch.Tensor:
    """Coalitions as bool rows (K, M) from their integer codes (bit i set: player i in S)."""
    return (codes.unsqueeze(1) >> torch.arange(m, device=codes.device)) & 1 == 1


def shapley_weights(m: int) -> torch.Tensor:
    """w(s) = s! (M - s - 1)! / M! for s = 0..M-1, the weight of a coalition of size s.

    Chapter 02."""
    s = torch.arange(m, dtype=torch.float64)
    return torch.exp(torch.lgamma(s + 1) + torch.lgamma(m - s) - math.lgamma(m + 1))


def shapley_from_values(v: torch.Tensor) -> torch.Tensor:
    """Exact Shapley values phi (M,) from v(S) (2^M,) indexed by coalition code. Chapter 02."""
    m = int(v.shape[0]).bit_length() - 1
    codes = torch.arange(v.shape[0])
    size = _bits(codes, m).sum(dim=1)
    w = shapley_weights(m)
    phi = torch.empty(m, dtype=torch.float64)
    for i in range(m):
        s = codes[(codes >> i) & 1 == 0]  # coalitions without player i
        phi[i] = (w[size[s]] * (v[s | (1 << i)] - v[s])).sum()
    return phi


def _exact_shapley(v: Callable, m: int) -> torch.Tensor:
    """phi from v(S) of all 2^M coalitions, refused above ``MAX_EXACT_PLAYERS`` players."""
    if m > MAX_EXACT_PLAYERS:
        raise ValueError(
            f"segments: exact Shapley values need 2^M model calls and accept at most M = {MAX_EXACT_PLAYERS} "
            f"segments, got M = {m}; use fewer segments or Kernel SHAP (xai_course.shap.kernel)"
        )
    return shapley_from_values(v(_bits(torch.arange(2**m), m)))


@contract(signed=True, needs="outputs", random=False, sums_to="f(x) - f(baseline) (efficiency)")
def exact(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    *,
    segments,
    baseline="mean",
    batch_size: int = BATCH_SIZE,
    return_values: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Shapley values of the segments by enumerating all 2^M coalitions, spread onto the pixels.

    Every coalition is evaluated exactly once, in batches; M is limited to ``MAX_EXACT_PLAYERS``.
    ``baseline`` is what absent segments show (default "mean", each image's mean colour). The
    attribution sums to f_c(x) - f_c(baseline). With ``return_values=True`` also returns the
    values phi (N, M) (zero-padded where an image has fewer segments). Chapter 02.
    """
    return _explain(model, x, target, segments, baseline, batch_size, _exact_shapley, return_values)


# ----------------------------------------------------------------------------- Kernel SHAP


def kernel_coalitions(m: int, n_samples: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The coalitions z' (K, M) and their kernel weights (K,) that Kernel SHAP evaluates.

    As in Lundberg & Lee's implementation: subset sizes s and M - s get weight proportional to
    pi_x; sizes whose subsets the budget covers are enumerated in full (smallest first), the rest
    are sampled in complementary pairs, and a coalition drawn again adds to its weight. The empty
    and the full coalition are not included (they enter as constraints). Chapter 02.
    """
    n_samples = min(n_samples, 2**m - 2)
    n_sizes, n_paired = math.ceil((m - 1) / 2), (m - 1) // 2
    s = np.arange(1, n_sizes + 1)
    size_weight = (m - 1) / (s * (m - s))
    size_weight[:n_paired] *= 2
    size_weight /= size_weight.sum()
    rows, weights, left, remaining = [], [], n_samples, size_weight.copy()
    n_full = 0
    for size in s:
        count = math.comb(m, size) * (2 if size <= n_paired else 1)
        if left * remaining[size - 1] / count < 1 - 1e-8:
            break
        n_full, left = n_full + 1, left - count
        if remaining[size - 1] < 1:
            remaining /= 1 - remaining[size - 1]
        w = size_weight[size - 1] / math.comb(m, size) / (2 if size <= n_paired else 1)
        for members in _combinations(m, size):
            rows.append(members)
            weights.append(w)
            if size <= n_paired:
                rows.append(~members)
                weights.append(w)
    if left > 0 and n_full < n_sizes:
        sampled = _sample_pairs(m, left, size_weight, n_full, n_paired, rng)
        weight_left = size_weight[n_full:].sum()
        total = sum(sampled.values())
        for key, count in sampled.items():
            rows.append(np.array(key))
            weights.append(count * weight_left / total)
    return torch.from_numpy(np.array(rows, dtype=bool)), torch.tensor(weights, dtype=torch.float64)


def _combinations(m: int, size: int) -> Iterator[np.ndarray]:
    """All bool rows of length m with ``size`` ones."""
    for members in combinations(range(m), size):
        row = np.zeros(m, dtype=bool)
        row[list(members)] = True
        yield row


def _sample_pairs(m, left, size_weight, n_full, n_paired, rng) -> dict[tuple, float]:
    """Random coalitions and their complements with the leftover size distribution; counts merge duplicates."""
    p = size_weight.copy()
    p[:n_paired] /= 2  # a paired draw adds two samples
    p = p[n_full:] / p[n_full:].sum()
    counts: dict[tuple, float] = {}
    for size in rng.choice(len(p), 4 * left, p=p) + n_full + 1:
        row = np.zeros(m, dtype=bool)
        row[rng.permutation(m)[:size]] = True
        for z in (row, ~row) if size <= n_paired else (row,):
            if left == 0:
                return counts
            key = tuple(z.tolist())
            left -= key not in counts
            counts[key] = counts.get(key, 0.0) + 1.0
    return counts


def kernel_weighted_least_squares(
    z: torch.Tensor, w: torch.Tensor, v: torch.Tensor, v_empty, v_full
) -> torch.Tensor:
    """phi minimizing sum_k w_k (v_k - v_empty - z_k . phi)^2 subject to sum phi = v_full - v_empty.

    The constraint eliminates the last player: phi_M = (v_full - v_empty) - sum of the others.
    Chapter 02.
    """
    z, total = z.double(), v_full - v_empty
    a = z[:, :-1] - z[:, -1:]
    b = v - v_empty - z[:, -1] * total
    root = w.sqrt().unsqueeze(1)
    phi_rest = torch.linalg.lstsq(root * a, root[:, 0] * b, driver="gelsd").solution
    return torch.cat([phi_rest, (total - phi_rest.sum()).reshape(1)])


def _kernel_shap(n_samples: int, seed: int) -> Callable:
    def shapley(v: Callable, m: int) -> torch.Tensor:
        ends = _bits(torch.tensor([0, 2**m - 1]), m)
        v_empty, v_full = v(ends)
        if m == 1:
            return (v_full - v_empty).reshape(1)
        z, w = kernel_coalitions(m, n_samples, np.random.default_rng(seed))
        return kernel_weighted_least_squares(z, w, v(z), v_empty, v_full)

    return shapley


@contract(signed=True, needs="outputs", random=True, sums_to="f(x) - f(baseline) (efficiency)")
def kernel(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    *,
    segments,
    baseline="mean",
    n_samples: int = 2048,
    seed: int = 0,
    batch_size: int = BATCH_SIZE,
    return_values: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Kernel SHAP (Lundberg & Lee 2017) on the segments, spread onto the pixels.

    Evaluates ``n_samples`` coalitions (at most 2^M - 2, then the result equals ``exact``) chosen
    by ``kernel_coalitions`` plus the empty and full ones, and solves the weighted least squares
    with the efficiency constraint, so the attribution sums to f_c(x) - f_c(baseline). Same
    ``seed`` (an int or a ``torch.Generator``), same result. ``return_values=True`` also returns
    phi (N, M). Chapter 02.
    """
    check_positive_int("n_samples", n_samples)
    seed = check_seed(seed)
    return _explain(model, x, target, segments, baseline, batch_size, _kernel_shap(n_samples, seed), return_values)


# ----------------------------------------------------------------------------- Deep SHAP


def _paired_halves(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The input half and the reference half of a batch [x repeated B; background]."""
    return t.chunk(2)


def multiplier(f: Callable, zx: torch.Tensor, zr: torch.Tensor) -> torch.Tensor:
    """DeepLIFT's multiplier m = (f(zx) - f(zr)) / (zx - zr) of an elementwise f; f'(zx) where
    zx - zr is about 0. Chapter 02."""
    with torch.enable_grad():
        z_leaf = zx.detach().requires_grad_(True)
        (gradient,) = torch.autograd.grad(f(z_leaf).sum(), z_leaf)
    delta_z = zx - zr
    small = delta_z.abs() < RESCALE_EPS
    return torch.where(small, gradient, (f(zx) - f(zr)) / torch.where(small, 1.0, delta_z))


class _RescaleMaxPool(torch.autograd.Function):
    """Max-pooling with the DeepLIFT multiplier of Captum and shap.

    With y and y_bar the pooled input and reference, top = max(y, y_bar): the difference
    (top - y_bar) goes back to the input's switch, (y - top) to the reference's switch; the
    multiplier is that sum divided by delta z (the gradient where delta z is about zero).
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, pool: nn.Module) -> torch.Tensor:
        y, switches = max_pool_switches(pool, z)
        ctx.save_for_backward(z, y, switches)
        return y

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        z, y, switches = ctx.saved_tensors
        (zx, zr), (yx, yr), (sx, sr), (gx, _) = map(_paired_halves, (z, y, switches, g))
        top = torch.maximum(yx, yr)
        delta_y = unpool(gx * (top - yr), sx, zx.shape) + unpool(gx * (yx - top), sr, zx.shape)
        delta_z = zx - zr
        small = delta_z.abs() < RESCALE_EPS
        mg = torch.where(small, unpool(gx, sx, zx.shape), delta_y / torch.where(small, 1.0, delta_z))
        return torch.cat([mg, mg]), None


def rescale_rule(module: nn.Module, inputs: tuple, y: torch.Tensor) -> torch.Tensor:
    """Deep SHAP's rule for a nonlinear layer: its output y again, with the DeepLIFT multipliers as
    its gradient. Chapter 02."""
    if kind(module) == "maxpool":
        return _RescaleMaxPool.apply(inputs[0], module)
    z = inputs[0]
    m = multiplier(
        module.forward, *_paired_halves(z.detach())
    )  # forward: not the module, whose hook this is
    return rescaled(y, z, torch.cat([m, m]))


def _check_summation(contributions: torch.Tensor, delta_f: torch.Tensor) -> None:
    """DeepLIFT's summation to delta, per (input, background) pair; it fails on functional nonlinearities."""
    error = (contributions.flatten(1).sum(1).double() - delta_f.double()).abs()
    bad = error > 1e-3 * (1 + delta_f.double().abs())
    if bad.any():
        raise NotImplementedError(
            f"model: the DeepLIFT contributions miss f(x) - f(b) by {error.max().item():.3g}; the model applies a "
            "nonlinearity that is not a module (F.relu, torch.max, ...), which Deep SHAP cannot see; use modules"
        )


@contract(signed=True, needs="layers", random=False, sums_to="f(x) - f(background) (summation to delta)")
def deep(model: nn.Module, x: torch.Tensor, target: Target = None, *, background: torch.Tensor) -> torch.Tensor:
    """Deep SHAP: DeepLIFT rescale attributions against each background row, averaged.

    phi = mean_b m(x, b) * (x - b), where the multipliers m come from one backward pass through
    [x repeated B; background] in which every ReLU-like module and max-pool passes delta y / delta x
    of the paired halves instead of its gradient (per call, so a module reused several times and
    in-place ReLUs are handled). Sums to f_c(x) - mean_b f_c(b). Unsupported layers raise a
    ``NotImplementedError``. Chapter 02.
    """
    x, unbatched = check_input(model, x)
    background, _ = check_input(model, background, "background")
    if background.shape[1:] != x.shape[1:]:
        raise ValueError(f"background: expected rows of shape {tuple(x.shape[1:])}, got {describe(background)}")
    nonlinear = [m for _, m, k in check_layers(model, "Deep SHAP") if k in ("relu", "activation", "maxpool")]
    background = background.to(x)
    with explaining(model, x, target) as (target, _):
        for module in model.modules():
            if hasattr(module, "inplace"):
                module.inplace = False  # the rule reads the layer's input after the layer
        with modified(model, dict.fromkeys(nonlinear, rescale_rule)):
            phi = torch.stack([_deep_one(model, x_n, t, background) for x_n, t in zip(x, target.tolist())])
    return output_like(phi, x, unbatched)


def _deep_one(model: nn.Module, x_n: torch.Tensor, t: int, background: torch.Tensor) -> torch.Tensor:
    """Deep SHAP of one image against all background rows, in one forward and one backward pass."""
    b = background.shape[0]
    with torch.enable_grad():
        pairs = torch.cat([x_n.expand_as(background), background]).requires_grad_(True)
        logits = model(pairs)[:, t]
        (m,) = torch.autograd.grad(logits[:b].sum(), pairs)
    contributions = m[:b] * (x_n - background)
    _check_summation(contributions, (logits[:b] - logits[b:]).detach())
    return contributions.mean(0)


# ----------------------------------------------------------------------------- local to global


@contract(signed=lambda reduce: reduce == "class")  # class means of signed maps; "abs" is unsigned
def global_importance(
    explain: Callable, model: nn.Module, x: torch.Tensor, labels=None, *, reduce: str = "class", **parameters
) -> torch.Tensor:
    """Local explanations aggregated over a data set: the survey's step from local to global.

    Each image of ``x`` (N, C, H, W) is explained by ``explain(model, x, target, **parameters)``
    (e.g. ``kernel`` with ``segments=superpixels(x)``, or ``deep`` with ``background=...``) for its
    label (``labels``, or the predicted class if None). ``reduce="class"`` gives the class-wise
    mean maps (K, C, H, W), zero for a class without images; ``reduce="abs"`` the mean absolute
    attribution (C, H, W). Chapter 02.
    """
    x, _ = check_input(model, x)
    if reduce not in ("class", "abs"):
        raise ValueError(f"reduce: expected 'class' or 'abs', got {reduce!r}")
    logits = predict(model, x)
    target = resolve_target(labels, logits)
    attribution = explain(model, x, target, **parameters)
    if reduce == "abs":
        return attribution.abs().mean(0)
    per_class = torch.zeros(logits.shape[1], *x.shape[1:], dtype=attribution.dtype, device=attribution.device)
    per_class.index_add_(0, target, attribution)
    count = torch.bincount(target, minlength=logits.shape[1]).clamp(min=1)
    return per_class / count.view(-1, *[1] * (x.ndim - 1)).to(per_class)
