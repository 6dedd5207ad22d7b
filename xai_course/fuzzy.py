"""Fuzzy logic: membership functions, granules, fuzzy rules, fuzzy graphs and a fuzzy rule head for a CNN.

- **Fuzzy sets and granules** (Zadeh 1996, "Fuzzy logic = computing with words"): a fuzzy set has a
  membership function mu(x) in [0, 1], triangular, trapezoidal or Gaussian. A feature is described by
  linguistic granules (LOW, MEDIUM, HIGH), overlapping fuzzy sets named by words.
- **Fuzzy rules** (Wang & Mendel 1992; class consequents and weights as Ishibuchi, Nozaki & Tanaka 1992):
  rules over granules are extracted from rows labelled by a black box and fire with the product of their
  memberships; the rule with the largest firing strength times weight gives the outcome.
- **Fuzzy graph** (Zadeh 1997; the survey's figure 7): a function is approximated by its fuzzy graph
  f* = union_i A_i x B_i, the rules "IF x is A_i THEN y is B_i".
- **A fuzzy head for a CNN**: ``FuzzyHead``, an ANFIS layer (Jang 1993) with Gaussian memberships and rule
  firing computed in log space, learns the CNN's classes from the pooled concept activations of
  ``rules.concept_activations`` (``fit_fuzzy_head``) and replaces the CNN's classifier (``FuzzyCNN``).

Tables and black boxes are those of ``rules``: a ``data.loans`` table or an array of rows with its schema,
and a function rows -> labels or a ``torch.nn.Module``. Introduced in chapter 05.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .core import check_model, check_number, check_positive_int, check_seed, describe
from .layers import output, submodule
from .rules import Schema, as_floats, check_pooled, global_max_pool, labels_of, read_table, short_number

WORDS = {3: ("LOW", "MEDIUM", "HIGH"), 5: ("VERY LOW", "LOW", "MEDIUM", "HIGH", "VERY HIGH")}

# ----------------------------------------------------------------------------- fuzzy sets and granules


def _rise(x: np.ndarray, a: float, b: float) -> np.ndarray:
    """0 up to a, 1 from b on, linear in between (a step at a when a == b)."""
    if b <= a:
        return (x >= a).astype(float)
    return np.clip((x - a) / (b - a), 0.0, 1.0)


def trapezoidal(x, a: float, b: float, c: float, d: float) -> np.ndarray:
    """Trapezoidal membership: 0 outside [a, d], 1 on [b, c], linear on the flanks.

    ``a = b = -inf`` (or ``c = d = inf``) gives an open shoulder: 1 all the way to the left (right). Chapter 05.
    """
    if not a <= b <= c <= d:
        raise ValueError(f"a, b, c, d: expected a <= b <= c <= d, got {(a, b, c, d)}")
    x = np.asarray(x, dtype=float)
    return np.minimum(_rise(x, a, b), _rise(-x, -d, -c))


def triangular(x, a: float, b: float, c: float) -> np.ndarray:
    """Triangular membership: 0 outside [a, c], 1 at b, linear in between. Chapter 05."""
    return trapezoidal(x, a, b, b, c)


def gaussian(x, c: float, sigma: float) -> np.ndarray:
    """Gaussian membership exp(-(x - c)^2 / (2 sigma^2)), ANFIS's layer 1 (Jang 1993). Chapter 05."""
    if not sigma > 0:
        raise ValueError(f"sigma: expected a positive width, got {sigma!r}")
    return np.exp(-((np.asarray(x, dtype=float) - c) ** 2) / (2 * sigma**2))


def _default_words(k: int) -> tuple[str, ...]:
    return WORDS.get(k, tuple(f"G{i + 1}" for i in range(k)))


