"""Evaluating explanations: faithfulness, localization, sanity, stability, completeness.

A heatmap is a claim about the model; these functions test the claim with measurements.

- **Deletion and insertion** (Petsiuk, Das & Saenko 2018, RISE): the target's softmax probability while the most
  relevant pixels are replaced by a baseline (deletion), or copied back into a blurred image (insertion); the score
  is the area under the curve on a unit axis, ``(sum - first/2 - last/2) / (len - 1)``. Deletion: lower is better.
  Insertion: higher is better.
- **ROAD** (Rong, Leemann, Borisov, Kasneci & Kasneci 2022): pixels removed by noisy linear imputation (each
  becomes the weighted mean of its neighbours, plus a little noise), most relevant first (MoRF, lower is better) or
  least relevant first (LeRF, higher is better), at a list of fractions; imputation leaves no edges that tell the
  model where the removed pixels were.
- **Pixel flipping / AOPC** (Samek, Binder, Montavon, Lapuschkin & Müller 2017): square regions perturbed
  cumulatively, most relevant first (MoRF); AOPC is the mean drop of the target logit. Higher is better.
- **Localization against ground truth** (Arras, Osman & Samek 2022, CLEVR-XAI): relevance mass accuracy and
  relevance rank accuracy of the channel-pooled map, and the pointing game (Zhang et al. 2016).
- **Sanity: cascading randomization** (Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim 2018): the layers of
  a copy of the model are re-initialised from the top down, cumulatively; a map that hardly changes does not
  explain the model.
- **Stability**: the spread of a random method across seeds, and max-sensitivity (Yeh, Hsieh, Suggala,
  Inouye & Ravikumar 2019), the largest relative change of the map under small uniform input noise.
- **Completeness**: how far the attribution's sum is from the output difference its theory promises.

Every function runs the model in eval mode under ``torch.no_grad()`` (except inside the explained methods) and
leaves it exactly as it was (``core.model_guard``). Perturbed inputs are built one batch of (image, step) pairs at
a time from the pixel ranks, so memory holds one batch, not all steps.

Speed (``python benchmarks/deletion_speed.py``, 2 CPU threads on a shared machine, median of 3): ``deletion`` 7.38 s,
the 32 x 65 bare forward passes it needs 6.45 s (ratio 1.14; over three runs 1.11 to 1.39, the requirement is at
most 5); a per-step loop of single-image forward passes 24.4 s (3.3 x slower than ``deletion``).

Introduced in chapter 00; used in every chapter's "strengths and limitations" section and in chapter 08.
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy import stats
from skimage.metrics import structural_similarity
from torch import nn
from tqdm.auto import tqdm

from .backward import modified
from .core import (
    Baseline,
    Target,
    baseline_like,
    batch_slices,
    check_input,
    check_model,
    check_number,
    check_positive_int,
    check_seed,
    check_spatial,
    contract,
    describe,
    explaining,
    model_guard,
    predict,
)

Method = Callable[..., torch.Tensor]

# ----------------------------------------------------------------------------- shared helpers


def _check_attribution(attribution, x: torch.Tensor, name: str = "attribution") -> torch.Tensor:
    """``attribution`` batched like the (batched) ``x``: shape (N, C, *S) or (N, 1, *S), finite floats."""
    expected = f"a float tensor of the shape of x {tuple(x.shape)} (or with 1 channel)"
    if not isinstance(attribution, torch.Tensor) or not attribution.is_floating_point():
        raise TypeError(f"{name}: expected {expected}, got {describe(attribution)}")
    a = attribution.detach()
    if a.ndim == x.ndim - 1:
        a = a.unsqueeze(0)
    if a.ndim != x.ndim or a.shape[0] != x.shape[0] or a.shape[2:] != x.shape[2:] or a.shape[1] not in (1, x.shape[1]):
        raise ValueError(f"{name}: expected {expected}, got {describe(attribution)}")
    if not torch.isfinite(a).all():
        raise ValueError(f"{name}: expected finite values, got a tensor containing NaN or inf")
    return a.to(device=x.device, dtype=x.dtype)


def _check_method(method, name: str = "method") -> Method:
    if not callable(method):
        raise TypeError(f"{name}: expected a callable method(model, x, target), got {describe(method)}")
    return method


def _relative(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` for non-negative tensors: 0 where both are zero, inf where only ``den`` is zero."""
    return torch.where(den > 0, num / den.where(den > 0, 1.0), torch.where(num > 0, math.inf, 0.0))


@contract(signed=False, needs="outputs", random=True)
def random_attribution(model, x, target: Target = None, *, seed: int = 0) -> torch.Tensor:
    """The random baseline: uniform noise in [0, 1) of the shape of ``x``, the same for the same seed.

    Every comparison includes it for scale. The model runs once, so that ``x`` and ``target`` are checked
    like any method's. Chapter 00.
    """
    batched, unbatched = check_input(model, x)
    g = torch.Generator().manual_seed(check_seed(seed))
    with explaining(model, batched, target):
        a = torch.rand(batched.shape, generator=g, dtype=batched.dtype).to(batched.device)
    return a[0] if unbatched else a


# ----------------------------------------------------------------------------- faithfulness


