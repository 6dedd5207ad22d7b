"""Logic rules: decision and counterfactual rules, surrogate trees, fuzzy rules, and rules for a CNN.

A *rule* is a conjunction of conditions on the features and an outcome, written as the survey's figure 6
writes it, ``{age <= 25, job = none, amount > 5k} -> deny``, or as an if-statement.

- **LORE** (Guidotti, Monreale, Ruggieri, Pedreschi, Turini & Giannotti 2018, arXiv 1805.10820) explains
  the black box b at one instance x. A genetic algorithm grows two populations from copies of x: one
  that keeps b's outcome, with fitness f(z) = a1 s(x, z) + a2 1[b(z) = b(x)], and one that changes it,
  f(z) = a1 s(x, z) + a2 1[b(z) != b(x)], where s = 1 - d(x, z) is set to 0 for copies of x (s >= eta = 1)
  and a1 = a2 = 1/2. d mixes simple matching on the categorical features and the normalized Euclidean
  distance on the continuous ones, weighted by their counts. A decision tree fitted to b on the
  neighbourhood Z gives the decision rule r (the path of x) and the counterfactual rules Phi: the paths to
  leaves with another outcome that need the fewest changed conditions, each written as the conditions x
  falsifies. Fidelity is the tree's agreement with b on Z, hit is tree(x) = b(x). The tree's thresholds
  sit halfway between neighbours, so moving x just past them often leaves b's decision as it was; by
  default (``check``, our addition) each counterfactual is confirmed by the black box and its bounds are
  set to the confirmed move.
- **Surrogate tree**: one tree fitted to b on a whole table; every leaf is a global rule.
- **Fuzzy rules** (Zadeh 1996, "Fuzzy logic = computing with words"): a feature is described by
  linguistic granules (LOW, MEDIUM, HIGH), overlapping fuzzy sets with membership functions. Rules over
  granules are extracted from examples (Wang & Mendel 1992; class consequents and weights as Ishibuchi,
  Nozaki & Tanaka 1992), fire with the product of their memberships, and a function is approximated by its
  fuzzy graph f* = union_i A_i x B_i (Zadeh 1997; the survey's figure 7).
- **Rules for a CNN**: the filters of the last convolutional block become *concepts*, named by the shape
  whose ground-truth mask their activations overlap best (network dissection, Bau et al. 2017). A tree
  over their pooled activations mimics the CNN, and ``FuzzyHead``, an ANFIS layer (Jang 1993) with
  Gaussian memberships and rule firing computed in log space, replaces the CNN's classifier. One forward
  pass (``concept_activations``) feeds ``dissect``, ``concept_rules`` and ``fit_fuzzy_head``.

Tables are numpy arrays (N, F) of floats, categorical columns holding integer codes, described by a
``Schema`` (names, the code names of the categorical columns, the outcome names); a ``data.loans`` table
carries its own. The black box ``predict`` maps such rows to integer labels; a ``torch.nn.Module`` is
accepted and wrapped with ``black_box``. Introduced in chapter 05.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .core import (
    batch_slices,
    check_model,
    check_number,
    check_positive_int,
    check_seed,
    contract,
    describe,
    model_guard,
    predict,
)
from .layers import feature_maps, output, submodule
from .occlusion import resize

if TYPE_CHECKING:
    from sklearn.tree import DecisionTreeClassifier

ALPHA = (0.5, 0.5)  # LORE fitness weights a1 (similarity) and a2 (outcome)
ETA = 1.0  # LORE: similarity at or above eta counts as a copy of x and scores 0
CROSSOVER, MUTATION, TOURNAMENT, HALL_OF_FAME = 0.5, 0.2, 3, 0.1  # LORE's genetic settings (DEAP eaSimple)
POOL_DRAWS = 1000  # LORE: extra normal draws in the value pool of a continuous feature
WORDS = {3: ("LOW", "MEDIUM", "HIGH"), 5: ("VERY LOW", "LOW", "MEDIUM", "HIGH", "VERY HIGH")}
DISSECTION_QUANTILE = 0.99  # an activation above this quantile of its filter counts as "on" (Bau et al. use 0.995)

Predict = Callable[[np.ndarray], np.ndarray]

# ----------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class Schema:
    """What the columns of a table mean. Chapter 05.

    Attributes
    ----------
    names : one name per column
    categorical : dict column index -> tuple of code names (``codes[value]``)
    classes : one name per outcome
    """

    names: tuple[str, ...]
    categorical: dict[int, tuple[str, ...]] = field(default_factory=dict)
    classes: tuple[str, ...] = ()

    def outcome(self, label: int) -> str:
        """The name of outcome ``label`` (the number as text when there are no names)."""
        return self.classes[label] if label < len(self.classes) else str(label)

    def one_hot_columns(self) -> list[tuple[int, int | None]]:
        """The columns of ``encode``: (column, code) for a categorical indicator, (column, None) for a number."""
        return [
            (j, k)
            for j in range(len(self.names))
            for k in (range(len(self.categorical[j])) if j in self.categorical else [None])
        ]

    def encoded_names(self) -> list[str]:
        """The names of the columns of ``encode``: ``age`` for a number, ``job = none`` for an indicator (for
        drawing a tree with ``sklearn.tree.plot_tree``)."""
        return [
            self.names[j] if k is None else f"{self.names[j]} = {self.categorical[j][k]}"
            for j, k in self.one_hot_columns()
        ]

    def encode(self, rows: np.ndarray) -> np.ndarray:
        """``rows`` with every categorical column replaced by one indicator column per code (for the trees)."""
        columns = [rows[:, j] if k is None else (rows[:, j] == k) for j, k in self.one_hot_columns()]
        return np.stack(columns, 1).astype(float)


def _floats(value, name: str, expected: str) -> np.ndarray:
    """``value`` (array, tensor or nested lists of numbers) as a float64 numpy array, or a TypeError naming it."""
    try:
        return np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected {expected}, got {describe(value)}") from None


def _table(data, feature_names=None, categorical=None, classes=None) -> tuple[np.ndarray, Schema]:
    """Rows (N, F) as float64 and their schema, from a ``data.loans`` table or an array plus metadata."""
    if hasattr(data, "features") and hasattr(data, "feature_names"):
        feature_names = feature_names or data.feature_names
        categorical = categorical if categorical is not None else data.categorical
        classes = classes or data.classes
        data = data.features
    rows = _floats(data, "data", "a data.loans table or an array of rows (N, F)")
    if rows.ndim != 2 or rows.shape[0] == 0 or not np.isfinite(rows).all():
        raise ValueError(f"data: expected a data.loans table or a finite array of rows (N, F), got {describe(data)}")
    if isinstance(feature_names, str):
        raise TypeError(f"feature_names: expected a sequence of {rows.shape[1]} names, got {describe(feature_names)}")
    names = tuple(feature_names) if feature_names is not None else tuple(f"x{j}" for j in range(rows.shape[1]))
    if len(names) != rows.shape[1] or len(set(names)) != len(names):
        raise ValueError(f"feature_names: expected {rows.shape[1]} distinct names (one per column), got {names}")
    if categorical is not None and not isinstance(categorical, Mapping):
        raise TypeError(f"categorical: expected a dict column name -> code names, got {describe(categorical)}")
    categorical = dict(categorical or {})
    unknown = [name for name in categorical if name not in names]
    if unknown:
        raise ValueError(f"categorical: expected column names from {names}, got {unknown}")
    coded = {names.index(name): tuple(codes) for name, codes in categorical.items()}
    for j, codes in coded.items():
        if not np.isin(rows[:, j], np.arange(len(codes))).all():
            raise ValueError(f"data: column {names[j]!r} expected integer codes 0..{len(codes) - 1}")
    return rows, Schema(names, coded, tuple(classes or ()))


def _row(x, schema: Schema, name: str = "x") -> np.ndarray:
    """One row (F,) as float64, with integer codes in range in the categorical columns."""
    row = _floats(x, name, f"one row of {len(schema.names)} numbers").reshape(-1)
    if row.shape != (len(schema.names),) or not np.isfinite(row).all():
        raise ValueError(f"{name}: expected one finite row of {len(schema.names)} features, got {describe(x)}")
    for j, codes in schema.categorical.items():
        if row[j] not in range(len(codes)):
            raise ValueError(
                f"{name}: column {schema.names[j]!r} expected an integer code 0..{len(codes) - 1}, got {row[j]:g}"
            )
    return row


def black_box(model: nn.Module, batch_size: int = 1024) -> Predict:
    """The function rows (N, F) -> predicted labels (N,) of a classifier ``model`` (argmax of its logits).

    Rows may be a numpy array or a tensor, or one row (F,), answered with one label. The model runs in
    eval mode (Dropout off, BatchNorm statistics fixed), without gradients, and is left as it was
    (``core.model_guard``). Chapter 05.
    """
    check_model(model)
    check_positive_int("batch_size", batch_size)
    parameter = next((p for p in model.parameters() if p.is_floating_point()), None)
    like = parameter if parameter is not None else torch.empty(0)

    def labels(rows) -> np.ndarray:
        x = torch.as_tensor(_floats(rows, "rows", "rows (N, F) of numbers")).to(like)
        if x.ndim not in (1, 2) or x.numel() == 0:
            raise ValueError(f"rows: expected rows (N, F) or one row (F,), got {describe(rows)}")
        with model_guard(model), torch.no_grad():
            try:
                logits = predict(model, x.reshape(-1, x.shape[-1]), batch_size)
            except RuntimeError as error:
                raise ValueError(
                    f"rows: the model fails on rows of shape {tuple(x.shape)} ({str(error).splitlines()[0]})"
                ) from error
        if logits.ndim != 2:
            raise ValueError(f"model: expected logits (N, classes), got an output of shape {tuple(logits.shape)}")
        predicted = logits.argmax(1).cpu().numpy()
        return predicted[0] if x.ndim == 1 else predicted

    return labels


def _labels_of(predict: Predict | nn.Module, rows: np.ndarray) -> np.ndarray:
    """The black box's labels of ``rows``: class indices 0, 1, ... (bools and whole floats are taken as such)."""
    labels = np.asarray(predict(rows))
    expected = f"predict: expected class indices 0, 1, ... of shape ({rows.shape[0]},)"
    if labels.shape != (rows.shape[0],) or labels.dtype.kind not in "biuf":  # bools, ints, floats
        raise ValueError(f"{expected}, got {describe(labels)}")
    if labels.dtype.kind == "f" and not (np.isfinite(labels) & (labels == np.round(labels))).all():
        raise ValueError(f"{expected}, got floats that are not whole numbers")
    labels = labels.astype(np.int64)
    if (labels < 0).any():
        raise ValueError(f"{expected}, got {labels.min()}")
    return labels


