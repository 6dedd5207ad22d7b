"""Gradient methods: the plain gradient (saliency), gradient x input, Integrated Gradients and SmoothGrad.

Saliency (Simonyan, Vedaldi & Zisserman 2014) is the derivative of the target's
logit S_c with respect to each input value; gradient x input multiplies it by the
input, a first-order Taylor term that sums to S_c(x) for a bias-free ReLU network.
Both are the baselines every chapter compares with (chapter 00).

Integrated Gradients (Sundararajan, Taly & Yan 2017) integrate the gradient along the straight path from a
baseline x' to x, IG_i = (x_i - x'_i) int_0^1 dS_c/dx_i (x' + alpha (x - x')) dalpha, which sums to
S_c(x) - S_c(x') (completeness); the integral is a quadrature over ``steps`` points (``quadrature``).
SmoothGrad (Smilkov, Thorat, Kim, Viegas & Wattenberg 2017) averages the gradient over noisy copies x + eps,
eps ~ N(0, sigma^2); its square and its variance (VarGrad, Adebayo et al. 2018) are variants. Chapter 10.
"""

from __future__ import annotations

import numpy as np
import torch

from .core import (
    Baseline,
    Target,
    baseline_like,
    batch_slices,
    check_differentiable,
    check_input,
    check_logits,
    check_number,
    check_positive_int,
    check_seed,
    contract,
    describe,
    model_guard,
    output_like,
    predict,
    resolve_target,
    samples_per_pass,
    target_gradient,
)


@contract(signed=lambda abs: not abs, needs="gradients", random=False)  # |gradient| unsigned, the gradient signed
def saliency(model, x, target: Target = None, *, abs: bool = True) -> torch.Tensor:
    """Gradient of the target logit with respect to the input.

    With ``abs=True`` (Simonyan et al.) the magnitude |dS_c/dx|; with ``abs=False``
    the signed gradient. Same shape as ``x``. Chapter 00.
    """
    x, grad, unbatched = target_gradient(model, x, target)
    return output_like(grad.abs() if abs else grad, x, unbatched)


@contract(signed=True, needs="gradients", random=False)
def gradient_x_input(model, x, target: Target = None) -> torch.Tensor:
    """Gradient of the target logit times the input, x * dS_c/dx.

    Same shape as ``x``. Chapter 00.
    """
    x, grad, unbatched = target_gradient(model, x, target)
    return output_like(grad * x, x, unbatched)


