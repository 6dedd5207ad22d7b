"""Shapley additive explanations: exact Shapley values, Kernel SHAP, LIME and Deep SHAP.

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
``lime`` (Ribeiro et al. 2016) fits the same kind of linear model with a proximity kernel and a ridge
penalty instead, without the efficiency constraint.

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
    check_number,
    check_positive_int,
    check_seed,
    contract,
    describe,
    explaining,
    output_like,
    predict,
    resolve_target,
    samples_per_pass,
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
    """One label map with labels 0..M_n-1 per sample of ``x``: (H, W) for images (N, C, H, W), (F,) for
    table rows (N, F), where None makes each feature a player."""
    n, shape = x.shape[0], x.shape[2:] if x.ndim == 4 else x.shape[1:]
    if segments is None and x.ndim == 2:
        segments = torch.arange(x.shape[1])
    if isinstance(segments, np.ndarray):
        segments = torch.from_numpy(segments)
    expected = f"an integer label map {tuple(shape)} or {(n, *shape)} (e.g. from superpixels)"
    if not isinstance(segments, torch.Tensor) or segments.is_floating_point() or segments.is_complex():
        raise TypeError(f"segments: expected {expected}, got {describe(segments)}")
    if segments.shape == shape:
        segments = segments.expand(n, *shape)
    if segments.shape != (n, *shape):
        raise ValueError(f"segments: expected {expected}, got {describe(segments)}")
    return [_relabel(s.to(x.device).long()) for s in segments]


# ----------------------------------------------------------------------------- the game


def _values(model: nn.Module, x, baseline, segments, target: int, z: torch.Tensor, batch_size: int) -> torch.Tensor:
    """v(S) for each coalition row of ``z`` (K, M) bool, one batch of masked samples at a time (float64)."""
    v = []
    for part in batch_slices(z.shape[0], batch_size):
        keep = z[part].to(segments.device)[:, segments]  # (k, H, W) or (k, F): in a player of S
        if x.ndim == 3:  # an image: one mask for all channels, channels-last for faster convolutions on CPU
            masked = torch.where(keep.unsqueeze(1), x, baseline).contiguous(memory_format=torch.channels_last)
        else:
            masked = torch.where(keep, x, baseline)
        v.append(model(masked)[:, target].double().cpu())
    return torch.cat(v)


def _spread(phi: torch.Tensor, segments: torch.Tensor, channels: int) -> torch.Tensor:
    """Attribution like a sample: each phi_i divided evenly over the pixels and channels (C, H, W), or the
    features (F,) of player i."""
    size = torch.bincount(segments.flatten(), minlength=phi.shape[0])
    if segments.ndim == 1:
        return (phi.to(segments.device) / size)[segments]
    per_value = phi.to(segments.device) / (size * channels)
    return per_value[segments].unsqueeze(0).expand(channels, -1, -1)


def _explain(model, x, target, segments, baseline, batch_size, shapley: Callable, return_values: bool):
    """Shared driver of ``exact``, ``kernel`` and ``lime``: phi = shapley(v, M) per sample, spread onto it."""
    check_model(model)
    check_positive_int("batch_size", batch_size)
    x, unbatched = check_input(model, x)
    if x.ndim not in (2, 4):
        expected = "images (N, C, H, W) or (C, H, W) to cut into segments, or table rows (N, F)"
        raise ValueError(f"x: expected {expected}, got {describe(x)}")
    if x.ndim == 2 and isinstance(baseline, str):
        raise ValueError(f"baseline: expected a number or a row of {x.shape[1]} values for table rows (e.g. the "
                         f"training data's mean), got {baseline!r}")  # fmt: skip
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


def _ends(m: int) -> torch.Tensor:
    """The empty and the full coalition, bool rows (2, M)."""
    return torch.tensor([[False], [True]]).expand(2, m)


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
    segments=None,
    baseline="mean",
    batch_size: int = BATCH_SIZE,
    return_values: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Shapley values of the segments by enumerating all 2^M coalitions, spread onto the pixels.

    Every coalition is evaluated exactly once, in batches; M is limited to ``MAX_EXACT_PLAYERS``.
    ``baseline`` is what absent segments show (default "mean", each image's mean colour). For table
    rows x (N, F) the players are the features (``segments=None``) or groups of them (labels (F,)),
    and ``baseline`` is a number or a row, e.g. the training data's mean. The
    attribution sums to f_c(x) - f_c(baseline). With ``return_values=True`` also returns the
    values phi (N, M) (zero-padded where an image has fewer segments). Chapter 02.
    """
    return _explain(model, x, target, segments, baseline, batch_size, _exact_shapley, return_values)