@dataclass(frozen=True)
class Granules:
    """Linguistic granules of one feature: overlapping fuzzy sets, one per word, peaks at ``centres``.

    The first word is a left shoulder (1 up to the first centre), the last a right shoulder, the others
    triangles from the previous centre to the next: the memberships of a value add up to 1 (a Ruspini
    partition), so a value is, say, 0.3 MEDIUM and 0.7 HIGH. Chapter 05.
    """

    feature: str
    centres: tuple[float, ...]
    words: tuple[str, ...]

    def memberships(self, values) -> np.ndarray:
        """mu_word(value), an array (N, number of words)."""
        c, values = self.centres, np.asarray(values, dtype=float).reshape(-1)
        if len(c) == 1:
            return np.ones((values.size, 1))
        columns = [trapezoidal(values, -np.inf, -np.inf, c[0], c[1])]
        columns += [triangular(values, c[k - 1], c[k], c[k + 1]) for k in range(1, len(c) - 1)]
        columns.append(trapezoidal(values, c[-2], c[-1], np.inf, np.inf))
        return np.stack(columns, 1)

    def word(self, value: float) -> str:
        """The word that fits ``value`` best."""
        return self.words[int(self.memberships([value])[0].argmax())]


def granules(values, feature: str = "x", *, words: Sequence[str] | int = 3, centres=None) -> Granules:
    """Granules of a feature from its ``values``: one word per centre, centres at evenly spaced quantiles
    (5 % to 95 %) unless given. ``words`` is a list of words or their number (3: LOW, MEDIUM, HIGH;
    5: VERY LOW ... VERY HIGH). When the quantiles coincide (many equal values) the centres are spread
    evenly between the smallest and largest value instead, and around a constant value v over
    [v - 1/2, v + 1/2]. Chapter 05."""
    if isinstance(words, (str, bool)):
        raise TypeError(f"words: expected a number of words or a list of words, got {describe(words)}")
    words = _default_words(words) if isinstance(words, int) else tuple(words)
    values = as_floats(values, "values", "an array of numbers").reshape(-1)
    if not words or values.size == 0 or not np.isfinite(values).all():
        raise ValueError(
            f"values, words: expected finite values and at least one word, got {describe(values)}, {words}"
        )
    if centres is None:
        centres = np.quantile(values, np.linspace(0.05, 0.95, len(words))) if len(words) > 1 else [np.median(values)]
        if np.any(np.diff(centres) <= 0):
            low, high = values.min(), values.max()
            spread = 0.0 if low < high else 0.5  # a constant feature: words around its value
            centres = np.linspace(low - spread, high + spread, len(words))
    centres = tuple(float(c) for c in centres)
    if len(centres) != len(words) or np.any(np.diff(centres) <= 0):
        raise ValueError(f"centres: expected {len(words)} increasing values (one per word), got {centres}")
    return Granules(feature, centres, words)


def _crisp(feature: str, codes: tuple[str, ...]) -> Granules:
    """A categorical feature as granules: membership 1 for its own code, 0 for the others."""
    return _CrispGranules(feature, tuple(float(k) for k in range(len(codes))), codes)


class _CrispGranules(Granules):
    def memberships(self, values) -> np.ndarray:
        values = np.asarray(values, dtype=float).reshape(-1)
        return (values[:, None] == np.arange(len(self.words))[None]).astype(float)


# ----------------------------------------------------------------------------- fuzzy rules


@dataclass(frozen=True)
class FuzzyRule:
    """IF feature_1 is word_1 AND ... THEN outcome, with a weight (certainty) in [0, 1]. Chapter 05."""

    columns: tuple[int, ...]
    words: tuple[int, ...]  # the index of each column's word
    outcome: int
    weight: float
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass
class FuzzyRules:
    """A fuzzy rule base over some columns of a table; classifies by the single winning rule. Chapter 05.

    Attributes
    ----------
    rules : the rules, heaviest first
    variables : the granules of each used column, ``variables[column]``
    classes : outcome names
    fidelity : share of the fitting rows on which the winning rule's outcome is the black box's
    """

    rules: list[FuzzyRule]
    variables: dict[int, Granules]
    classes: tuple[str, ...]
    fidelity: float = 0.0

    def firing(self, rows) -> np.ndarray:
        """Firing strengths (N, R): the product of each rule's memberships (product t-norm)."""
        rows = np.atleast_2d(np.asarray(rows, dtype=float))
        mu = {j: g.memberships(rows[:, j]) for j, g in self.variables.items()}
        return np.stack([np.prod([mu[j][:, w] for j, w in zip(r.columns, r.words)], 0) for r in self.rules], 1)

    def predict(self, rows) -> np.ndarray:
        """The outcome of the rule with the largest firing strength x weight, per row (the heaviest rule's
        outcome for a row that fires no rule)."""
        score = self.firing(rows) * np.array([r.weight for r in self.rules])
        return np.array([r.outcome for r in self.rules])[score.argmax(1)]

    def explain(self, x, top: int = 3) -> list[tuple[FuzzyRule, float]]:
        """The ``top`` rules that fire most for the row ``x``, with their firing strengths."""
        strength = self.firing(x)
        if strength.shape[0] != 1:
            raise ValueError(f"x: expected one row, got {describe(x)}")
        strength = strength[0]
        return [(self.rules[i], float(strength[i])) for i in np.argsort(-strength, kind="stable")[:top]]