def _as_predict(predict) -> Predict:
    if isinstance(predict, nn.Module):
        return black_box(predict)
    if not callable(predict):
        raise TypeError(f"predict: expected a function rows -> labels or a torch.nn.Module, got {describe(predict)}")
    return predict


# ----------------------------------------------------------------------------- rules


def _number(value: float) -> str:
    """5000 -> '5k', 25.5 -> '25.5': the survey's short numbers."""
    return f"{value / 1000:.4g}k" if abs(value) >= 1000 else f"{value:.4g}"


@dataclass(frozen=True)
class Condition:
    """One condition ``feature op value``: op is '<=', '>' or '>=' (numbers), '=' or '!=' (categories). Chapter 05.

    ``codes`` holds the code names of a categorical feature (empty for a number); ``value`` is then a code.
    """

    feature: str
    column: int
    op: str
    value: float
    codes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        ops = ("=", "!=") if self.codes else ("<=", ">", ">=")
        if self.op not in ops:
            kind = "a categorical" if self.codes else "a numeric"
            raise ValueError(f"op: expected one of {ops} for {kind} feature {self.feature!r}, got {self.op!r}")
        if self.codes and self.value not in range(len(self.codes)):
            raise ValueError(f"value: expected a code 0..{len(self.codes) - 1} of {self.feature!r}, got {self.value!r}")

    def __str__(self) -> str:
        shown = self.codes[int(self.value)] if self.codes else _number(self.value)
        return f"{self.feature} {self.op} {shown}"

    def holds(self, rows: np.ndarray) -> np.ndarray:
        """Which rows (N, F) satisfy the condition, a bool array (N,)."""
        v = rows[:, self.column]
        tests = {"<=": v <= self.value, ">": v > self.value, ">=": v >= self.value, "=": v == self.value}
        return tests[self.op] if self.op in tests else v != self.value