def _gradients(model, inputs: torch.Tensor, target, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """dS_c/dx at S versions (S, N, ...) of the N inputs (points on a path, noisy copies), ``batch_size`` inputs
    per forward and backward pass, inside ``model_guard``, and the target (N,): ``target`` resolved (None, the
    class predicted for x, by the caller from x's logits) or as given, checked against the classes of the first
    pass (``resolve_target`` reads only the shape of the logits then), so that x itself need not be run."""
    n, flat, grads = inputs.shape[1], inputs.flatten(0, 1), []
    for b in batch_slices(len(flat), batch_size):
        leaf = flat[b].detach().requires_grad_(True)
        with torch.enable_grad():
            logits = check_logits(model(leaf.clone()))  # a copy: a model may write into its input
            target = resolve_target(target, logits[:1].expand(n, *logits.shape[1:]))  # the classes only
            check_differentiable(logits)
            i = torch.arange(b.start, b.stop, device=flat.device) % n  # the sample of each input
            (grad,) = torch.autograd.grad(logits.gather(1, target[i, None]).sum(), leaf)
        grads.append(grad)
    return torch.cat(grads).view_as(inputs), target


# ----------------------------------------------------------------------------- Integrated Gradients

QUADRATURES = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")


def quadrature(method: str, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes alpha_k in [0, 1] and weights w_k (summing to 1) of a rule for int_0^1 f, in float64.

    With m = ``steps``: ``"riemann_left"``, ``"riemann_right"``, ``"riemann_middle"``:
    alpha_k = k / m, (k + 1) / m, (k + 1/2) / m and w_k = 1 / m (error O(1/m), O(1/m), O(1/m^2)
    for a smooth f); ``"riemann_trapezoid"``: alpha_k = k / (m - 1), w_k = 1 / (m - 1) halved at
    both ends (O(1/m^2), m >= 2); ``"gausslegendre"``: the Gauss-Legendre nodes and weights moved
    from [-1, 1] to [0, 1] (exact for polynomials of degree up to 2m - 1). Captum's names; its
    trapezoid weights sum to (m - 1) / m, not 1 (Captum 0.9). Chapter 10.
    """
    check_positive_int("steps", steps)
    k = torch.arange(steps, dtype=torch.float64)
    uniform = torch.full((steps,), 1 / steps, dtype=torch.float64)
    if method == "riemann_left":
        return k / steps, uniform
    if method == "riemann_right":
        return (k + 1) / steps, uniform
    if method == "riemann_middle":
        return (k + 0.5) / steps, uniform
    if method == "riemann_trapezoid":
        check_positive_int("steps", steps, minimum=2)
        weights = torch.full((steps,), 1 / (steps - 1), dtype=torch.float64)
        weights[[0, -1]] /= 2
        return k / (steps - 1), weights
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return torch.from_numpy((nodes + 1) / 2), torch.from_numpy(weights / 2)
    expected = ", ".join(map(repr, QUADRATURES))
    raise ValueError(f"method: expected one of {expected}, got {describe(method)}")


@contract(signed=True, needs="gradients", random=False, sums_to="f_c(x) - f_c(baseline)")
def integrated_gradients(
    model,
    x,
    target: Target = None,
    *,
    baseline: Baseline = 0.0,
    steps: int = 50,
    method: str = "riemann_trapezoid",
    batch_size: int | None = None,
    return_delta: bool = False,
):
    """Integrated Gradients (Sundararajan et al. 2017), the gradient integrated from x' to x:
    IG = (x - x') sum_k w_k dS_c/dx (x' + alpha_k (x - x')).

    Parameters
    ----------
    model, x, target : the calling contract.
    baseline : the start x' of the path (``core.baseline_like``): a float (default 0.0, black
        for the course images), ``"blur"``, ``"mean"`` (each image's mean colour) or a tensor
        broadcastable to x: the mean of a training set, or uniform noise
        ``core.baseline_like(x, "uniform", seed=...)``.
    steps, method : the number of points on the path and the rule (``quadrature``).
    batch_size : inputs on the path per pass (default ``core.samples_per_pass``: 64 course images, 5
        photos at 224 x 224): batch_size // N whole steps of all N inputs (one step, split into
        passes of batch_size, where N > batch_size); changes the result only by rounding.
    return_delta : also return the completeness delta (N,), sum IG - (S_c(x) - S_c(x')).

    Returns
    -------
    The attribution, shaped like x (and the delta). Equal to Captum's ``IntegratedGradients``
    with the same baseline, ``n_steps`` and method, except ``"riemann_trapezoid"``, where
    Captum's is (m - 1) / m times this one. The points on the path are
    ``torch.lerp(x', x, alpha_k)``, exactly x at alpha = 1. In float32, a last-bit difference in
    a point (Captum's nodes come from a float32 ``linspace``, its points from x' + alpha (x - x'))
    or in a convolution (another batch size) can move a ReLU network's gradient across a kink:
    on the course model that changed the map by up to 3 % of its largest value. Chapter 10.
    """
    x, unbatched = check_input(model, x)
    if not isinstance(return_delta, bool):
        raise TypeError(f"return_delta: expected True or False, got {describe(return_delta)}")
    batch_size = samples_per_pass(x, batch_size)
    alphas, weights = (w.to(x) for w in quadrature(method, steps))
    start = baseline_like(x, baseline)
    total, shape = torch.zeros_like(x), (-1, *[1] * x.ndim)  # shape: one alpha per step
    with model_guard(model):
        # x's logits, only for the predicted class or the delta
        logits = predict(model, x, batch_size) if target is None or return_delta else None
        target = target if logits is None else resolve_target(target, logits)
        for k in batch_slices(steps, max(1, batch_size // len(x))):  # whole steps of all N inputs
            points = torch.lerp(start, x, alphas[k].view(shape))  # x' at 0, x at 1 exactly
            grads, target = _gradients(model, points, target, batch_size)
            total += torch.tensordot(weights[k], grads, dims=1)
        attribution = total * (x - start)
        if return_delta:
            promise = (logits - predict(model, start, batch_size)).gather(1, target[:, None])
            delta = attribution.flatten(1).sum(1) - promise[:, 0]
    attribution = output_like(attribution, x, unbatched)
    return (attribution, output_like(delta, delta, unbatched)) if return_delta else attribution


# ----------------------------------------------------------------------------- SmoothGrad

SMOOTHGRAD_KINDS = ("smoothgrad", "squared", "vargrad")


@contract(signed=lambda kind: kind == "smoothgrad", needs="gradients", random=True)
def smoothgrad(
    model,
    x,
    target: Target = None,
    *,
    n: int = 50,
    sigma: float = 0.15,
    seed=0,
    kind: str = "smoothgrad",
    batch_size: int | None = None,
) -> torch.Tensor:
    """SmoothGrad (Smilkov et al. 2017): the gradient of S_c averaged over ``n`` noisy copies of x.

    Parameters
    ----------
    model, x, target : the calling contract.
    n : number of noisy copies x + eps_j of each input.
    sigma : the noise level, relative to each input's range as the paper defines it:
        eps ~ N(0, s^2) with s = sigma (max x - min x), the largest minus the smallest value of
        that input (0.15: the paper finds 10 to 20 % best).
    seed : int or ``torch.Generator``. Draw j (j = 0, ..., n - 1) is ``torch.randn(x.shape)``
        from one CPU generator seeded with ``seed``, times s: what Captum's ``NoiseTunnel`` draws
        from torch's global generator after ``torch.manual_seed(seed)``, with
        ``nt_samples_batch_size=1`` and ``stdevs=s``.
    kind : ``"smoothgrad"`` the mean gradient (signed), ``"squared"`` the mean of its square
        (SmoothGrad-squared), ``"vargrad"`` its variance over the copies (Adebayo et al. 2018;
        divided by n, as Captum's).
    batch_size : noisy inputs per pass (default ``core.samples_per_pass``); the draws do not depend
        on it, the result only by rounding (``integrated_gradients`` says how far that can go on a ReLU network).

    Returns
    -------
    The map, shaped like x. Chapter 10.
    """
    x, unbatched = check_input(model, x)
    check_positive_int("n", n)
    batch_size = samples_per_pass(x, batch_size)
    sigma, generator = check_number("sigma", sigma), torch.Generator().manual_seed(check_seed(seed))
    if not isinstance(kind, str) or kind not in SMOOTHGRAD_KINDS:
        expected = ", ".join(map(repr, SMOOTHGRAD_KINDS))
        raise ValueError(f"kind: expected one of {expected}, got {describe(kind)}")
    low, high = torch.aminmax(x.flatten(1), dim=1)
    s = (sigma * (high - low)).view(-1, *[1] * (x.ndim - 1))
    count, mean, m2 = 0, torch.zeros_like(x), torch.zeros_like(x)  # m2: sum of squared deviations
    with model_guard(model):
        target = resolve_target(target, predict(model, x, batch_size)) if target is None else target
        for draws in batch_slices(n, max(1, batch_size // len(x))):  # whole draws of all N inputs
            eps = torch.stack([torch.randn(x.shape, generator=generator, dtype=x.dtype)
                               for _ in range(draws.stop - draws.start)])  # fmt: skip
            g, target = _gradients(model, x + s * eps.to(x.device), target, batch_size)
            # merge the draws' mean and m2 into the running ones (Chan, Golub & LeVeque 1979)
            g_mean = g.mean(0)
            difference = g_mean - mean
            if kind != "smoothgrad":  # m2 only where the result needs it
                spread = ((g - g_mean) ** 2).sum(0)
                m2 += spread + difference**2 * count * len(g) / (count + len(g))
            count += len(g)
            mean += difference * len(g) / count
    result = {"smoothgrad": mean, "squared": m2 / n + mean**2, "vargrad": m2 / n}[kind]
    return output_like(result, x, unbatched)