def _rule_text(columns, words, outcome, variables, schema: Schema, weight: float) -> str:
    premise = " AND ".join(f"{schema.names[j]} is {variables[j].words[w]}" for j, w in zip(columns, words))
    return f"IF {premise} THEN {schema.outcome(outcome)} (weight {weight:.2f})"


def fuzzy_rules(
    predict,
    data,
    *,
    features: Sequence[str] | None = None,
    words: int = 3,
    feature_names=None,
    categorical=None,
    classes=None,
) -> FuzzyRules:
    """Fuzzy rules that mimic the black box on ``data``, over the granules of ``features``.

    Wang & Mendel (1992): every row proposes the rule made of each feature's best-fitting word. Each
    distinct premise gets the outcome whose rows fire it most, beta_k = sum of the firing strengths of
    the rows that the black box gives outcome k, and the weight (beta_max - mean of the other betas) /
    sum beta (Ishibuchi, Nozaki & Tanaka 1992); rules of weight 0 are dropped. Numbers get ``words``
    granules from their quantiles (``granules``), categories one crisp word per code. Chapter 05.
    """
    rows, schema = read_table(data, feature_names, categorical, classes)
    names = list(schema.names) if features is None else list(features)
    if not names or len(set(names)) != len(names) or set(names) - set(schema.names):
        raise ValueError(f"features: expected distinct names from {schema.names}, got {features!r}")
    columns = tuple(schema.names.index(name) for name in names)
    variables = {
        j: _crisp(schema.names[j], schema.categorical[j])
        if j in schema.categorical
        else granules(rows[:, j], schema.names[j], words=words)
        for j in columns
    }
    labels = labels_of(predict, rows)
    n_classes = max(len(schema.classes), int(labels.max()) + 1)
    mu = {j: variables[j].memberships(rows[:, j]) for j in columns}
    premises = np.unique(np.stack([mu[j].argmax(1) for j in columns], 1), axis=0)
    firing = np.stack([np.prod([mu[j][:, w] for j, w in zip(columns, p)], 0) for p in premises], 1)
    beta = np.stack([firing[labels == k].sum(0) for k in range(n_classes)], 1)  # (R, K)
    best = beta.argmax(1)
    others = (beta.sum(1) - beta.max(1)) / max(n_classes - 1, 1)
    weight = (beta.max(1) - others) / np.where(beta.sum(1) > 0, beta.sum(1), 1.0)
    rules = [
        FuzzyRule(columns, tuple(map(int, p)), int(k), float(c), _rule_text(columns, p, int(k), variables, schema, c))
        for p, k, c in zip(premises, best, weight)
        if c > 0
    ]
    if not rules:
        raise ValueError(
            "features, words: expected granules that separate the black box's outcomes, got rules that all have "
            "weight 0 (every premise fires as much for one outcome as for the others)"
        )
    rules.sort(key=lambda r: -r.weight)
    base = FuzzyRules(rules, variables, schema.classes)
    base.fidelity = float(np.mean(base.predict(rows) == labels))
    return base


# ----------------------------------------------------------------------------- the fuzzy graph