@dataclass(frozen=True)
class Rule:
    """A conjunction of conditions and an outcome, ``premise -> outcome``. Chapter 05."""

    conditions: tuple[Condition, ...]
    outcome: str

    def __str__(self) -> str:
        return "{" + ", ".join(map(str, self.conditions)) + "} -> " + self.outcome

    def __len__(self) -> int:
        return len(self.conditions)

    def as_if(self) -> str:
        """The rule as an if-statement: ``IF age <= 25 AND job = none THEN deny``."""
        premise = " AND ".join(map(str, self.conditions)) or "TRUE"
        return f"IF {premise} THEN {self.outcome}"

    def holds(self, rows) -> np.ndarray:
        """Which rows (N, F) satisfy every condition, a bool array (N,)."""
        rows = np.atleast_2d(np.asarray(rows, dtype=float))
        satisfied = np.ones(rows.shape[0], dtype=bool)
        for condition in self.conditions:
            satisfied &= condition.holds(rows)
        return satisfied

    def apply(self, x, margin=0.0) -> np.ndarray:
        """Copies of the rows ``x`` (F,) or (N, F) moved as little as possible to satisfy the rule.

        A falsified ``<= t`` moves the value to ``t - margin``, a falsified ``> t`` to ``t + margin`` (the
        next float above t when ``margin`` is 0); ``margin`` is a number or one per column. A falsified
        ``>= t`` moves it to t, a falsified ``= c`` sets code c, a falsified ``!= c`` the nearest code that
        all the conditions on that column allow (the lower on a tie). Values that satisfy a condition stay.
        A ValueError if the moved rows still falsify the rule (an empty premise, or a margin wider than an
        interval).
        """
        rows = np.array(x, dtype=float, ndmin=2)
        margins = np.asarray(margin, dtype=float)
        valid = np.isfinite(margins).all() and (margins >= 0).all()
        if margins.ndim > 1 or margins.size not in (1, rows.shape[1]) or not valid:
            expected = f"a number >= 0 or one per column ({rows.shape[1]})"
            raise ValueError(f"margin: expected {expected}, got {describe(margin)}")
        margins = np.broadcast_to(margins.reshape(-1), (rows.shape[1],))
        for c in self.conditions:
            wrong = ~c.holds(rows)
            if c.op == "<=":
                rows[wrong, c.column] = c.value - margins[c.column]
            elif c.op == ">":
                above = c.value + margins[c.column] if margins[c.column] > 0 else np.nextafter(c.value, np.inf)
                rows[wrong, c.column] = above
            elif c.op in ("=", ">="):
                rows[wrong, c.column] = c.value
            else:
                rows[wrong, c.column] = [self._nearest_code(c.column, len(c.codes), v) for v in rows[wrong, c.column]]
        if not self.holds(rows).all():
            raise ValueError(f"rule: no move of x satisfies {self} with margin {margin!r}")
        return rows if np.ndim(x) == 2 else rows[0]

    def _nearest_code(self, column: int, n_codes: int, value: float) -> float:
        allowed = [
            k
            for k in range(n_codes)
            if all(c.holds(np.full((1, column + 1), k))[0] for c in self.conditions if c.column == column)
        ]
        if not allowed:
            raise ValueError(f"rule: no code of column {column} satisfies {self}")
        return float(min(allowed, key=lambda k: (abs(k - value), k)))


def merge(conditions: Sequence[Condition]) -> tuple[Condition, ...]:
    """The same premise with at most one interval per number and one set per category, in column order.

    ``x <= 5, x <= 3`` becomes ``x <= 3``; ``job != none, job != clerk`` stays (two excluded codes) unless
    one code is left, which becomes ``job = that``; any ``=`` makes the ``!=`` on its column redundant.
    Chapter 05.
    """
    merged = []
    for column in sorted({c.column for c in conditions}):
        on = [c for c in conditions if c.column == column]
        first = on[0]
        if first.codes:
            equal = [c for c in on if c.op == "="]
            excluded = sorted({int(c.value) for c in on if c.op == "!="})
            left = [k for k in range(len(first.codes)) if k not in excluded]
            if equal or len(left) == 1:
                merged.append(
                    Condition(first.feature, column, "=", float(equal[0].value if equal else left[0]), first.codes)
                )
            else:
                merged += [Condition(first.feature, column, "!=", float(k), first.codes) for k in excluded]
            continue
        for op, pick in (("<=", min), (">", max), (">=", max)):
            values = [c.value for c in on if c.op == op]
            if values:
                merged.append(Condition(first.feature, column, op, pick(values)))
    return tuple(merged)


# ----------------------------------------------------------------------------- trees and their rules


@dataclass
class Surrogate:
    """A decision tree that mimics a black box, and its leaves as rules. Chapter 05.

    Attributes
    ----------
    tree : the fitted ``sklearn.tree.DecisionTreeClassifier`` (on ``schema.encode`` of the rows)
    schema : the table's schema
    rules : one rule per leaf, ``rules[i]`` for leaf ``leaves[i]``
    leaves : the node ids of the leaves
    fidelity : share of the fitting rows on which the tree agrees with the black box
    features : the names of the features the tree splits on, in column order
    """

    tree: DecisionTreeClassifier
    schema: Schema
    rules: list[Rule]
    leaves: list[int]
    fidelity: float
    features: tuple[str, ...]

    def predict(self, rows) -> np.ndarray:
        """The tree's labels for rows (N, F)."""
        rows = np.atleast_2d(np.asarray(rows, dtype=float))
        return self.tree.predict(self.schema.encode(rows))

    def rule_for(self, x) -> Rule:
        """The rule of the leaf that the row ``x`` falls in (its root-to-leaf path)."""
        leaf = self.tree.apply(self.schema.encode(_row(x, self.schema)[None]))[0]
        return self.rules[self.leaves.index(leaf)]

    def score(self, rows, labels) -> float:
        """Share of ``rows`` on which the tree gives ``labels`` (e.g. the black box's): fidelity on new data."""
        predicted = self.predict(rows)
        labels = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
        if labels.shape != predicted.shape:
            raise ValueError(f"labels: expected one label per row {predicted.shape}, got {describe(labels)}")
        return float(np.mean(predicted == labels))


