"""Concept activation vectors and TCAV (Kim et al. 2018): does a class's logit rise along a concept inside the net?

A concept is given by examples (images carrying the Clever Hans tag, images of one shape). At a layer l, a
linear classifier separates the concept's activations f_l(x) from those of random inputs; the unit normal
v_C of its boundary, pointing towards the concept, is the concept activation vector (CAV). The conceptual
sensitivity of class k at an input x is the directional derivative of the class's logit h_k along v_C,

    S_C,k(x) = grad h_k(f_l(x)) . v_C,

and the TCAV score of class k is the share of the class's inputs with S_C,k(x) > 0. A score means something
only against chance: CAVs learned against several random sets give several scores, CAVs of random sets
learned against other random sets give scores of no concept at all, and a two-sided t-test between the two
decides whether the concept matters. Introduced in chapter 10.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import special
from torch import nn

from . import layers
from .core import Target, check_input, check_number, check_seed, contract, describe


@dataclass(frozen=True)
class CAV:
    """A concept activation vector: ``vector`` (D,), the unit normal of the boundary pointing to the concept,
    at ``layer`` (the activations flattened), and the linear classifier's ``accuracy`` on held-out examples.
    Chapter 10."""

    vector: torch.Tensor
    layer: str
    accuracy: float


def _examples(model, examples, name: str) -> torch.Tensor:
    """``examples`` checked like x: a batch of at least 2 inputs the model accepts."""
    if not isinstance(examples, torch.Tensor) or examples.ndim < 2:
        raise TypeError(f"{name}: expected a batch of inputs like x, got {describe(examples)}")
    examples, _ = check_input(model, examples)
    if examples.shape[0] < 2:
        raise ValueError(f"{name}: expected at least 2 examples, got {examples.shape[0]}")
    return examples


def _logistic_regression(z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """(w, b) minimizing |w|^2 / 2 + sum_i [log(1 + e^t_i) - y_i t_i], t = z w + b, for labels y in {0, 1}:
    logistic regression with an L2 penalty on w (scikit-learn's default, C = 1), the intercept b unpenalized.

    The loss's gradient in w is a combination of the rows of z, so the optimum's w lies in their span
    (the representer theorem). The fit runs in the coordinates u of that span (z^T = Q R, w = Q u, z w = R^T u:
    min(N, D) unknowns) by Newton's method (iteratively reweighted least squares) with step halving (Boyd &
    Vandenberghe 2004, section 9.5): about ten small linear solves, where a gradient method in all D
    dimensions took hundreds of steps. In NumPy, whose BLAS keeps such small problems on one thread (PyTorch's
    threads stall on them when the CPU is busy). Chapter 10.
    """
    q, r = np.linalg.qr(z.T)
    phi = np.hstack([r.T, np.ones((len(z), 1))])  # (N, min(N, D) + 1): the coordinates u, then b
    penalty = np.r_[np.ones(r.shape[0]), 0.0]
    objective = lambda theta: np.logaddexp(0, (1 - 2 * y) * (phi @ theta)).sum() + penalty @ theta**2 / 2
    theta = np.zeros(phi.shape[1])
    for _ in range(100):  # about 10 steps on the chapter's activations
        p = special.expit(phi @ theta)
        gradient = phi.T @ (p - y) + penalty * theta
        hessian = phi.T @ (phi * (p * (1 - p))[:, None]) + np.diag(penalty)
        step = np.linalg.solve(hessian, gradient)
        decrement = gradient @ step  # twice the decrease the quadratic model predicts
        if decrement <= 1e-10 * objective(theta):  # close enough for Newton's quadratic convergence: a last step
            theta = theta - step
            return q @ theta[:-1], float(theta[-1])
        t = 1.0
        while objective(theta - t * step) > objective(theta) - t * decrement / 4 and t > 1e-10:
            t /= 2
        theta = theta - t * step
    raise RuntimeError("the logistic regression of the CAV did not converge in 100 Newton steps")


def _fit(a_concept: torch.Tensor, a_random: torch.Tensor, layer: str, seed: int) -> CAV:
    """The CAV separating two sets of activations (flattened): logistic regression on a random half of each."""
    a = torch.cat([a_concept, a_random]).flatten(1).double().numpy()
    y = np.r_[np.ones(len(a_concept)), np.zeros(len(a_random))]
    rng = np.random.default_rng(seed)
    train = np.zeros(len(y), dtype=bool)
    for label in (0, 1):
        members = rng.permutation(np.flatnonzero(y == label))
        train[members[: (len(members) + 1) // 2]] = True
    w, b = _logistic_regression(a[train], y[train])
    if not w.any():
        raise ValueError(f"layer: the concept's and the random examples' activations at {layer!r} are the same")
    accuracy = np.mean((a[~train] @ w + b > 0) == y[~train])
    return CAV(torch.from_numpy(w / np.linalg.norm(w)).to(a_concept.dtype), layer, float(accuracy))


@contract
def cav(model: nn.Module, x: torch.Tensor, random: torch.Tensor, *, layer: str, seed: int = 0) -> CAV:
    """The CAV of the concept whose examples are ``x``, against the ``random`` examples, at ``layer``.

    Kim et al. allow any linear classifier; this one is a logistic regression with an L2 penalty (C = 1) on
    the flattened activations of a random half of each set; the other half measures the accuracy. Same
    ``seed``, same CAV. Chapter 10.
    """
    concept, random = _examples(model, x, "x"), _examples(model, random, "random")
    a_concept, a_random = layers.features(model, concept, layer), layers.features(model, random, layer)
    return _fit(a_concept, a_random, layer, check_seed(seed))


@contract
def sensitivities(model: nn.Module, x: torch.Tensor, target: Target, *, direction: CAV) -> torch.Tensor:
    """S_C,k(x) (N,): the derivative of the target's logit along the CAV ``direction`` at its layer.

    Chapter 10."""
    if not isinstance(direction, CAV):
        raise TypeError(f"direction: expected a CAV (concepts.cav), got {describe(direction)}")
    x, unbatched = check_input(model, x)
    _, grad, _ = layers.gradients(model, x, direction.layer, target)
    if grad[0].numel() != direction.vector.numel():
        raise ValueError(
            f"direction: expected a CAV of the layer's {grad[0].numel()} activations, got one of "
            f"{direction.vector.numel()}"
        )
    s = grad.flatten(1) @ direction.vector.to(grad)
    return s[0] if unbatched else s


def welch_p_value(a: torch.Tensor, b: torch.Tensor) -> float:
    """The two-sided p-value of Welch's t-test that samples ``a`` and ``b`` have the same mean:
    t = (mean a - mean b) / sqrt(var a / n_a + var b / n_b), with the Welch-Satterthwaite degrees of
    freedom. Two constant samples give 1 if they are equal, else 0. Chapter 10."""
    from scipy import stats

    a, b = a.double(), b.double()
    va, vb = a.var() / len(a), b.var() / len(b)
    if va + vb == 0:
        return float(a.mean() == b.mean())
    t = (a.mean() - b.mean()) / (va + vb).sqrt()
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return float(2 * stats.t.sf(abs(float(t)), float(dof)))


@dataclass(frozen=True)
class TCAVResult:
    """TCAV of one concept and class: ``scores`` (R,), the share of the class's inputs with a positive
    sensitivity for each CAV learned against one of R random sets; ``null`` (R,), the same for CAVs of random
    sets against other random sets; ``accuracies`` (R,) of the concept's CAVs; the two-sided t-test's
    ``p_value``, and ``significant`` (p below the level asked). Chapter 10."""

    scores: torch.Tensor
    null: torch.Tensor
    accuracies: torch.Tensor
    p_value: float
    significant: bool


@contract
def tcav(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    *,
    concept: torch.Tensor,
    randoms: list,
    layer: str,
    alpha: float = 0.05,
    seed: int = 0,
) -> TCAVResult:
    """TCAV (Kim et al. 2018) of the ``concept`` (its examples) for the ``target`` class on its inputs ``x``.

    ``randoms`` is a list of R >= 2 sets of random examples. Score r uses the CAV of the concept against
    ``randoms[r]``; null score r the CAV of ``randoms[r]`` against ``randoms[r + 1]`` (cyclically). The
    concept is significant when the two-sided t-test (unequal variances) of the scores against the null scores
    gives p < ``alpha``. Chapter 10.
    """
    if not isinstance(randoms, (list, tuple)) or len(randoms) < 2:
        raise TypeError(f"randoms: expected a list of at least 2 sets of random examples, got {describe(randoms)}")
    check_number("alpha", alpha, strict=True)
    seed = check_seed(seed)
    _, grad, _ = layers.gradients(model, x, layer, target)  # S = grad . v for every CAV v below
    grad = grad.flatten(1)
    sets = [_examples(model, concept, "concept")]
    sets += [_examples(model, r, f"randoms[{i}]") for i, r in enumerate(randoms)]
    a_concept, *a_randoms = [layers.features(model, examples, layer) for examples in sets]
    concept_cavs = [_fit(a_concept, a, layer, seed + i) for i, a in enumerate(a_randoms)]
    pairs = zip(a_randoms, a_randoms[1:] + a_randoms[:1])
    null_cavs = [_fit(a, b, layer, seed + i) for i, (a, b) in enumerate(pairs)]
    positive = lambda cavs: (grad @ torch.stack([v.vector for v in cavs]).T.to(grad) > 0).double().mean(0)
    scores, null = positive(concept_cavs), positive(null_cavs)
    p = welch_p_value(scores, null)
    accuracies = torch.tensor([v.accuracy for v in concept_cavs], dtype=torch.float64)
    return TCAVResult(scores, null, accuracies, p, p < alpha)