@dataclass
class FuzzyGraph:
    """Zadeh's fuzzy graph f* = union_i A_i x B_i of a function of one variable (survey figure 7). Chapter 05.

    Attributes
    ----------
    x : the input granules A_i (triangles, Ruspini partition)
    heights : f at the peaks of the A_i, the centres of the output granules B_i
    patches : boxes ((x_lo, x_hi), (y_lo, y_hi)), per granule: its 0.5-cut times the range of f over it
    rules : "IF x is A_i THEN y is about f(c_i)"
    """

    x: Granules
    heights: np.ndarray
    patches: list[tuple[tuple[float, float], tuple[float, float]]]
    supports: list[tuple[float, float]]  # per B_i, the range of f over the support of A_i
    rules: list[str]

    def __call__(self, values) -> np.ndarray:
        """The defuzzified approximation sum_i mu_A_i(x) f(c_i) (the memberships add up to 1), shaped as ``values``."""
        return (self.x.memberships(values) @ self.heights).reshape(np.shape(values))

    def membership(self, x, y) -> np.ndarray:
        """mu_f*(x, y) = max_i min(mu_A_i(x), mu_B_i(y)), B_i trapezoids with core = patch height, feet = supports."""
        x, y = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
        mu_a = self.x.memberships(x.reshape(-1))
        boxes = zip(self.patches, self.supports)
        mu_b = np.stack([trapezoidal(y.reshape(-1), lo, a, b, hi) for (_, (a, b)), (lo, hi) in boxes], 1)
        return np.minimum(mu_a, mu_b).max(1).reshape(x.shape)


def fuzzy_graph(
    f: Callable[[np.ndarray], np.ndarray], low: float, high: float, *, n_granules: int = 5, resolution: int = 201
) -> FuzzyGraph:
    """The fuzzy graph of ``f`` on [``low``, ``high``] with ``n_granules`` evenly spaced input granules.

    Granule A_i is a triangle peaking at c_i; its patch is its 0.5-cut (halfway to the neighbouring
    centres) times the range of f over that cut, sampled at ``resolution`` points, so the patches cover
    the graph of f: mu_f*(x, f(x)) >= 1/2 everywhere. The defuzzified f*(x) interpolates f linearly
    between the centres. Chapter 05.
    """
    check_positive_int("n_granules", n_granules, 2)
    check_positive_int("resolution", resolution, 2)
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"low, high: expected finite numbers with low < high, got {low!r}, {high!r}")
    if not callable(f):
        raise TypeError(f"f: expected a function of a numpy array, got {describe(f)}")
    centres = np.linspace(low, high, n_granules)
    a = Granules("x", tuple(float(c) for c in centres), _default_words(n_granules))
    heights = _values_of(f, centres)
    half = np.concatenate([[low], (centres[1:] + centres[:-1]) / 2, [high]])
    patches, supports = [], []
    for i in range(n_granules):
        cut = (float(half[i]), float(half[i + 1]))
        support = (float(centres[max(i - 1, 0)]), float(centres[min(i + 1, n_granules - 1)]))
        on_cut = _values_of(f, np.linspace(*cut, resolution))
        on_support = _values_of(f, np.linspace(*support, resolution))
        patches.append((cut, (float(on_cut.min()), float(on_cut.max()))))
        supports.append((float(min(on_support.min(), on_cut.min())), float(max(on_support.max(), on_cut.max()))))
    rules = [f"IF x is {w} THEN y is about {short_number(h)}" for w, h in zip(a.words, heights)]
    return FuzzyGraph(a, heights, patches, supports, rules)


def _values_of(f: Callable[[np.ndarray], np.ndarray], points: np.ndarray) -> np.ndarray:
    """f at ``points`` (L,), as float64 (L,); a constant f may return one number."""
    values = as_floats(f(points), "f", "a function returning numbers")
    values = np.broadcast_to(values, points.shape) if values.ndim == 0 else values
    if values.shape != points.shape or not np.isfinite(values).all():
        raise ValueError(
            f"f: expected finite values, one per point of an array {points.shape} in [low, high], "
            f"got {describe(values)}"
        )
    return values