@dataclass
class CurveResult:
    """A deletion or insertion curve per image (Petsiuk et al. 2018), or a ROAD curve (Rong et al. 2022). Chapter 00.

    Attributes
    ----------
    fractions : (T,) fraction of the pixels deleted (inserted, removed) at each step: 0 to 1 in steps + 1 steps
        for deletion and insertion, ROAD's own list
    scores : (N, T) softmax probability of the target class at each step
    auc : (N,) area under each curve by the trapezoid rule, divided by the span of the fractions (1 for deletion
        and insertion): the mean height of the curve
    mean_auc : the mean of ``auc``, equal to the AUC of the mean curve (RISE's batch score)
    target : (N,) the class whose probability is recorded
    """

    fractions: torch.Tensor
    scores: torch.Tensor
    auc: torch.Tensor
    mean_auc: float
    target: torch.Tensor


@dataclass
class FlippingResult:
    """Region perturbation curves, most relevant region first (Samek et al. 2017). Chapter 00.

    Attributes
    ----------
    regions : (L + 1,) number of regions perturbed at each step, 0 to L
    scores : (N, L + 1) target logit f(x^(k))
    drops : (N, L + 1) f(x^(0)) - f(x^(k))
    aopc : (N,) mean of ``drops`` over k = 0..L
    mean_aopc : the mean of ``aopc`` over images
    target : (N,) the class whose logit is recorded
    """

    regions: torch.Tensor
    scores: torch.Tensor
    drops: torch.Tensor
    aopc: torch.Tensor
    mean_aopc: float
    target: torch.Tensor


def _rank(relevance: torch.Tensor) -> torch.Tensor:
    """Rank of each column of ``relevance`` (N, P), 0 = most relevant; ties go to the lower index (stable)."""
    return torch.argsort(relevance, dim=1, descending=True, stable=True).argsort(dim=1)


def auc(scores: torch.Tensor) -> torch.Tensor:
    """Area under curves ``scores`` (N, T) by the trapezoid rule on [0, 1], RISE's ``auc``. Chapter 00."""
    if not isinstance(scores, torch.Tensor) or not scores.is_floating_point() or scores.shape[-1:] < (2,):
        raise TypeError(f"scores: expected a float tensor (N, T) of curves with T >= 2 points, got {describe(scores)}")
    return (scores.sum(-1) - scores[..., 0] / 2 - scores[..., -1] / 2) / (scores.shape[-1] - 1)


@torch.no_grad()
def _curves(model, start, finish, rank, k, target, batch_size: int, probability: bool) -> torch.Tensor:
    """Target score (N, T) when the positions with ``rank < k[t]`` come from ``finish``, the others from ``start``.

    ``finish`` is a tensor like ``start``, or ``finish(i, replaced)`` of the images' indices (B,) and the replaced
    positions (B, 1, P) returning (B, C, P) (ROAD's imputation depends on which positions are replaced)."""
    n, steps = rank.shape[0], k.numel()
    start_flat = start.flatten(2)
    scores = torch.empty(n * steps, dtype=start.dtype, device=start.device)
    for pairs in batch_slices(n * steps, batch_size):
        pair = torch.arange(pairs.start, pairs.stop, device=start.device)
        i, t = pair // steps, pair % steps
        replaced = (rank[i] < k[t, None]).unsqueeze(1)
        ends = finish(i, replaced) if callable(finish) else finish.flatten(2)[i]
        inputs = torch.where(replaced, ends, start_flat[i]).view(-1, *start.shape[1:])
        out = model(inputs)
        if probability:
            out = out.softmax(dim=1)
        scores[pairs] = out.gather(1, target[i, None]).squeeze(1)
    return scores.view(n, steps)


def _causal_metric(model, x, target, attribution, steps, baseline, batch_size, insert: bool) -> CurveResult:
    x, _ = check_input(model, x)
    check_spatial(x)
    a = _check_attribution(attribution, x)
    check_positive_int("steps", steps)
    check_positive_int("batch_size", batch_size)
    background = baseline_like(x, baseline)
    rank = _rank(a.sum(1).flatten(1))
    fractions = torch.linspace(0.0, 1.0, steps + 1)
    k = (fractions * rank.shape[1]).round().long().to(x.device)
    start, finish = (background, x) if insert else (x, background)
    with explaining(model, x, target, batch_size) as (target, _):
        scores = _curves(model, start, finish, rank, k, target, batch_size, probability=True)
    area = auc(scores)
    return CurveResult(fractions, scores, area, area.mean().item(), target)


@contract
def deletion(
    model, x, target, attribution, *, steps: int = 64, baseline: Baseline = 0.0, batch_size: int = 128
) -> CurveResult:
    """Deletion curve: replace the most relevant pixels first and record the target's probability.

    Parameters
    ----------
    model, x, target : as in the calling contract; ``target=None`` is the class predicted on ``x``.
    attribution : (N, C, H, W) or (N, C, L) (or 1 channel); pixels are ranked by its sum over channels,
        ties by pixel index, so an all-zero attribution gives the curve of the pixel-index order.
    steps : the curve has ``steps + 1`` points; at fraction f, ``round(f * H * W)`` pixels are replaced.
    baseline : what replaces them (``core.baseline_like``): a float (default 0.0), ``"blur"``,
        ``"mean"`` (the image's mean colour) or a tensor broadcastable to ``x``.
    batch_size : number of perturbed inputs per forward pass.

    Returns a ``CurveResult`` (lower AUC is better). Chapter 00.
    """
    return _causal_metric(model, x, target, attribution, steps, baseline, batch_size, insert=False)


@contract
def insertion(
    model, x, target, attribution, *, steps: int = 64, baseline: Baseline = "blur", batch_size: int = 128
) -> CurveResult:
    """Insertion curve: start from the baseline and insert the most relevant pixels of ``x`` first.

    Parameters as for ``deletion``; the default baseline is RISE's blurred image (Gaussian,
    klen 11, sigma 5). Returns a ``CurveResult`` (higher AUC is better). Chapter 00.
    """
    return _causal_metric(model, x, target, attribution, steps, baseline, batch_size, insert=True)