# ----------------------------------------------------------------------------- Kernel SHAP


def kernel_pairs(m: int, s: int) -> int:
    """The number of pairs {S, F minus S} with |S| = s <= M/2: C(M, s), half of it at s = M/2.

    Chapter 02."""
    return math.comb(m, s) // (2 if 2 * s == m else 1)


def kernel_allocation(m: int, n_pairs: int) -> dict[int, int]:
    """How many pairs {S, F minus S} Kernel SHAP draws for each size s = 1..floor(M/2) of S.

    Leverage-score sampling (Musco & Witter 2024) gives every coalition size the same share of
    the budget, so sizes s and M - s get two shares (s = M/2: one). Going up from s = 1, a size
    whose share covers all its pairs is enumerated (Lundberg & Lee's rule, with these shares);
    the other sizes split the rest by their shares, rounded to whole pairs. Chapter 02.
    """
    sizes = list(range(1, m // 2 + 1))
    share = {s: 1 if 2 * s == m else 2 for s in sizes}
    counts = {}
    covered = lambda s: n_pairs * share[s] >= kernel_pairs(m, s) * sum(map(share.get, sizes))
    while sizes and covered(sizes[0]):
        s = sizes.pop(0)
        counts[s] = kernel_pairs(m, s)
        n_pairs -= counts[s]
    if sizes:
        q = np.array([share[s] for s in sizes])
        exact = n_pairs * q / q.sum()
        k = np.floor(exact).astype(int)
        k[np.argsort(k - exact, kind="stable")[: n_pairs - k.sum()]] += 1  # largest remainders
        counts.update(zip(sizes, k.tolist()))
    return counts


def kernel_coalitions(
    m: int, n_samples: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The coalitions z' (2K, M) and their weights (2K,): K pairs, then their complements.

    ``kernel_allocation`` splits the n_samples // 2 pairs (at most all 2^(M-1) - 1) over the
    sizes; each size's pairs are drawn uniformly without replacement. A coalition weighs the
    Shapley kernel pi_x(z') (normalized over all coalitions) times the number of pairs of its
    size over the number drawn: the weights sum to 1, and a coalition and its complement weigh
    the same, which makes the regression exact for every game without interactions of more than
    two players. The empty and the full coalition are left out (they are constraints). Chapter 02.
    """
    check_positive_int("m", m, minimum=2)
    check_positive_int("n_samples", n_samples, minimum=2)
    rows, weights = [], []
    total = sum((m - 1) / (s * (m - s)) for s in range(1, m))  # the kernel's mass, all sizes
    for s, k in kernel_allocation(m, min(n_samples, 2**m - 2) // 2).items():
        if k > 0:
            rows.append(_draw_pairs(m, s, k, rng))
            pi = (m - 1) / (math.comb(m, s) * s * (m - s)) / total
            weights.append(np.full(k, pi * kernel_pairs(m, s) / k))
    z, w = np.concatenate(rows), np.concatenate(weights)
    return torch.from_numpy(np.concatenate([z, ~z])), torch.from_numpy(np.concatenate([w, w]))


def _combinations(m: int, size: int) -> Iterator[np.ndarray]:
    """All bool rows of length m with ``size`` ones (those holding player 0 first)."""
    for members in combinations(range(m), size):
        row = np.zeros(m, dtype=bool)
        row[list(members)] = True
        yield row


def _draw_pairs(m: int, s: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """k different pairs of size s drawn uniformly (all of them if k covers the size), each as its
    member of size s (at s = M/2: the one holding player 0), bool rows (k, M)."""
    if k == kernel_pairs(m, s):
        return np.array(list(_combinations(m, s))[:k])
    drawn: dict[bytes, np.ndarray] = {}
    while len(drawn) < k:
        for z in rng.random((k, m)).argsort(axis=1) < s:  # k random coalitions of size s
            z = ~z if 2 * s == m and not z[0] else z
            drawn.setdefault(z.tobytes(), z)
            if len(drawn) == k:
                break
    return np.array(list(drawn.values()))


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


def kernel_standard_error(
    z: torch.Tensor, w: torch.Tensor, v: torch.Tensor, v_empty, phi: torch.Tensor
) -> torch.Tensor:
    """Standard errors (M,) of ``kernel_weighted_least_squares`` on ``kernel_coalitions``' pairs.

    With A = sum_k w_k z_k z_k^T, the constrained solution is phi = phi_exact + C g, where
    C = A^-1 - A^-1 1 1^T A^-1 / (1^T A^-1 1) and g = sum_k w_k z_k r_k sums the residuals
    r = v - v_empty - z . phi_exact. g adds one term per pair, and each size's pairs are a
    simple random sample: Var g = sum over the drawn sizes (1 - k/N) k Cov(pair terms), and
    Var phi ~ C Var(g) C, with the residuals of phi, times K / (K - M + 1) for the M - 1 fitted
    values (K pairs). Zero when every size is enumerated; NaN where a drawn size has a single
    pair or K < M. Chapter 02.
    """
    z, m, n_pairs = z.double(), z.shape[1], z.shape[0] // 2
    a_inv = torch.linalg.pinv((w[:, None] * z).T @ z)
    a_inv_1 = a_inv.sum(1)
    c = a_inv - torch.outer(a_inv_1, a_inv_1) / a_inv_1.sum()
    g = w[:, None] * z * (v - v_empty - z @ phi)[:, None]
    g = g[:n_pairs] + g[n_pairs:]
    size = z[:n_pairs].sum(1)
    size = torch.minimum(size, m - size).long()
    var_g, drawn = torch.zeros(m, m, dtype=torch.float64), False
    for s, k in zip(*torch.unique(size, return_counts=True)):
        s, k = int(s), int(k)
        if k < kernel_pairs(m, s):  # drawn, not enumerated
            d, drawn = g[size == s] - g[size == s].mean(0), True
            var_g += (1 - k / kernel_pairs(m, s)) * k / (k - 1) * d.T @ d if k > 1 else torch.nan
    if not drawn:
        return torch.zeros(m, dtype=torch.float64)
    dof = n_pairs / (n_pairs - m + 1) if n_pairs >= m else torch.nan
    return (dof * (c @ var_g @ c).diagonal()).clamp(min=0).sqrt()


def tree_shapley(tree, m: int) -> torch.Tensor:
    """Exact Shapley values (M,) of a fitted scikit-learn regression tree on z' in {0, 1}^M.

    The leaf reached with the players P present and N absent is the game u(S) = [P in S, N not
    in S]. In a random order, i in P adds u if it comes after the rest of P and before N, with
    probability (|P|-1)! |N|! / (|P|+|N|)!; j in N removes u if it comes after P and before the
    rest of N, probability |P|! (|N|-1)! / (|P|+|N|)!. The tree sums its leaves' games times
    their values. Chapter 02.
    """
    t, phi = tree.tree_, torch.zeros(m, dtype=torch.float64)
    paths = [(0, (), ())]  # a node, and the players present and absent on the way to it
    while paths:
        node, present, absent = paths.pop()
        if t.children_left[node] < 0:  # a leaf
            p, q, value = len(present), len(absent), float(t.value[node].squeeze())
            for i in present:
                phi[i] += value * math.factorial(p - 1) * math.factorial(q) / math.factorial(p + q)
            for j in absent:
                phi[j] -= value * math.factorial(p) * math.factorial(q - 1) / math.factorial(p + q)
        else:  # left: z'_f <= 0.5, player f absent
            f = int(t.feature[node])
            paths.append((t.children_left[node], present, absent + (f,)))
            paths.append((t.children_right[node], present + (f,), absent))
    return phi


def _halves(z: torch.Tensor, w: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The drawn pairs of each size dealt alternately into two halves, each with the enumerated
    sizes: (rows of z, their weights) twice, each size keeping its kernel mass."""
    m, n_pairs = z.shape[1], z.shape[0] // 2
    size = z[:n_pairs].sum(1)
    size = torch.minimum(size, m - size)
    counts = torch.bincount(size, minlength=m // 2 + 1)
    enumerated = torch.tensor([int(counts[s]) == kernel_pairs(m, s) for s in range(m // 2 + 1)])[size]
    second = torch.zeros(n_pairs, dtype=torch.bool)
    for s in range(1, m // 2 + 1):
        second[(size == s).nonzero()[1::2, 0]] = True
    halves = []
    for keep in (enumerated | ~second, enumerated | second):
        scale = counts / torch.bincount(size[keep], minlength=m // 2 + 1).clamp(min=1)
        rows = torch.cat([keep, keep])
        halves.append((rows, (w * scale[size].repeat(2))[rows]))
    return halves


def kernel_adjusted(
    z: torch.Tensor, w: torch.Tensor, v: torch.Tensor, v_empty, v_full, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel SHAP with a regression tree as control variate: phi (M,) and its standard errors.

    The regression's residuals are often predictable from z'. For each half of the drawn pairs,
    a tree (at least 5 coalitions a leaf, ``seed``) is fitted to the residuals of the regression
    on the other half; the half's regression then estimates only the Shapley values of v minus
    the tree, whose own are exact (``tree_shapley``): the regression adjustment of Witter, Liu &
    Musco (2025), cross-fitted. The halves' estimates are averaged, their standard errors
    combined as independent. Chapter 02.
    """
    from sklearn.tree import DecisionTreeRegressor  # here: it would slow ``import xai_course``

    halves, m = _halves(z, w), z.shape[1]
    if not all(rows.any() for rows, _ in halves):
        raise ValueError(f"z: expected pairs enough for two non-empty halves, got {len(z) // 2}")
    ends = torch.as_tensor([v_empty, v_full], dtype=torch.float64)
    estimates = []
    for (rows, w_rows), (other, w_other) in zip(halves, halves[::-1]):
        phi_other = kernel_weighted_least_squares(z[other], w_other, v[other], v_empty, v_full)
        residual = v[other] - v_empty - z[other].double() @ phi_other
        tree = DecisionTreeRegressor(min_samples_leaf=5, random_state=seed)
        tree.fit(z[other].numpy(), residual.numpy())
        h = lambda coalitions, tree=tree: torch.from_numpy(tree.predict(coalitions.numpy()))
        u, (u_empty, u_full) = v[rows] - h(z[rows]), ends - h(_ends(m))
        phi_u = kernel_weighted_least_squares(z[rows], w_rows, u, u_empty, u_full)
        error = kernel_standard_error(z[rows], w_rows, u, u_empty, phi_u)
        estimates.append((phi_u + tree_shapley(tree, m), error))
    (phi_a, error_a), (phi_b, error_b) = estimates
    return (phi_a + phi_b) / 2, (error_a**2 + error_b**2).sqrt() / 2


def kernel_shapley(
    v: Callable, m: int, n_samples: int = 2048, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel SHAP of a game: the values phi (M,) and their standard errors (M,).

    ``v`` maps coalitions (K, M) bool to their values (K,); it is called with the empty and the
    full coalition, then with the ``n_samples`` drawn by ``kernel_coalitions``. Returns the plain
    regression (``kernel_weighted_least_squares``) or the tree-adjusted one (``kernel_adjusted``),
    whichever reports the smaller standard errors (``kernel_standard_error``). Chapter 02.
    """
    check_positive_int("m", m)
    check_positive_int("n_samples", n_samples, minimum=2)
    rng = np.random.default_rng(check_seed(seed))
    v_empty, v_full = v(_ends(m))
    if m == 1:
        return (v_full - v_empty).reshape(1), torch.zeros(1, dtype=torch.float64)
    z, w = kernel_coalitions(m, n_samples, rng)
    v_z = v(z)
    phi = kernel_weighted_least_squares(z, w, v_z, v_empty, v_full)
    error = kernel_standard_error(z, w, v_z, v_empty, phi)
    if error.isfinite().all():  # else too few pairs to halve
        tree_seed = int(rng.integers(2**31))
        adjusted, adjusted_error = kernel_adjusted(z, w, v_z, v_empty, v_full, tree_seed)
        if adjusted_error.square().sum() < error.square().sum():  # NaN: keep the plain one
            phi, error = adjusted, adjusted_error
    return phi, error


def _kernel_shap(n_samples: int, seed: int, errors: list) -> Callable:
    """``kernel_shapley`` as ``_explain`` calls it; the standard errors go to ``errors``."""

    def shapley(v: Callable, m: int) -> torch.Tensor:
        phi, error = kernel_shapley(v, m, n_samples, seed)
        errors.append(error)
        return phi

    return shapley


@contract(signed=True, needs="outputs", random=True, sums_to="f(x) - f(baseline) (efficiency)")
def kernel(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    *,
    segments=None,
    baseline="mean",
    n_samples: int = 2048,
    seed: int = 0,
    batch_size: int = BATCH_SIZE,
    return_values: bool = False,
    return_error: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """Kernel SHAP (Lundberg & Lee 2017) on the segments, spread onto the pixels.

    Evaluates ``n_samples`` coalitions (in pairs; at most 2^M - 2: then the result equals
    ``exact``) drawn by ``kernel_coalitions``, plus the empty and the full one, and solves the
    weighted least squares with the efficiency constraint (``kernel_weighted_least_squares``), so
    the attribution sums to f_c(x) - f_c(baseline); the same coalitions give the tree-adjusted
    estimate (``kernel_adjusted``), and each image keeps the one with the smaller standard errors
    (``kernel_shapley``). Same ``seed`` (an int or a ``torch.Generator``), same result: bitwise with
    the same threads and ``batch_size``, else within the standard errors (the model's last bits can
    tip the tree or the choice). ``return_values=True`` also returns phi (N, M),
    ``return_error=True`` then their standard errors (N, M; NaN where the budget is too small to
    tell; both zero-padded where an image has fewer segments). Chapter 02.
    """
    check_positive_int("n_samples", n_samples, minimum=2)
    seed = check_seed(seed)
    errors: list[torch.Tensor] = []
    shapley = _kernel_shap(n_samples, seed, errors)
    out = _explain(model, x, target, segments, baseline, batch_size, shapley, return_values)
    if not return_error:
        return out
    standard_error = torch.zeros(len(errors), max(len(e) for e in errors), dtype=torch.float64)
    for n, e in enumerate(errors):
        standard_error[n, : len(e)] = e
    out = out if return_values else (out,)
    return (*out, output_like(standard_error, out[0], x.ndim == 3))


# ----------------------------------------------------------------------------- LIME


def lime_kernel(z: torch.Tensor, kernel_width: float = 0.25) -> torch.Tensor:
    """LIME's proximity pi(z') = exp(-D(z')^2 / (2 sigma^2)) of coalitions z' (K, M) to the image.

    D is the cosine distance between z' and the full coalition 1, 1 - sqrt(|z'| / M) (1 for the
    empty one), sigma is ``kernel_width``; the weight depends only on the size |z'|, like the
    Shapley kernel's, but falls monotonically from the full coalition. Chapter 02.
    """
    distance = 1 - (z.double().sum(1) / z.shape[1]).sqrt()
    return torch.exp(-(distance**2) / (2 * kernel_width**2))


def lime_fit(z: torch.Tensor, w: torch.Tensor, v: torch.Tensor, alpha: float = 1.0) -> tuple[torch.Tensor, float]:
    """The weighted ridge regression of LIME: coefficients beta (M,) and the intercept b0 minimizing

        sum_k w_k (v_k - b0 - z_k . beta)^2 + alpha |beta|^2,

    solved in closed form: centre z and v by their weighted means, then
    beta = (Z^T W Z + alpha I)^-1 Z^T W v and b0 = mean(v) - mean(z) . beta. Chapter 02.
    """
    z, w, v = z.double(), w.double(), v.double()
    z_mean, v_mean = (w @ z) / w.sum(), (w @ v) / w.sum()
    zc, vc = z - z_mean, v - v_mean
    gram = zc.T @ (w[:, None] * zc) + alpha * torch.eye(z.shape[1], dtype=torch.float64)
    beta = torch.linalg.solve(gram, zc.T @ (w * vc))
    return beta, float(v_mean - z_mean @ beta)


def lime_coalitions(m: int, n_samples: int, rng: np.random.Generator) -> torch.Tensor:
    """LIME's samples: the full coalition, then n_samples - 1 with each player present with
    probability 1/2, bool (n_samples, M). Chapter 02."""
    z = rng.random((n_samples, m)) < 0.5
    z[0] = True
    return torch.from_numpy(z)


@contract(signed=True, needs="outputs", random=True, sums_to=None)
def lime(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    *,
    segments=None,
    baseline="mean",
    n_samples: int = 1000,
    kernel_width: float = 0.25,
    alpha: float = 1.0,
    seed: int = 0,
    batch_size: int = BATCH_SIZE,
    return_values: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """LIME (Ribeiro et al. 2016) on the segments, spread onto the pixels like ``kernel``.

    The same game as Kernel SHAP (absent segments take the baseline's pixels), other choices in the
    same framework: ``n_samples`` coalitions from ``lime_coalitions``, weighted by ``lime_kernel``,
    and a ridge regression with an intercept (``lime_fit``) instead of the Shapley kernel and the
    efficiency constraint: so the values need not sum to f_c(x) - f_c(baseline). The defaults are
    those of the ``lime`` package's image explainer, which fits the same regression. Same ``seed``,
    same result. ``return_values=True`` also returns the coefficients (N, M). Chapter 02.
    """
    check_positive_int("n_samples", n_samples, minimum=2)
    check_number("kernel_width", kernel_width, strict=True)
    check_number("alpha", alpha)
    seed = check_seed(seed)

    def coefficients(v: Callable, m: int) -> torch.Tensor:
        z = lime_coalitions(m, n_samples, np.random.default_rng(seed))
        return lime_fit(z, lime_kernel(z, kernel_width), v(z), alpha)[0]

    return _explain(model, x, target, segments, baseline, batch_size, coefficients, return_values)


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
def deep(
    model: nn.Module, x: torch.Tensor, target: Target = None, *, background: torch.Tensor, batch_size: int | None = None
) -> torch.Tensor:
    """Deep SHAP: DeepLIFT rescale attributions against each background row, averaged.

    phi = mean_b m(x, b) * (x - b), where the multipliers m come from a backward pass through
    [x repeated; background rows] in which every ReLU-like module and max-pool passes delta y / delta x
    of the paired halves instead of its gradient (per call, so a module reused several times and
    in-place ReLUs are handled). Sums to f_c(x) - mean_b f_c(b). Unsupported layers raise a
    ``NotImplementedError``. ``batch_size``: inputs per pass, half of them background rows (default
    ``core.samples_per_pass``); changes the result only by rounding. Chapter 02.
    """
    x, unbatched = check_input(model, x)
    background, _ = check_input(model, background, "background")
    if background.shape[1:] != x.shape[1:]:
        raise ValueError(f"background: expected rows of shape {tuple(x.shape[1:])}, got {describe(background)}")
    nonlinear = [m for _, m, k in check_layers(model, "Deep SHAP") if k in ("relu", "activation", "maxpool")]
    background, rows = background.to(x), max(1, samples_per_pass(x, batch_size) // 2)
    with explaining(model, x, target) as (target, _):
        for module in model.modules():
            if hasattr(module, "inplace"):
                module.inplace = False  # the rule reads the layer's input after the layer
        with modified(model, dict.fromkeys(nonlinear, rescale_rule)):
            phi = torch.stack([_deep_one(model, x_n, t, background, rows) for x_n, t in zip(x, target.tolist())])
    return output_like(phi, x, unbatched)


def _deep_one(model: nn.Module, x_n: torch.Tensor, t: int, background: torch.Tensor, rows: int) -> torch.Tensor:
    """Deep SHAP of one image against all background rows, ``rows`` of them per forward and backward pass."""
    total = torch.zeros_like(x_n)
    for part in batch_slices(len(background), rows):
        b, k = background[part], part.stop - part.start
        with torch.enable_grad():
            pairs = torch.cat([x_n.expand_as(b), b]).requires_grad_(True)
            logits = model(pairs)[:, t]
            (m,) = torch.autograd.grad(logits[:k].sum(), pairs)
        contributions = m[:k] * (x_n - b)
        _check_summation(contributions, (logits[:k] - logits[k:]).detach())
        total += contributions.sum(0)
    return total / len(background)


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