class FuzzyHead(nn.Module):
    """An ANFIS-style rule layer (Jang 1993) over pooled concept activations z (N, D).

    Rule r of class k(r) has one Gaussian membership per input, centre c_rd and width sigma_rd, on the
    standardized inputs u = (z - mean) / std. Its firing strength is the product of the memberships,
    computed in log space so 64 factors cannot underflow:

    log w_r(u) = -1/2 sum_d ((u_d - c_rd) / sigma_rd)^2.

    The output for class k is log sum_{r of class k} w_r: its softmax is the summed normalized firing
    strength sum_{r of class k} w_r / sum_r' w_r' (ANFIS layers 3 to 5 with constant one-hot consequents). Chapter 05.
    """

    def __init__(self, n_inputs: int, n_classes: int, rules_per_class: int = 1):
        super().__init__()
        check_positive_int("n_inputs", n_inputs)
        check_positive_int("n_classes", n_classes)
        check_positive_int("rules_per_class", rules_per_class)
        n_rules = n_classes * rules_per_class
        self.centres = nn.Parameter(torch.zeros(n_rules, n_inputs))
        self.log_sigma = nn.Parameter(torch.zeros(n_rules, n_inputs))
        self.register_buffer("mean", torch.zeros(n_inputs))
        self.register_buffer("std", torch.ones(n_inputs))
        self.register_buffer("rule_class", torch.arange(n_classes).repeat_interleave(rules_per_class))

    def log_firing(self, z: torch.Tensor) -> torch.Tensor:
        """log w_r for each row of z (N, D), a tensor (N, R)."""
        u = (z - self.mean) / self.std
        precision = torch.exp(-2 * self.log_sigma)  # 1 / sigma^2, (R, D)
        # the sum over d of ((u_d - c_rd) / sigma_rd)^2, expanded into two matrix products
        cross = (u * u) @ precision.T - 2 * u @ (self.centres * precision).T
        return -0.5 * (cross + (self.centres**2 * precision).sum(1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        log_w = self.log_firing(z)
        n_classes = int(self.rule_class.max()) + 1
        return torch.stack([torch.logsumexp(log_w[:, self.rule_class == k], 1) for k in range(n_classes)], 1)

    def rules(
        self, names: Sequence[str], variables: Sequence[Granules], classes: Sequence[str], n_conditions: int = 3
    ) -> list[str]:
        """Each rule in words, with its ``n_conditions`` sharpest memberships (largest |c_rd| / sigma_rd): the
        word of each is the granule (of ``variables[d]``, on the raw activations) its centre falls in."""
        n_rules, n_inputs = self.centres.shape
        n_classes = int(self.rule_class.max()) + 1
        if len(names) != n_inputs or len(variables) != n_inputs or len(classes) < n_classes:
            raise ValueError(
                f"names, variables, classes: expected {n_inputs} names, {n_inputs} granules and {n_classes} classes, "
                f"got {len(names)}, {len(variables)} and {len(classes)}"
            )
        sharpness = self.centres.detach().abs() / self.log_sigma.detach().exp()
        centres = self.mean + self.std * self.centres.detach()
        texts = []
        for r in range(n_rules):
            dims = torch.argsort(sharpness[r], descending=True, stable=True)[:n_conditions].tolist()
            premise = " AND ".join(f"{names[d]} is {variables[d].word(float(centres[r, d]))}" for d in dims)
            texts.append(f"IF {premise} THEN {classes[int(self.rule_class[r])]}")
        return texts


def _kmeans(u: torch.Tensor, k: int, g: torch.Generator, steps: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on the rows of u: centres (k, D) and the cluster of each row. With fewer rows than k,
    rows start several centres, and the copies keep no rows."""
    centres = u[torch.randperm(u.shape[0], generator=g)[torch.arange(k) % u.shape[0]]].clone()
    for _ in range(steps):
        cluster = torch.cdist(u, centres).argmin(1)
        centres = torch.stack([u[cluster == j].mean(0) if (cluster == j).any() else centres[j] for j in range(k)])
    return centres, torch.cdist(u, centres).argmin(1)


def _initial_rules(u: torch.Tensor, k: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres and widths (k, D) of k rules from the rows u of one class: the means and standard deviations of
    its k-means clusters (width 1 for a cluster of fewer than two rows; rules at u = 0 for a class without rows)."""
    if u.shape[0] == 0:
        return u.new_zeros(k, u.shape[1]), u.new_ones(k, u.shape[1])
    centres, cluster = _kmeans(u, k, g)
    spread = [u[cluster == j].std(0) if (cluster == j).sum() > 1 else u.new_ones(u.shape[1]) for j in range(k)]
    return centres, torch.stack(spread)


def fit_fuzzy_head(
    z: torch.Tensor,
    labels: torch.Tensor,
    *,
    rules_per_class: int = 2,
    steps: int = 300,
    lr: float = 0.05,
    seed: int = 0,
) -> FuzzyHead:
    """Train a ``FuzzyHead`` on pooled activations ``z`` (N, D) and class ``labels`` (N,).

    Rules start from k-means clusters of each class (centres = cluster means, widths = cluster standard
    deviations), so the rule base does not grow as a grid of words would; then all centres and widths are
    trained with Adam (``_adam_step``) on the cross-entropy, full batch, for ``steps`` steps. There are
    labels.max() + 1 classes; the rules of a class without rows start at the mean of z. The head has the
    dtype and device of ``z``. Deterministic for ``seed``. Chapter 05.
    """
    z, labels = check_pooled(z, labels, "z")
    labels = labels.to(z.device)
    check_positive_int("rules_per_class", rules_per_class)
    check_positive_int("steps", steps, 0)
    check_number("lr", lr, strict=True)
    g = torch.Generator().manual_seed(check_seed(seed))
    n_classes = int(labels.max()) + 1
    head = FuzzyHead(z.shape[1], n_classes, rules_per_class).to(z)
    head.mean.copy_(z.mean(0))
    head.std.copy_((z.std(0) if z.shape[0] > 1 else torch.zeros_like(z[0])).clamp(min=1e-6))
    u = (z - head.mean) / head.std
    with torch.no_grad():
        for k in range(n_classes):
            centres, spread = _initial_rules(u[labels == k], rules_per_class, g)
            head.centres[k * rules_per_class : (k + 1) * rules_per_class] = centres
            head.log_sigma[k * rules_per_class : (k + 1) * rules_per_class] = spread.clamp(min=0.1).log()
    parameters = [head.centres, head.log_sigma]
    moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in parameters]
    for step in range(1, steps + 1):
        loss = nn.functional.cross_entropy(head(z), labels)
        gradients = torch.autograd.grad(loss, parameters)
        with torch.no_grad():
            for p, gradient, (m, v) in zip(parameters, gradients, moments):
                _adam_step(p, gradient, m, v, step, lr)
    return head.eval()


def _adam_step(p, g, m, v, step: int, lr: float, betas=(0.9, 0.999), eps: float = 1e-8) -> None:
    """One Adam update of ``p`` in place (Kingma & Ba 2015), as ``torch.optim.Adam`` computes it.

    Written out because the first ``torch.optim`` optimizer of a process imports ``torch._dynamo``, which
    costs seconds, a large share of a chapter's run time for a layer that trains in about a second.
    """
    m.mul_(betas[0]).add_(g, alpha=1 - betas[0])
    v.mul_(betas[1]).addcmul_(g, g, value=1 - betas[1])
    denominator = (v.sqrt() / math.sqrt(1 - betas[1] ** step)).add_(eps)
    p.addcdiv_(m, denominator, value=-lr / (1 - betas[0] ** step))


class FuzzyCNN(nn.Module):
    """A CNN whose classifier is replaced by a ``FuzzyHead`` on the global maxima of its maps at ``layer``.

    Holds a frozen copy of ``model`` (the original is left as it was), which stays in eval mode when the
    FuzzyCNN is put in training mode; the forward pass stops at ``layer`` (a module name, or a sub-module
    of ``model``). Chapter 05.
    """

    def __init__(self, model: nn.Module, head: FuzzyHead, layer: str | nn.Module = "features"):
        super().__init__()
        check_model(model)
        if not isinstance(head, nn.Module):
            raise TypeError(f"head: expected a FuzzyHead, got {describe(head)}")
        if isinstance(layer, nn.Module):  # its name, which also names it in the copy
            layer = next((name for name, m in model.named_modules() if m is layer and name), layer)
        self.cnn = copy.deepcopy(model).eval().requires_grad_(False)
        self.layer = layer
        self.head = head
        submodule(self.cnn, layer)  # a clear error now for a layer the model does not have

    def train(self, mode: bool = True) -> FuzzyCNN:
        """Set the head's training mode; the frozen CNN stays in eval mode."""
        super().train(mode)
        self.cnn.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = global_max_pool(output(self.cnn, x, self.layer))
        if isinstance(self.head, FuzzyHead) and pooled.shape[1] != self.head.centres.shape[1]:
            raise ValueError(
                f"head: expected a FuzzyHead over the {pooled.shape[1]} channels of layer {self.layer!r}, "
                f"got one over {self.head.centres.shape[1]} inputs"
            )
        return self.head(pooled)