def _split(schema: Schema, encoded: int, threshold: float, left: bool) -> Condition:
    """The condition of one branch of a split of the tree on encoded column ``encoded``."""
    column, code = schema.one_hot_columns()[encoded]
    name = schema.names[column]
    if code is None:
        return Condition(name, column, "<=" if left else ">", float(threshold))
    return Condition(name, column, "!=" if left else "=", float(code), schema.categorical[column])


def tree_paths(tree: DecisionTreeClassifier, schema: Schema) -> dict[int, tuple[Condition, ...]]:
    """leaf node id -> the merged conditions of its root-to-leaf path. Chapter 05."""
    t, paths, stack = tree.tree_, {}, [(0, ())]
    while stack:
        node, path = stack.pop()
        if t.children_left[node] < 0:
            paths[node] = merge(path)
            continue
        for child, left in ((t.children_left[node], True), (t.children_right[node], False)):
            stack.append((child, (*path, _split(schema, t.feature[node], t.threshold[node], left))))
    return paths


def _fit_tree(rows: np.ndarray, labels: np.ndarray, schema: Schema, seed: int, **settings) -> Surrogate:
    from sklearn.tree import DecisionTreeClassifier  # on first use: importing it would slow ``import xai_course``

    tree = DecisionTreeClassifier(random_state=seed, **settings).fit(schema.encode(rows), labels)
    paths = tree_paths(tree, schema)
    leaves = sorted(paths)
    outcome = tree.classes_[tree.tree_.value[leaves, 0].argmax(1)]
    rules = [Rule(paths[leaf], schema.outcome(int(k))) for leaf, k in zip(leaves, outcome)]
    used = {schema.one_hot_columns()[j][0] for j in tree.tree_.feature[tree.tree_.feature >= 0]}
    surrogate = Surrogate(tree, schema, rules, leaves, 0.0, tuple(schema.names[j] for j in sorted(used)))
    surrogate.fidelity = surrogate.score(rows, labels)
    return surrogate


def surrogate_tree(
    predict,
    data,
    *,
    max_depth: int | None = 3,
    min_samples_leaf: int = 1,
    seed: int = 0,
    feature_names=None,
    categorical=None,
    classes=None,
) -> Surrogate:
    """Global rules: a decision tree of depth at most ``max_depth`` fitted to the black box on ``data``.

    ``predict`` maps rows to labels (or is a ``torch.nn.Module``); ``data`` is a ``data.loans`` table or
    an array of rows with ``feature_names``, ``categorical`` (name -> code names) and ``classes``.
    Categorical columns are one-hot encoded, so splits read ``job = none``. ``fidelity`` is measured on
    ``data``; ``Surrogate.score`` measures it on other rows. Chapter 05.
    """
    rows, schema = _table(data, feature_names, categorical, classes)
    if max_depth is not None:
        check_positive_int("max_depth", max_depth)
    check_positive_int("min_samples_leaf", min_samples_leaf)
    seed = check_seed(seed)
    labels = _labels_of(_as_predict(predict), rows)
    return _fit_tree(rows, labels, schema, seed, max_depth=max_depth, min_samples_leaf=min_samples_leaf)


# ----------------------------------------------------------------------------- LORE


@dataclass
class LocalExplanation:
    """LORE's explanation e = <r, Phi> of the black box at x, with its measures. Chapter 05.

    Attributes
    ----------
    x : the explained row (F,)
    rule : the decision rule r, the premise x satisfies in the local tree
    counterfactuals : Phi, the rules with an outcome other than b(x) needing the fewest changed conditions, each
        written as the conditions x falsifies (apply one with ``Rule.apply``)
    counterfactual_rows : (len(Phi), F), x moved into each counterfactual rule's leaf (see ``lore``)
    fidelity : agreement of the local tree with the black box on the neighbourhood Z
    hit : whether the tree's outcome for x is the black box's
    neighbourhood, neighbourhood_labels : Z and b(Z)
    surrogate : the local tree and its rules
    """

    x: np.ndarray
    rule: Rule
    counterfactuals: list[Rule]
    counterfactual_rows: np.ndarray
    fidelity: float
    hit: bool
    neighbourhood: np.ndarray
    neighbourhood_labels: np.ndarray
    surrogate: Surrogate

    def __str__(self) -> str:
        phi = ", ".join(f"({rule})" for rule in self.counterfactuals)
        return f"e = <r = {self.rule}, Phi = {{{phi}}}>"


def value_pools(rows: np.ndarray, schema: Schema, rng: np.random.Generator) -> list[np.ndarray]:
    """LORE's values to mutate into, per column: the codes of a category; the observed values of a number
    plus ``POOL_DRAWS`` draws from N(mean, std), kept only inside the observed range. Chapter 05.
    """
    pools = []
    for j in range(rows.shape[1]):
        column = rows[:, j]
        if j in schema.categorical:
            pools.append(np.unique(column))
            continue
        draws = rng.normal(column.mean(), column.std(), POOL_DRAWS)
        pools.append(np.concatenate([column, draws[(draws >= column.min()) & (draws <= column.max())]]))
    return pools


def mixed_distance(x: np.ndarray, rows: np.ndarray, schema: Schema, scale: np.ndarray) -> np.ndarray:
    """LORE's distance d(x, z) for each row z (N,): (h/m) SimpleMatch + ((m-h)/m) NormEuclid.

    h of the m columns are categorical; SimpleMatch is the share of them that differ. NormEuclid
    0.5 Var(u - v) / (Var(u) + Var(v)) (variances across the continuous columns) compares the continuous
    parts u of x and v of z divided by ``scale`` (their standard deviations in the data). Chapter 05.
    """
    m = rows.shape[1]
    cat = np.array(sorted(schema.categorical), dtype=int)
    num = np.setdiff1d(np.arange(m), cat)
    d = np.zeros(rows.shape[0])
    if cat.size:
        d += cat.size / m * (rows[:, cat] != x[cat]).mean(1)
    if num.size:
        u, v = x[num] / scale[num], rows[:, num] / scale[num]
        denominator = np.var(u) + np.var(v, axis=1)
        d += num.size / m * 0.5 * np.var(v - u, axis=1) / np.where(denominator > 0, denominator, 1.0)
    return d