ROAD_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # Rong et al. 2022
ORDERS = ("morf", "lerf")


def _check_fractions(fractions) -> torch.Tensor:
    expected = "at least two increasing fractions in [0, 1) (every image keeps a visible pixel)"
    try:
        f = torch.tensor(fractions, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"fractions: expected {expected}, got {describe(fractions)}") from None
    if f.ndim != 1 or f.numel() < 2 or not (f.diff() > 0).all() or f[0] < 0 or f[-1] >= 1:
        raise ValueError(f"fractions: expected {expected}, got {describe(fractions)}")
    return f


@contract
def road(
    model,
    x,
    target,
    attribution,
    *,
    fractions: Sequence[float] = ROAD_FRACTIONS,
    order: str = "morf",
    noise: float = 0.01,
    seed: int = 0,
    batch_size: int = 128,
) -> CurveResult:
    """ROAD: remove pixels by noisy linear imputation, most or least relevant first (Rong et al. 2022).

    At each fraction f, the ``round(f * H * W)`` most relevant pixels (``order="morf"``) or least relevant
    (``"lerf"``) become the weighted mean of their neighbours (``core.baseline_like(x, "impute", hidden=...)``,
    one sparse linear system over all removed pixels) plus Gaussian noise of standard deviation ``noise``,
    and the target's softmax probability is recorded. Imputation leaves no sharp edges to the removed
    region, so the curve measures the information removed rather than the shape of the hole.

    Parameters
    ----------
    model, x, target, attribution : as for ``deletion``; pixels are ranked by the sum over channels, ties
        by pixel index.
    fractions : increasing, in [0, 1); default the paper's 10 % to 90 %.
    order : "morf" (most relevant first: a low curve is good) or "lerf" (least relevant first: high is good).
    noise : standard deviation of the noise on the imputed values; 0 gives the plain linear imputation.
    seed : seeds one noise image per image, shared by every fraction (so a removed pixel keeps its value).
    batch_size : number of perturbed inputs per forward pass.

    Returns a ``CurveResult`` whose ``auc`` is the mean height of the curve over the fractions (trapezoid
    area divided by ``fractions[-1] - fractions[0]``). Chapter 08.
    """
    x, _ = check_input(model, x)
    check_spatial(x)
    a = _check_attribution(attribution, x)
    f = _check_fractions(fractions)
    if order not in ORDERS:
        raise ValueError(f"order: expected one of {list(ORDERS)}, got {describe(order)}")
    check_number("noise", noise)
    g = torch.Generator().manual_seed(check_seed(seed))
    check_positive_int("batch_size", batch_size)
    relevance = a.sum(1).flatten(1)
    rank = _rank(relevance if order == "morf" else -relevance)
    k = (f * rank.shape[1]).round().long().to(x.device)
    eps = (noise * torch.randn(x.shape, generator=g, dtype=x.dtype)).to(x.device).flatten(2)

    def impute(i: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
        filled = baseline_like(x[i], "impute", hidden=removed.view(-1, *x.shape[2:]))
        return filled.flatten(2) + eps[i]

    with explaining(model, x, target, batch_size) as (target, _):
        scores = _curves(model, x, impute, rank, k, target, batch_size, probability=True)
    area = torch.trapezoid(scores, f.to(scores), dim=1) / (f[-1] - f[0]).item()
    return CurveResult(f.to(x.dtype), scores, area, area.mean().item(), target)


def _region_ids(shape: Sequence[int], region: int) -> torch.Tensor:
    """Region index of every position of a grid ``shape``, regions of ``region`` positions per axis, row-major."""
    ids = torch.zeros((), dtype=torch.long)
    for size in shape:
        ids = ids.unsqueeze(-1) * math.ceil(size / region) + torch.arange(size) // region
    return ids.flatten()


@contract
def pixel_flipping(
    model,
    x,
    target,
    attribution,
    *,
    region: int = 8,
    steps: int | None = None,
    baseline: Baseline = "uniform",
    seed: int = 0,
    batch_size: int = 128,
) -> FlippingResult:
    """Region perturbation, most relevant first (MoRF), and its AOPC (Samek et al. 2017).

    Parameters
    ----------
    model, x, target, attribution : as for ``deletion``.
    region : side of the square regions (``region`` positions for a time series); 8 on 64x64 images
        (Samek et al. used 9 on 224x224). Regions are ranked by their summed attribution, ties by
        region index (row-major).
    steps : L, the number of regions perturbed; ``None`` means all of them.
    baseline : ``"uniform"`` (default, as Samek et al.): one noise image per image, uniform between the
        minimum and maximum of ``x``, drawn from a generator seeded with ``seed``, so a perturbed
        region keeps its values; or a float, ``"blur"``, ``"mean"`` or a tensor, as for ``deletion``.

    Returns a ``FlippingResult``; the recorded score is the target logit. Chapter 00.
    """
    x, _ = check_input(model, x)
    check_spatial(x)
    a = _check_attribution(attribution, x)
    check_positive_int("region", region)
    check_positive_int("batch_size", batch_size)
    ids = _region_ids(x.shape[2:], region).to(x.device)
    n_regions = int(ids.max()) + 1
    if steps is None:
        steps = n_regions
    check_positive_int("steps", steps)
    if steps > n_regions:
        raise ValueError(f"steps: expected at most the number of regions, {n_regions}, got {steps}")
    background = baseline_like(x, baseline, seed=check_seed(seed))
    relevance = torch.zeros(x.shape[0], n_regions, dtype=x.dtype, device=x.device)
    relevance.index_add_(1, ids, a.sum(1).flatten(1))
    rank = _rank(relevance)[:, ids]
    k = torch.arange(steps + 1, device=x.device)
    with explaining(model, x, target, batch_size) as (target, _):
        scores = _curves(model, x, background, rank, k, target, batch_size, probability=False)
    drops = scores[:, :1] - scores
    aopc = drops.mean(dim=1)
    return FlippingResult(k.cpu(), scores, drops, aopc, aopc.mean().item(), target)


# ----------------------------------------------------------------------------- localization

POOLINGS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sum,pos": lambda a: a.sum(1).clamp(min=0),
    "sum,abs": lambda a: a.sum(1).abs(),
    "sum": lambda a: a.sum(1),
}
"""Channel poolings of CLEVR-XAI (Arras et al. 2022): (N, C, *S) -> (N, *S)."""