def lore_fitness(x, rows, y_x, labels, same: bool, schema, scale) -> np.ndarray:
    """a1 s(x, z) + a2 1[b(z) = b(x)] (or != when not ``same``), with s = 0 for s >= eta (copies of
    x). Chapter 05."""
    similarity = 1.0 - mixed_distance(x, rows, schema, scale)
    similarity[similarity >= ETA] = 0.0
    outcome = (labels == y_x) if same else (labels != y_x)
    return ALPHA[0] * similarity + ALPHA[1] * outcome


def _tournament(fitness: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of len(fitness) winners, each the fittest of TOURNAMENT random draws (the first on a tie)."""
    draws = rng.integers(len(fitness), size=(len(fitness), TOURNAMENT))
    return draws[np.arange(len(fitness)), fitness[draws].argmax(1)]


def _crossover(population: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Two-point crossover of the pairs (0, 1), (2, 3), ..., each with probability CROSSOVER.

    None with one feature: swapping it would only swap the pair.
    """
    n_pairs, m = population.shape[0] // 2, population.shape[1]
    if m < 2:
        return population.copy()
    first = rng.integers(1, m + 1, n_pairs)
    second = rng.integers(1, m, n_pairs)
    second = np.where(second >= first, second + 1, second)
    low, high = np.minimum(first, second), np.maximum(first, second)
    swap = (rng.random(n_pairs) < CROSSOVER)[:, None] & (np.arange(m) >= low[:, None]) & (np.arange(m) < high[:, None])
    a, b = population[0 : 2 * n_pairs : 2], population[1 : 2 * n_pairs : 2]
    out = population.copy()
    out[0 : 2 * n_pairs : 2], out[1 : 2 * n_pairs : 2] = np.where(swap, b, a), np.where(swap, a, b)
    return out


def _mutate(population: np.ndarray, pools: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """With probability MUTATION an individual has each feature redrawn from its pool with probability MUTATION."""
    n, m = population.shape
    redraw = (rng.random(n) < MUTATION)[:, None] & (rng.random((n, m)) < MUTATION)
    values = np.stack([rng.choice(pool, n) for pool in pools], 1)
    return np.where(redraw, values, population)


def _hall_of_fame(rows, fitness, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``size`` fittest distinct rows."""
    rows, first = np.unique(rows, axis=0, return_index=True)
    best = np.argsort(-fitness[first], kind="stable")[:size]
    return rows[best], fitness[first][best]


def _above_largest_gap(rows, fitness) -> np.ndarray:
    """LORE's ``get_oversample``: the rows fitter than the lower side of the largest gap in fitness."""
    values = np.sort(fitness)
    if values[-1] == values[0]:
        return rows  # no gap: keep everything (the original would keep nothing)
    gaps = np.diff(values)
    threshold = values[np.flatnonzero(gaps == gaps.max()).max()]
    return rows[fitness > threshold]


def _population(predict: Predict, x, y_x, pools, schema, scale, *, size, generations, same, rng) -> np.ndarray:
    """One of LORE's two populations (DEAP's eaSimple: tournament, two-point crossover, mutation, hall of
    fame), cut at the largest fitness gap."""
    population = np.repeat(x[None], size, 0)
    fitness = lore_fitness(x, population, y_x, _labels_of(predict, population), same, schema, scale)
    fame, fame_fitness = _hall_of_fame(population, fitness, max(1, int(HALL_OF_FAME * size)))
    for _ in range(generations):
        population = _mutate(_crossover(population[_tournament(fitness, rng)], rng), pools, rng)
        fitness = lore_fitness(x, population, y_x, _labels_of(predict, population), same, schema, scale)
        rows, values = np.vstack([fame, population]), np.concatenate([fame_fitness, fitness])
        fame, fame_fitness = _hall_of_fame(rows, values, len(fame))
    return _above_largest_gap(np.vstack([population, fame]), np.concatenate([fitness, fame_fitness]))


def _neighbourhood(predict, x, rows, schema, n_neighbors, generations, rng) -> np.ndarray:
    """LORE's neighbourhood Z of x: the same-outcome population, then the different-outcome one."""
    scale = _scale(rows)
    pools = value_pools(rows, schema, rng)
    y_x = _labels_of(predict, x[None])[0]
    settings = dict(size=n_neighbors // 2, generations=generations, rng=rng)
    return np.vstack([_population(predict, x, y_x, pools, schema, scale, same=s, **settings) for s in (True, False)])


def _scale(rows: np.ndarray) -> np.ndarray:
    """The standard deviation of each column, 1 where it is 0."""
    scale = rows.std(0)
    return np.where(scale > 0, scale, 1.0)


def _moves(x: np.ndarray, delta: Rule, z_leaf: np.ndarray) -> np.ndarray:
    """x with the columns of ``delta`` taken from each row of the leaf: moves that reach the leaf."""
    columns = sorted({c.column for c in delta.conditions})
    rows = np.repeat(x[None], len(z_leaf), 0)
    rows[:, columns] = z_leaf[:, columns]
    return rows


def counterfactual_rules(
    x, surrogate: Surrogate, outcome: str, z: np.ndarray, predict, check: bool, scale
):
    """Phi and the rows it moves x to (see ``lore``). Chapter 05."""
    leaf_of_z = surrogate.tree.apply(surrogate.schema.encode(z))
    candidates = {}
    for rule, leaf in zip(surrogate.rules, surrogate.leaves):
        delta = Rule(tuple(c for c in rule.conditions if not c.holds(x[None])[0]), rule.outcome)
        if rule.outcome == outcome or not delta.conditions or not (leaf_of_z == leaf).any():
            continue
        moves = _moves(x, delta, z[leaf_of_z == leaf])
        candidates[delta] = np.vstack([candidates[delta], moves]) if delta in candidates else moves
    found = {}
    y_x = _labels_of(predict, x[None])[0]
    for delta, moves in candidates.items():
        moves = moves[np.argsort(np.abs((moves - x) / scale).sum(1), kind="stable")]
        if check:
            moves = moves[_labels_of(predict, moves) != y_x]
        if len(moves):
            found[delta] = moves[0]
    if not found:
        return [], []
    fewest = min(map(len, found))
    order = sorted(
        (r for r in found if len(r) == fewest),
        key=lambda r: (float(np.abs((found[r] - x) / scale).sum()), str(r)),
    )
    if check:  # the confirmed move becomes the rule's bound, so that Rule.apply(x) reproduces it
        confirmed, shapes = {}, set()
        for rule in (
            order
        ):  # nearest first: a farther move of the same features in the same direction adds nothing
            tight = _tighten(rule, found[rule])
            shape = _shape(tight)
            if shape not in shapes:
                confirmed[tight], shapes = found[rule], shapes | {shape}
        return list(confirmed), list(confirmed.values())
    return order, [found[r] for r in order]


def _shape(rule: Rule) -> tuple:
    """What a rule changes: (column, op) per condition, with the code for a category (``job = clerk`` and
    ``job = skilled`` are different changes, ``income <= 540`` and ``income <= 450`` the same one)."""
    return tuple((c.column, c.op, c.value if c.codes else None) for c in rule.conditions)


def _tighten(delta: Rule, row: np.ndarray) -> Rule:
    """``delta`` with its bounds moved to the values of ``row``: ``<= row``, ``>= row``, ``= row's code``."""
    tight = {"<=": "<=", ">": ">=", "=": "=", "!=": "="}
    conditions = {Condition(c.feature, c.column, tight[c.op], float(row[c.column]), c.codes) for c in delta.conditions}
    return Rule(tuple(sorted(conditions, key=lambda c: (c.column, c.op))), delta.outcome)


def lore(
    predict,
    x,
    data,
    *,
    n_neighbors: int = 1000,
    generations: int = 10,
    seed: int = 0,
    max_depth: int | None = None,
    min_samples_leaf: int = 1,
    check: bool = True,
    feature_names=None,
    categorical=None,
    classes=None,
) -> LocalExplanation:
    """LORE (Guidotti et al. 2018): the decision rule and counterfactual rules of the black box at ``x``.

    Two genetic populations of ``n_neighbors // 2`` each (same and different outcome as x) evolve for
    ``generations`` generations from copies of x, mutating into the value pools of the reference table
    ``data``; the fittest above the largest fitness gap form Z (if b gives Z a single label, the 100 rows of
    ``data`` closest to x with another label are added). A scikit-learn tree (CART, where the paper uses
    C4.5) with ``max_depth`` and ``min_samples_leaf`` is fitted to b on Z.

    Phi holds the leaves whose outcome is not b(x) (the rule's outcome is the same unless the tree misses
    x: ``hit`` False), each written as the conditions x falsifies, those with the fewest kept. Each comes
    with a row: x with the rule's features taken from the nearest row of Z in the rule's leaf (distance:
    sum of |change| / standard deviation), a minimal move backed by the neighbourhood. With ``check`` (an
    addition to the paper, which returns Phi unchecked) the black box must confirm the move: the nearest
    leaf row whose move changes b's outcome is taken, and rules without one are dropped before the
    fewest-conditions rules are kept; the bounds of each kept rule are then moved to its confirmed row
    (``age <= 62.25`` becomes ``age <= 59`` if age 59 is the confirmed move; a ``>`` becomes ``>=``), so
    that ``Rule.apply(x)`` lands on the confirmed row; of two checked rules that move the same features in
    the same direction (``income <= 540``, ``income <= 450``) only the nearer is kept. ``predict`` maps rows
    to labels (or is a ``torch.nn.Module``); ``data`` is a ``data.loans`` table or an array of rows with
    ``feature_names``, ``categorical`` and ``classes``. Chapter 05.
    """
    check_positive_int("n_neighbors", n_neighbors, 2)
    check_positive_int("generations", generations, 0)
    seed = check_seed(seed)
    if not isinstance(check, bool):
        raise TypeError(f"check: expected True or False, got {describe(check)}")
    predict = _as_predict(predict)
    rows, schema = _table(data, feature_names, categorical, classes)
    x = _row(x, schema)
    z = _neighbourhood(predict, x, rows, schema, n_neighbors, generations, np.random.default_rng(seed))
    labels = _labels_of(predict, z)
    y_x = _labels_of(predict, x[None])[0]
    scale = _scale(rows)
    if np.unique(labels).size == 1:
        other = rows[_labels_of(predict, rows) != labels[0]]
        z = np.vstack([z, other[np.argsort(mixed_distance(x, other, schema, scale), kind="stable")[:100]]])
        labels = _labels_of(predict, z)
    surrogate = _fit_tree(z, labels, schema, seed, max_depth=max_depth, min_samples_leaf=min_samples_leaf)
    rule = surrogate.rule_for(x)
    hit = bool(surrogate.predict(x[None])[0] == y_x)
    phi, moved = counterfactual_rules(x, surrogate, schema.outcome(int(y_x)), z, predict, check, scale)
    moved = np.array(moved).reshape(-1, len(x))
    return LocalExplanation(x, rule, phi, moved, surrogate.fidelity, hit, z, labels, surrogate)


# ----------------------------------------------------------------------------- fuzzy sets and granules


def _rise(x: np.ndarray, a: float, b: float) -> np.ndarray:
    """0 up to a, 1 from b on, linear in between (a step at a when a == b)."""
    if b <= a:
        return (x >= a).astype(float)
    return np.clip((x - a) / (b - a), 0.0, 1.0)


def trapezoidal(x, a: float, b: float, c: float, d: float) -> np.ndarray:
    """Trapezoidal membership: 0 outside [a, d], 1 on [b, c], linear on the flanks. Chapter 05.

    ``a = b = -inf`` (or ``c = d = inf``) gives an open shoulder: 1 all the way to the left (right).
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
    """Linguistic granules of one feature: overlapping fuzzy sets, one per word, peaks at ``centres``. Chapter 05.

    The first word is a left shoulder (1 up to the first centre), the last a right shoulder, the others
    triangles from the previous centre to the next: the memberships of a value add up to 1 (a Ruspini
    partition), so a value is, say, 0.3 MEDIUM and 0.7 HIGH.
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
    [v - 1/2, v + 1/2]. Chapter 05.
    """
    if isinstance(words, (str, bool)):
        raise TypeError(f"words: expected a number of words or a list of words, got {describe(words)}")
    words = _default_words(words) if isinstance(words, int) else tuple(words)
    values = _floats(values, "values", "an array of numbers").reshape(-1)
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
    predict = _as_predict(predict)
    rows, schema = _table(data, feature_names, categorical, classes)
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
    labels = _labels_of(predict, rows)
    n_classes = max(len(schema.classes), int(labels.max()) + 1)
    mu = {j: variables[j].memberships(rows[:, j]) for j in columns}
    premises = np.unique(np.stack([mu[j].argmax(1) for j in columns], 1), axis=0)
    firing = np.stack([np.prod([mu[j][:, w] for j, w in zip(columns, p)], 0) for p in premises], 1)
    beta = np.stack([firing[labels == k].sum(0) for k in range(n_classes)], 1)  # (R, K)
    best = beta.argmax(1)
    others = (beta.sum(1) - beta.max(1)) / max(n_classes - 1, 1)
    weight = (beta.max(1) - others) / np.where(beta.sum(1) > 0, beta.sum(1), 1.0)
    rules = [
        FuzzyRule(
            columns, tuple(int(w) for w in p), int(k), float(c), _rule_text(columns, p, int(k), variables, schema, c)
        )
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
    """Zadeh's fuzzy graph f* = union_i A_i x B_i of a function of one variable (the survey's figure 7).

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
        mu_b = np.stack(
            [
                trapezoidal(y.reshape(-1), lo, core[0], core[1], hi)
                for (_, core), (lo, hi) in zip(self.patches, self.supports)
            ],
            1,
        )
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
    rules = [f"IF x is {w} THEN y is about {_number(h)}" for w, h in zip(a.words, heights)]
    return FuzzyGraph(a, heights, patches, supports, rules)


def _values_of(f: Callable[[np.ndarray], np.ndarray], points: np.ndarray) -> np.ndarray:
    """f at ``points`` (L,), as float64 (L,); a constant f may return one number."""
    values = _floats(f(points), "f", "a function returning numbers")
    values = np.broadcast_to(values, points.shape) if values.ndim == 0 else values
    if values.shape != points.shape or not np.isfinite(values).all():
        raise ValueError(
            f"f: expected finite values, one per point of an array {points.shape} in [low, high], "
            f"got {describe(values)}"
        )
    return values


# ----------------------------------------------------------------------------- rules for a CNN


@dataclass
class Concepts:
    """The filters of a layer named by the shape whose ground-truth masks they overlap best. Chapter 05.

    Attributes
    ----------
    iou : tensor (C, K), IoU of filter c's thresholded, upsampled maps with the masks of class k's shapes
    selectivity : tensor (C,), class selectivity of the pooled activation, (mu_max - mu_rest) / (mu_max + mu_rest)
    preferred : tensor (C,), the class with the largest mean pooled activation
    thresholds : tensor (C,), the activation above which a filter counts as on
    labels : per filter, the class name of its best IoU, or "none" below ``min_iou``
    names : per filter, ``"concept c (label)"``
    """

    iou: torch.Tensor
    selectivity: torch.Tensor
    preferred: torch.Tensor
    thresholds: torch.Tensor
    labels: list[str]
    names: list[str]


def _pooled(maps: torch.Tensor) -> torch.Tensor:
    """The global maxima (N, C) of maps (N, C, *positions), or a ValueError for a layer without positions."""
    if maps.ndim < 3:
        raise ValueError(
            f"layer: expected a convolutional layer with outputs (N, C, h, w) or (N, C, L), got {describe(maps)}"
        )
    return maps.flatten(2).amax(2)


@contract
def concept_activations(model: nn.Module, x: torch.Tensor, *, layer="features", batch_size: int = 256):
    """One forward pass: the model's labels (N,), its maps (N, C, h, w) at ``layer`` and their global maxima (N, C).

    The maximum over positions says how strongly a concept is present anywhere in the image; these
    pooled activations are the inputs of ``concept_rules`` and ``FuzzyHead``. A 1-D CNN's maps (N, C, L)
    are pooled over time the same way. Chapter 05.
    """
    logits, maps = feature_maps(model, x, layer, batch_size)
    return logits.argmax(1), maps, _pooled(maps)


def dissect(
    maps: torch.Tensor, data, *, quantile: float = DISSECTION_QUANTILE, min_iou: float = 0.04, batch_size: int = 64
) -> Concepts:
    """Name the filters by network dissection (Bau, Zhou, Khosla, Oliva & Torralba 2017).

    ``maps`` (N, C, h, w) are a layer's activations on the images of ``data`` (a ``data.shapes`` batch;
    see ``concept_activations``), or (N, C, l) on the series of a ``data.timeseries`` batch. Filter c is on
    where its map, upsampled bilinearly to the image, exceeds T_c, the ``quantile`` of its activations over
    the data (upsampled as ``occlusion.resize`` does, ``batch_size`` images at a time). Its IoU with class k is
    sum_n |on_n & L_n^k| / sum_n |on_n | L_n^k|, L^k the shape mask on the images of class k and empty on
    the others, so it rewards filters that fire on the shape, and only on that class. A filter gets the
    label of its best class if that IoU reaches ``min_iou`` (Bau et al.'s 0.04). Chapter 05.
    """
    if not (hasattr(data, "masks") and hasattr(data, "labels") and hasattr(data, "classes")):
        raise TypeError(f"data: expected a data.shapes batch with masks, labels and classes, got {describe(data)}")
    n_positions = data.masks.ndim - 1  # 2 for images, 1 for series
    if not (isinstance(maps, torch.Tensor) and maps.ndim == n_positions + 2 and maps.shape[0] == len(data.labels)):
        layout = "C, h, w" if n_positions == 2 else "C, l"
        raise ValueError(
            f"maps: expected activations ({len(data.labels)}, {layout}), one per sample of data, got {describe(maps)}"
        )
    if not 0 < quantile < 1:
        raise ValueError(f"quantile: expected a number in (0, 1), got {quantile!r}")
    check_positive_int("batch_size", batch_size)
    maps = maps.detach().cpu()
    k, n_filters = len(data.classes), maps.shape[1]
    thresholds = torch.quantile(maps.transpose(0, 1).reshape(n_filters, -1).float(), quantile, dim=1)
    inter, on_area = torch.zeros(n_filters, k), torch.zeros(n_filters)
    size = tuple(data.masks.shape[1:])
    for part in batch_slices(maps.shape[0], batch_size):
        small = maps[part].float()
        up = resize(small.reshape(-1, *small.shape[2:]), size).view(*small.shape[:2], -1)  # (n, C, H W)
        on = (up > thresholds.view(1, -1, 1)).float()
        on_area += on.sum((0, 2))
        inter.index_add_(
            1, data.labels[part], torch.bmm(on, data.masks[part].flatten(1).float().unsqueeze(2))[..., 0].T
        )
    mask_area = torch.zeros(k).index_add_(0, data.labels, data.masks.flatten(1).sum(1).float())
    iou = inter / (on_area[:, None] + mask_area[None] - inter).clamp(min=1)
    pooled = _pooled(maps)
    means = torch.stack([pooled[data.labels == c].mean(0) for c in range(k)], 1)  # (C, K)
    top = means.max(1)
    rest = (means.sum(1) - top.values) / max(k - 1, 1)
    selectivity = (top.values - rest) / (top.values + rest).clamp(min=1e-12)
    labels = [data.classes[int(c)] if value >= min_iou else "none" for value, c in zip(*iou.max(1))]
    names = [f"concept {j} ({label})" for j, label in enumerate(labels)]
    return Concepts(iou, selectivity, top.indices, thresholds, labels, names)


def _class_labels(labels, n: int) -> torch.Tensor:
    """``labels`` checked to be an integer tensor of n class indices >= 0, as int64."""
    if not (isinstance(labels, torch.Tensor) and not labels.is_floating_point() and labels.dtype != torch.bool):
        raise TypeError(f"labels: expected an integer tensor ({n},) of class indices, got {describe(labels)}")
    if labels.shape != (n,) or (labels < 0).any():
        raise ValueError(f"labels: expected {n} class indices >= 0, one per row, got {describe(labels)}")
    return labels.long()


def _activations(z, name: str) -> torch.Tensor:
    """``z`` checked to be a finite float tensor (N, D) with N >= 1, detached."""
    if not (isinstance(z, torch.Tensor) and z.is_floating_point() and z.ndim == 2):
        raise TypeError(f"{name}: expected a float tensor (N, D) of pooled activations, got {describe(z)}")
    if z.shape[0] == 0 or not torch.isfinite(z).all():
        raise ValueError(f"{name}: expected at least one row of finite values, got {describe(z)}")
    return z.detach()


def concept_rules(
    pooled: torch.Tensor,
    labels: torch.Tensor,
    *,
    names: Sequence[str] | None = None,
    classes: Sequence[str] = (),
    max_depth: int | None = 3,
    seed: int = 0,
) -> Surrogate:
    """Rules over concepts that mimic a CNN: a tree of depth ``max_depth`` fitted to the CNN's ``labels`` on the
    pooled activations (``concept_activations``), conditions such as ``concept 12 (circle) > 3.1``.

    ``names`` are the concepts' names (``Concepts.names``), ``classes`` the outcome names; ``max_depth`` None
    grows the tree until its leaves are pure. Measure fidelity on other images with ``Surrogate.score``.
    Chapter 05.
    """
    pooled = _activations(pooled, "pooled")
    labels = _class_labels(labels, pooled.shape[0])
    names = tuple(names) if names is not None else tuple(f"concept {j}" for j in range(pooled.shape[1]))
    if len(names) != pooled.shape[1] or len(set(names)) != len(names):
        raise ValueError(f"names: expected {pooled.shape[1]} distinct names (one per filter), got {len(names)}")
    if max_depth is not None:
        check_positive_int("max_depth", max_depth)
    seed = check_seed(seed)
    schema = Schema(names, {}, tuple(classes))
    return _fit_tree(pooled.double().cpu().numpy(), labels.cpu().numpy(), schema, seed, max_depth=max_depth)


class FuzzyHead(nn.Module):
    """An ANFIS-style rule layer (Jang 1993) over pooled concept activations z (N, D). Chapter 05.

    Rule r of class k(r) has one Gaussian membership per input, centre c_rd and width sigma_rd, on the
    standardized inputs u = (z - mean) / std. Its firing strength is the product of the memberships,
    computed in log space so 64 factors cannot underflow:

    log w_r(u) = -1/2 sum_d ((u_d - c_rd) / sigma_rd)^2.

    The output for class k is log sum_{r of class k} w_r: its softmax is the summed normalized firing
    strength sum_{r of class k} w_r / sum_r' w_r' (ANFIS layers 3 to 5 with constant one-hot consequents).
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
        quadratic = (
            (u * u) @ precision.T
            - 2 * u @ (self.centres * precision).T
            + (self.centres**2 * precision).sum(1)
        )
        return (
            -0.5 * quadratic
        )  # the sum over d of ((u_d - c_rd) / sigma_rd)^2, expanded into two products

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
    z = _activations(z, "z")
    labels = _class_labels(labels, z.shape[0]).to(z.device)
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
        pooled = _pooled(output(self.cnn, x, self.layer))
        if isinstance(self.head, FuzzyHead) and pooled.shape[1] != self.head.centres.shape[1]:
            raise ValueError(
                f"head: expected a FuzzyHead over the {pooled.shape[1]} channels of layer {self.layer!r}, "
                f"got one over {self.head.centres.shape[1]} inputs"
            )
        return self.head(pooled)