def _check_mask(mask, shape: torch.Size, name: str = "mask") -> torch.Tensor:
    """``mask`` as a bool tensor (N, *S) for inputs or attributions of ``shape`` (N, C, *S)."""
    expected = (shape[0], *shape[2:])
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != expected:
        raise ValueError(f"{name}: expected a bool tensor of shape {expected} (one per image), got {describe(mask)}")
    if mask.dtype != torch.bool and not ((mask == 0) | (mask == 1)).all():
        raise ValueError(f"{name}: expected a bool tensor or values 0 and 1, got {describe(mask)}")
    return mask.to(torch.bool)


def _pooled(attribution, mask, pooling: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The pooled map (N, P) and the mask (N, P) as bool, after checking both."""
    if not isinstance(attribution, torch.Tensor) or not attribution.is_floating_point() or attribution.ndim < 3:
        raise TypeError(f"attribution: expected a float tensor (N, C, H, W) or (N, C, L), got {describe(attribution)}")
    if not torch.isfinite(attribution).all():
        raise ValueError("attribution: expected finite values, got a tensor containing NaN or inf")
    mask = _check_mask(mask, attribution.shape)
    if pooling not in POOLINGS:
        raise ValueError(f"pooling: expected one of {list(POOLINGS)}, got {pooling!r}")
    r = POOLINGS[pooling](attribution.detach()).flatten(1)
    return r, mask.to(r.device).flatten(1)


def _share_in_mask(r: torch.Tensor, m: torch.Tensor, threshold: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """Expected number of mask pixels among the ``slots`` largest of ``r``, ties at ``threshold`` drawn at random."""
    above, tied = r > threshold[:, None], r == threshold[:, None]
    free = slots - above.sum(1)
    return (above & m).sum(1) + free * (tied & m).sum(1) / tied.sum(1)


def _empty_is_nan(result: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return result.masked_fill(m.sum(1) == 0, math.nan)


def relevance_mass_accuracy(attribution, mask, *, pooling: str = "sum,pos") -> torch.Tensor:
    """Share of the pooled relevance inside the mask, sum_{p in GT} R_p / sum_p R_p, per image (N,).

    ``pooling`` is one of ``POOLINGS`` (default ``"sum,pos"``: sum over channels, positive part; with
    ``"sum"`` the result can leave [0, 1]). A map whose pooled relevance sums to zero (e.g. all zero)
    scores as a constant map does, the mask's area fraction; an empty mask gives NaN. Average with
    ``.nanmean()``. Arras et al. 2022. Chapter 00.
    """
    r, m = _pooled(attribution, mask, pooling)
    total, inside = r.sum(1), (r * m).sum(1)
    area = m.to(r.dtype).mean(1)
    return _empty_is_nan(torch.where(total != 0, inside / total.where(total != 0, 1.0), area), m)


def relevance_rank_accuracy(attribution, mask, *, pooling: str = "sum,pos") -> torch.Tensor:
    """Share of the K most relevant pixels inside the mask, |top-K(R) ∩ GT| / K with K = |GT|, per image (N,).

    Ties at the K-th value are shared: the result is its expected value when tied pixels are
    picked at random, so a constant or all-zero map scores the mask's area fraction. An empty
    mask gives NaN. Arras et al. 2022. Chapter 00.
    """
    r, m = _pooled(attribution, mask, pooling)
    size = m.sum(1)
    kth = r.sort(dim=1, descending=True).values.gather(1, (size - 1).clamp(min=0)[:, None]).squeeze(1)
    return _empty_is_nan(_share_in_mask(r, m, kth, size) / size.clamp(min=1), m)


def pointing_game(attribution, mask, *, pooling: str = "sum,pos") -> torch.Tensor:
    """1.0 where the maximum of the pooled map lies in the mask, else 0.0, per image (N,).

    With several maximal pixels the result is the share of them inside the mask (the expected
    hit when one is picked at random); no tolerance around the mask (Zhang et al. 2016 used 15
    pixels on 224x224). An empty mask gives NaN. Chapter 00.
    """
    r, m = _pooled(attribution, mask, pooling)
    return _empty_is_nan(_share_in_mask(r, m, r.max(dim=1).values, torch.ones_like(m[:, 0], dtype=torch.long)), m)


# ----------------------------------------------------------------------------- sanity: cascading randomization


@dataclass
class RandomizationResult:
    """Similarity of each cascading-randomization stage's map to the original map (Adebayo et al. 2018). Chapter 00.

    Attributes
    ----------
    stages : names of the layers re-initialised, top down; stage s has stages[0..s] randomized
    spearman_abs : (S, N) Spearman rank correlation of the maps sum_c |R_c|
    spearman : (S, N) Spearman rank correlation of the signed maps sum_c R_c
    ssim : (S, N) SSIM of the maps sum_c |R_c| scaled to [0, 1] by their maximum
    attributions : (S + 1, N, C, *spatial), the original model's first, for plotting
    target : (N,) the class explained at every stage (predicted by the original model if None was given)
    """

    stages: list[str]
    spearman_abs: torch.Tensor
    spearman: torch.Tensor
    ssim: torch.Tensor
    attributions: torch.Tensor
    target: torch.Tensor

    @property
    def mean_spearman_abs(self) -> torch.Tensor:
        return self.spearman_abs.nanmean(dim=1)

    @property
    def mean_spearman(self) -> torch.Tensor:
        return self.spearman.nanmean(dim=1)

    @property
    def mean_ssim(self) -> torch.Tensor:
        return self.ssim.nanmean(dim=1)


def _has_parameters(module: nn.Module) -> bool:
    return next(module.parameters(recurse=False), None) is not None


@contract
def layers_top_down(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Names of the modules that hold parameters, in reverse order of their first call on ``x[:1]``.

    Modules never called in the forward pass are left out. Chapter 00.
    """
    x, _ = check_input(model, x)
    names = {module: name for name, module in model.named_modules() if _has_parameters(module)}
    called: list[nn.Module] = []

    def record(module, args):
        if module not in called:
            called.append(module)

    with model_guard(model), torch.no_grad(), modified(model, {}, dict.fromkeys(names, record)):
        model(x[:1])
    return [names[module] for module in reversed(called)]


def _reinitialise(module: nn.Module, name: str, seed: int) -> None:
    """Re-initialise every parameter of ``module`` with its layers' own ``reset_parameters``, seeded."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for part_name, part in module.named_modules(prefix=name):
            if not _has_parameters(part):
                continue
            if not hasattr(part, "reset_parameters"):
                raise NotImplementedError(
                    f"randomization_check: layer {part_name} ({type(part).__name__}) has no reset_parameters(); "
                    "supported are layers that define it (Conv, Linear, BatchNorm, ...)"
                )
            part.reset_parameters()


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of the rows of ``a`` and ``b`` (N, P); NaN for a constant row. Chapter 00."""
    ra, rb = (stats.rankdata(t.double().cpu().numpy(), axis=1) for t in (a, b))
    ra, rb = ra - ra.mean(1, keepdims=True), rb - rb.mean(1, keepdims=True)
    den = np.sqrt((ra**2).sum(1) * (rb**2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return torch.from_numpy(np.where(den > 0, (ra * rb).sum(1) / den, np.nan))


def _ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SSIM of non-negative maps (N, *S), each scaled to [0, 1] by its maximum; NaN if the maps are tiny."""
    win = min(7, *a.shape[1:])
    if win % 2 == 0:
        win -= 1
    if win < 3:
        return torch.full((a.shape[0],), math.nan, dtype=torch.float64)
    a, b = (t / t.flatten(1).amax(1).clamp(min=1e-30).view(-1, *[1] * (t.ndim - 1)) for t in (a, b))
    pairs = zip(a.double().cpu().numpy(), b.double().cpu().numpy(), strict=True)
    return torch.tensor([structural_similarity(p, q, data_range=1.0, win_size=win) for p, q in pairs])


@contract
def randomization_check(
    method: Method, model, x, target: Target = None, *, layers: Sequence[str] | None = None, seed: int = 0
) -> RandomizationResult:
    """Cascading model-parameter randomization, top layer first, on a copy of ``model`` (Adebayo et al. 2018).

    Parameters
    ----------
    method : ``method(model, x, target)`` returning an attribution of the shape of ``x``.
    model, x, target : as in the calling contract; the target is resolved once on the original
        model and explained at every stage.
    layers : names of modules (``model.named_modules()``), top down, each re-initialised as a whole at
        its stage; default: every module holding parameters, in reverse order of the forward pass
        (``layers_top_down``).
    seed : stage s is re-initialised with each layer's own ``reset_parameters()`` right after
        ``torch.manual_seed(seed + s)``; the global random state is restored afterwards.

    Returns a ``RandomizationResult``; maps that stay similar fail the check. Chapter 00.
    """
    _check_method(method)
    x, _ = check_input(model, x)
    check_spatial(x)
    seed = check_seed(seed)
    with explaining(model, x, target) as (target, _):
        randomized = copy.deepcopy(model)
        modules = dict(randomized.named_modules())
        stages = list(layers) if layers is not None else layers_top_down(randomized, x)
        unknown = [name for name in stages if name not in modules]
        if unknown or not stages:
            expected = f"names of sub-modules of model, e.g. {list(modules)[1:4]}"
            raise ValueError(f"layers: expected {expected}, got {layers!r}")
        maps = [_check_attribution(method(model, x.clone(), target), x, "method's attribution")]
        for s, name in enumerate(stages):
            _reinitialise(modules[name], name, seed + s)
            maps.append(_check_attribution(method(randomized, x.clone(), target), x, "method's attribution"))
    attributions = torch.stack(maps)
    magnitude, signed = attributions.abs().sum(2).flatten(2), attributions.sum(2).flatten(2)
    rho_abs = torch.stack([spearman(magnitude[0], m) for m in magnitude[1:]])
    rho = torch.stack([spearman(signed[0], m) for m in signed[1:]])
    maps_abs = attributions.abs().sum(2)
    ssim = torch.stack([_ssim(maps_abs[0], m) for m in maps_abs[1:]])
    return RandomizationResult(stages, rho_abs, rho, ssim, attributions, target)


# ----------------------------------------------------------------------------- stability


@dataclass
class StabilityResult:
    """Spread across seeds and max-sensitivity of an attribution method, per image. Chapter 00.

    Attributes
    ----------
    spread : (N,) mean over pixels of the std across seeds, divided by the mean |map| over seeds and
        pixels; NaN for a method without a ``seed`` parameter
    max_sensitivity : (N,) max over noisy copies of ||Phi(x + delta) - Phi(x)|| / ||Phi(x)|| (L2 norms)
    mean_spread, mean_max_sensitivity : their means over images (NaN-aware)
    """

    spread: torch.Tensor
    max_sensitivity: torch.Tensor
    mean_spread: float
    mean_max_sensitivity: float


def _takes_seed(method: Method) -> bool:
    try:
        return "seed" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


@contract
def stability(
    method: Method,
    model,
    x,
    target: Target = None,
    *,
    seeds: Sequence[int] = (0, 1, 2, 3),
    noise: float = 0.02,
    n_noise: int = 8,
) -> StabilityResult:
    """How much the map of ``method`` moves across random seeds and under small input noise.

    Parameters
    ----------
    method : ``method(model, x, target, **kwargs)``; if it takes ``seed``, it is run once per seed
        for the spread, and with ``seeds[0]`` for max-sensitivity (so only the input changes).
    model, x, target : as in the calling contract; the target is resolved once on ``x``.
    seeds : at least two seeds; ``seeds[0]`` also seeds the input noise.
    noise : radius r of the uniform input noise delta in [-r, r] (0.02 of the [0, 1] course range).
    n_noise : number of noisy copies; max-sensitivity (Yeh et al. 2019) is the largest relative change.

    Returns a ``StabilityResult``; a zero denominator gives 0 if the numerator is 0 too, inf otherwise. Chapter 00.
    """
    _check_method(method)
    x, _ = check_input(model, x)
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or len(seeds) < 2:
        raise ValueError(f"seeds: expected a sequence of at least two ints, got {describe(seeds)}")
    seeds = [check_seed(s) for s in seeds]
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 < noise < math.inf:
        raise ValueError(f"noise: expected a positive float (the radius of the uniform noise), got {noise!r}")
    check_positive_int("n_noise", n_noise)
    random = _takes_seed(method)
    with explaining(model, x, target) as (target, _):

        def explain(inputs: torch.Tensor, seed: int) -> torch.Tensor:
            kwargs = {"seed": seed} if random else {}
            a = method(model, inputs.clone(), target, **kwargs)
            return _check_attribution(a, x, "method's attribution").flatten(1)

        phi = explain(x, seeds[0])
        spread = torch.full((x.shape[0],), math.nan, dtype=x.dtype, device=x.device)
        if random:
            runs = torch.stack([phi] + [explain(x, s) for s in seeds[1:]])
            spread = _relative(runs.std(dim=0, correction=0).mean(1), runs.mean(dim=0).abs().mean(1))
        g = torch.Generator().manual_seed(seeds[0])
        changes = []
        for _ in range(n_noise):
            delta = (2 * torch.rand(x.shape, generator=g, dtype=x.dtype) - 1).to(x.device) * noise
            changes.append((explain(x + delta, seeds[0]) - phi).norm(dim=1))
    sensitivity = _relative(torch.stack(changes).amax(dim=0), phi.norm(dim=1))
    return StabilityResult(spread, sensitivity, spread.nanmean().item(), sensitivity.nanmean().item())


# ----------------------------------------------------------------------------- completeness


@dataclass
class CompletenessResult:
    """How far each attribution's sum is from the output difference its theory promises. Chapter 00.

    Attributes
    ----------
    total : (N,) sum of the attribution over channels and pixels
    promise : (N,) f_c(x) - f_c(baseline), or f_c(x) for ``baseline="zero-output"`` (target logit f_c)
    error : (N,) |total - promise|
    relative : (N,) error / |promise| (0 if both are 0, inf if only the promise is)
    mean_error, mean_relative : their means over images
    """

    total: torch.Tensor
    promise: torch.Tensor
    error: torch.Tensor
    relative: torch.Tensor
    mean_error: float
    mean_relative: float


def _promised_baseline(x: torch.Tensor, baseline) -> torch.Tensor | None:
    """The baseline input of the shape of ``x``, or None for ``"zero-output"``."""
    if isinstance(baseline, str) and baseline == "zero-output":
        return None
    return baseline_like(x, baseline)


@contract
def completeness_error(attribution, model, x, target: Target = None, *, baseline: Baseline = 0.0) -> CompletenessResult:
    """Completeness (summation-to-delta) of ``attribution``: |sum R - (f_c(x) - f_c(baseline))| per image.

    ``baseline`` is the input the theory compares with (``core.baseline_like``): a float (a constant
    image, default 0.0, the baseline of Integrated Gradients and DeepLIFT's reference), "mean", "blur",
    a tensor broadcastable to ``x``, or ``"zero-output"`` when the promise is f_c(x) itself (LRP
    conservation, Shapley efficiency with an output of 0 for the empty coalition). f_c is the target
    logit. Chapter 00.
    """
    x, _ = check_input(model, x)
    a = _check_attribution(attribution, x)
    baseline = _promised_baseline(x, baseline)
    with explaining(model, x, target) as (target, logits):
        promise = logits.gather(1, target[:, None]).squeeze(1)
        if baseline is not None:
            promise = promise - predict(model, baseline).gather(1, target[:, None]).squeeze(1)
    total = a.flatten(1).sum(1)
    error = (total - promise).abs()
    relative = _relative(error, promise.abs())
    return CompletenessResult(total, promise, error, relative, error.mean().item(), relative.mean().item())


# ----------------------------------------------------------------------------- one table for many methods


@dataclass
class Scores:
    """One row of ``compare``: the scores of one method, averaged over images. Chapter 00.

    Faithfulness: ``deletion_auc`` (lower is better), ``insertion_auc``, ``aopc`` (higher is better).
    Localization: ``mass_accuracy``, ``rank_accuracy``, ``pointing_game`` (higher is better; NaN without
    masks). Optional (NaN when not computed): ``road_morf`` (lower is better) and ``road_lerf`` (higher),
    the mean heights of the ROAD curves, ``completeness_error`` (relative), ``spread`` and
    ``max_sensitivity`` (lower is more stable), ``randomized_spearman`` (Spearman of |maps| with every
    layer randomized; lower passes the sanity check).
    """

    method: str
    seconds_per_image: float
    deletion_auc: float
    insertion_auc: float
    aopc: float
    road_morf: float = math.nan
    road_lerf: float = math.nan
    mass_accuracy: float = math.nan
    rank_accuracy: float = math.nan
    pointing_game: float = math.nan
    completeness_error: float = math.nan
    spread: float = math.nan
    max_sensitivity: float = math.nan
    randomized_spearman: float = math.nan


class Comparison(list):
    """The rows (``Scores``) of ``compare``; prints as a plain-text table without the all-NaN columns. Chapter 00."""

    def to_frame(self):
        """A pandas DataFrame indexed by method (pandas is optional: ImportError without it)."""
        import pandas as pd

        return pd.DataFrame([asdict(row) for row in self]).set_index("method")

    def __repr__(self) -> str:
        if not self:
            return "Comparison([])"
        rows = [asdict(row) for row in self]
        columns = [c for c in rows[0] if c == "method" or any(not math.isnan(r[c]) for r in rows)]  # skip all-NaN
        cells = [[row["method"]] + [f"{row[c]:.4g}" for c in columns[1:]] for row in rows]
        widths = [max(len(c), *(len(r[j]) for r in cells)) for j, c in enumerate(columns)]
        lines = [columns] + cells
        return "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in lines)


def compare(
    methods: Mapping[str, Method],
    model,
    images,
    targets=None,
    masks=None,
    *,
    steps: int = 16,
    region: int = 8,
    batch_size: int = 128,
    baselines: Mapping[str, Baseline] | None = None,
    with_road: bool = False,
    fractions: Sequence[float] = ROAD_FRACTIONS,
    with_stability: bool = False,
    with_randomization: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> Comparison:
    """Score several attribution methods on the same images: one ``Scores`` row per method.

    Parameters
    ----------
    methods : name -> ``method(model, x, target)``; a seeded ``"random"`` baseline
        (``random_attribution``) is always added first, for scale.
    model, images, targets : as in the calling contract; targets are resolved once (None: predicted).
    masks : (N, H, W) ground truth for the localization scores, or None.
    steps : deletion and insertion steps, and the number L of ``region``-sized regions for AOPC
        (all regions if there are fewer). The defaults keep a notebook cell short.
    baselines : method name -> ``baseline`` for ``completeness_error``, for methods with a completeness property.
    with_road, fractions : also run ``road`` at these ``fractions``, most and least relevant first (a sparse
        solve per image and fraction: slower than the other scores).
    with_stability, with_randomization : also run ``stability`` and ``randomization_check`` (slower).
    seed : seed of the random baseline, of the pixel-flipping noise and of ROAD's noise.

    ``seconds_per_image`` is the wall time of one call on all images divided by N. Chapter 00.
    """
    if not isinstance(methods, Mapping) or not all(callable(m) for m in methods.values()):
        raise TypeError(f"methods: expected a dict name -> method(model, x, target), got {describe(methods)}")
    if "random" in methods:
        raise ValueError("methods: the name 'random' is reserved for the baseline compare adds; rename yours")
    baselines = dict(baselines or {})
    if set(baselines) - set(methods):
        raise ValueError(f"baselines: expected names of methods {list(methods)}, got {sorted(baselines)}")
    check_model(model)
    images, _ = check_input(model, images, "images")
    if masks is not None:
        masks = _check_mask(masks, images.shape, "masks")
    for baseline in baselines.values():
        _promised_baseline(images, baseline)
    check_positive_int("steps", steps)
    check_positive_int("region", region)
    _check_fractions(fractions)
    seed = check_seed(seed)
    n_regions = math.prod(math.ceil(size / region) for size in images.shape[2:])
    flipping = {"region": region, "steps": min(steps, n_regions), "seed": seed, "batch_size": batch_size}
    removal = {"fractions": fractions, "seed": seed, "batch_size": batch_size}
    baseline = functools.partial(random_attribution, seed=seed)
    rows = Comparison()
    with explaining(model, images, targets, batch_size) as (targets, _):
        for name, method in tqdm({"random": baseline, **methods}.items(), desc="compare", disable=not progress):
            inputs = images.clone()  # the method gets its own copy: a model may write into its input
            start = time.perf_counter()
            try:
                a = method(model, inputs, targets)
            except Exception as error:
                error.add_note(f"raised by methods[{name!r}] in evaluate.compare")
                raise
            seconds = (time.perf_counter() - start) / images.shape[0]
            a = _check_attribution(a, images, f"methods[{name!r}]'s attribution")
            row = Scores(
                name,
                seconds,
                deletion(model, images, targets, a, steps=steps, batch_size=batch_size).mean_auc,
                insertion(model, images, targets, a, steps=steps, batch_size=batch_size).mean_auc,
                pixel_flipping(model, images, targets, a, **flipping).mean_aopc,
            )
            if with_road:
                curves = [road(model, images, targets, a, order=order, **removal) for order in ORDERS]
                row.road_morf, row.road_lerf = (curve.mean_auc for curve in curves)
            if masks is not None:
                row.mass_accuracy = relevance_mass_accuracy(a, masks).nanmean().item()
                row.rank_accuracy = relevance_rank_accuracy(a, masks).nanmean().item()
                row.pointing_game = pointing_game(a, masks).nanmean().item()
            if name in baselines:
                completeness = completeness_error(a, model, images, targets, baseline=baselines[name])
                row.completeness_error = completeness.mean_relative
            if with_stability:
                stable = stability(method, model, images, targets)
                row.spread, row.max_sensitivity = stable.mean_spread, stable.mean_max_sensitivity
            if with_randomization:
                sanity = randomization_check(method, model, images, targets)
                row.randomized_spearman = sanity.mean_spearman_abs[-1].item()
            rows.append(row)
    return rows


# ----------------------------------------------------------------------------- which metrics tell methods apart

METRICS: dict[str, Callable[[Scores], float]] = {
    "deletion": lambda row: -row.deletion_auc,
    "insertion": lambda row: row.insertion_auc,
    "insertion - deletion": lambda row: row.insertion_auc - row.deletion_auc,
    "AOPC": lambda row: row.aopc,
    "ROAD MoRF": lambda row: -row.road_morf,
    "ROAD LeRF": lambda row: row.road_lerf,
    "ROAD LeRF - MoRF": lambda row: row.road_lerf - row.road_morf,
    "mass": lambda row: row.mass_accuracy,
    "rank": lambda row: row.rank_accuracy,
    "pointing": lambda row: row.pointing_game,
}
"""The scores of a ``Scores`` row, each signed so that larger is better (deletion and ROAD MoRF negated)."""
LOCALIZATION = ("mass", "rank", "pointing")


@dataclass
class MetricCheck:
    """How well each metric tells the methods from a random map, and how it agrees with the ground truth. Chapter 08.

    Attributes
    ----------
    separation : metric -> method -> z = (m(method) - mean m(random)) / std m(random), with the mean and
        sample standard deviation over random maps of different seeds, m signed so that larger is better:
        how many standard deviations of the random map's own spread the method lies above it
    agreement : metric -> localization score -> Spearman rank correlation of the two across the methods
    """

    separation: dict[str, dict[str, float]]
    agreement: dict[str, dict[str, float]]

    def separated(self, metric: str, z: float = 2.0) -> list[str]:
        """The methods that ``metric`` puts more than ``z`` standard deviations above the random maps."""
        return [name for name, value in self.separation[metric].items() if value > z]

    def __repr__(self) -> str:
        references = list(next(iter(self.agreement.values()), {}))
        lines = [f"{'metric':22s}{'z > 2':>8s}{'median z':>10s}" + "".join(f"{'rho ' + r:>14s}" for r in references)]
        for metric, z in self.separation.items():
            median, rho = np.median(list(z.values())), "".join(f"{self.agreement[metric][r]:14.2f}" for r in references)
            lines.append(f"{metric:22s}{len(self.separated(metric)):4d} of {len(z):<2d}{median:9.1f}{rho}")
        return "\n".join(lines)


def metric_check(
    rows: Sequence[Scores],
    random_rows: Sequence[Scores],
    *,
    metrics: Mapping[str, Callable[[Scores], float]] = METRICS,
    references: Sequence[str] = LOCALIZATION,
) -> MetricCheck:
    """Which metrics separate the methods of ``rows`` from random maps, and agree with ground-truth localization.

    Parameters
    ----------
    rows : the methods' rows of ``compare`` (without the random map).
    random_rows : rows of ``random_attribution`` with different seeds on the same images, e.g. the first row of
        ``compare({}, model, images, masks=masks, seed=s)`` for a few seeds s.
    metrics : name -> score of a row, larger is better (default ``METRICS``).
    references : names in ``metrics`` of the ground-truth scores to compare with (default: the localization ones).

    A metric that cannot tell a method from a map of random numbers says nothing about that method. The
    random maps' spread over seeds is the yardstick: a z beyond about 2 is outside what a random map
    reaches by luck (on these images; the images' own sampling noise is not in it). Chapter 08.
    """
    rows, random_rows = list(rows), list(random_rows)
    if len(random_rows) < 2 or not all(isinstance(r, Scores) for r in rows + random_rows) or not rows:
        raise ValueError(
            f"rows, random_rows: expected rows of compare, and at least two random rows, got {len(rows)} and "
            f"{describe(random_rows)}"
        )
    unknown = [name for name in references if name not in metrics]
    if unknown:
        raise ValueError(f"references: expected names in metrics {list(metrics)}, got {unknown}")
    separation, agreement = {}, {}
    for name, metric in metrics.items():
        chance = np.array([metric(r) for r in random_rows])
        values = torch.tensor([[metric(r) for r in rows]], dtype=torch.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (values[0].numpy() - chance.mean()) / chance.std(ddof=1)
        separation[name] = {r.method: float(v) for r, v in zip(rows, z, strict=True)}
        agreement[name] = {
            ref: spearman(values, torch.tensor([[metrics[ref](r) for r in rows]], dtype=torch.float64)).item()
            for ref in references
        }
    return MetricCheck(separation, agreement)
