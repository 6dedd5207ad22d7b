"""Logic rules: decision and counterfactual rules, surrogate trees, and rules for a CNN.

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
- **Rules for a CNN**: the filters of the last convolutional block become *concepts*, named by the shape
  whose ground-truth mask their activations overlap best (network dissection, Bau, Zhou, Khosla, Oliva &
  Torralba 2017), and a tree over their pooled activations mimics the CNN. One forward pass
  (``concept_activations``) feeds ``dissect``, ``concept_rules`` and ``fuzzy.fit_fuzzy_head``.

Tables are numpy arrays (N, F) of floats, categorical columns holding integer codes, described by a
``Schema`` (names, the code names of the categorical columns, the outcome names); a ``data.loans`` table
carries its own. The black box ``predict`` maps such rows to integer labels; a ``torch.nn.Module`` is
accepted and wrapped with ``black_box``. Introduced in chapter 05.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .core import batch_slices, check_model, check_positive_int, check_seed, contract, describe, model_guard, predict
from .layers import feature_maps
from .occlusion import resize

if TYPE_CHECKING:
    from sklearn.tree import DecisionTreeClassifier

ALPHA = (0.5, 0.5)  # LORE fitness weights a1 (similarity) and a2 (outcome)
ETA = 1.0  # LORE: similarity at or above eta counts as a copy of x and scores 0
CROSSOVER, MUTATION, TOURNAMENT, HALL_OF_FAME = 0.5, 0.2, 3, 0.1  # LORE's genetic settings (DEAP eaSimple)
POOL_DRAWS = 1000  # LORE: extra normal draws in the value pool of a continuous feature
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
        codes = lambda j: range(len(self.categorical[j])) if j in self.categorical else [None]
        return [(j, k) for j in range(len(self.names)) for k in codes(j)]

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


def as_floats(value, name: str, expected: str) -> np.ndarray:
    """``value`` (array, tensor or nested lists of numbers) as a float64 numpy array, or a TypeError naming it
    (argument ``name``, ``expected`` what it should have been). Chapter 05."""
    try:
        return np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected {expected}, got {describe(value)}") from None


def read_table(data, feature_names=None, categorical=None, classes=None) -> tuple[np.ndarray, Schema]:
    """Rows (N, F) as float64 and their schema, from a ``data.loans`` table or an array of rows with
    ``feature_names``, ``categorical`` (name -> code names) and ``classes``, checked. Chapter 05."""
    if hasattr(data, "features") and hasattr(data, "feature_names"):
        feature_names = feature_names or data.feature_names
        categorical = categorical if categorical is not None else data.categorical
        classes = classes or data.classes
        data = data.features
    rows = as_floats(data, "data", "a data.loans table or an array of rows (N, F)")
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
    row = as_floats(x, name, f"one row of {len(schema.names)} numbers").reshape(-1)
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
    like = next((p for p in model.parameters() if p.is_floating_point()), torch.empty(0))  # the dtype and device

    def labels(rows) -> np.ndarray:
        x = torch.as_tensor(as_floats(rows, "rows", "rows (N, F) of numbers")).to(like)
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


def labels_of(predict: Predict | nn.Module, rows: np.ndarray) -> np.ndarray:
    """The black box's labels of ``rows`` (N, F), checked to be class indices 0, 1, ... (bools and whole floats
    are taken as such); ``predict`` is a function rows -> labels or a ``torch.nn.Module`` (see ``black_box``).
    Chapter 05."""
    labels = np.asarray(_as_predict(predict)(rows))
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


def short_number(value: float) -> str:
    """5000 -> '5k', 25.5 -> '25.5': the survey's short numbers. Chapter 05."""
    return f"{value / 1000:.4g}k" if abs(value) >= 1000 else f"{value:.4g}"


@dataclass(frozen=True)
class Condition:
    """One condition ``feature op value``: op is '<=', '>' or '>=' (numbers), '=' or '!=' (categories).

    ``codes`` holds the code names of a categorical feature (empty for a number); ``value`` is then a code. Chapter 05.
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
        shown = self.codes[int(self.value)] if self.codes else short_number(self.value)
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
        on_column = [c for c in self.conditions if c.column == column]
        allowed = [k for k in range(n_codes) if all(c.holds(np.full((1, column + 1), k))[0] for c in on_column)]
        if not allowed:
            raise ValueError(f"rule: no code of column {column} satisfies {self}")
        return float(min(allowed, key=lambda k: (abs(k - value), k)))


def merge(conditions: Sequence[Condition]) -> tuple[Condition, ...]:
    """The same premise with at most one interval per number and one set per category, in column order.

    ``x <= 5, x <= 3`` becomes ``x <= 3``; ``job != none, job != clerk`` stays (two excluded codes) unless
    one code is left, which becomes ``job = that``; any ``=`` makes the ``!=`` on its column redundant. Chapter 05.
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
                code = equal[0].value if equal else left[0]
                merged.append(Condition(first.feature, column, "=", float(code), first.codes))
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
    rows, schema = read_table(data, feature_names, categorical, classes)
    if max_depth is not None:
        check_positive_int("max_depth", max_depth)
    check_positive_int("min_samples_leaf", min_samples_leaf)
    seed = check_seed(seed)
    labels = labels_of(predict, rows)
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
    plus ``POOL_DRAWS`` draws from N(mean, std), kept only inside the observed range. Chapter 05."""
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
    fitness = lore_fitness(x, population, y_x, labels_of(predict, population), same, schema, scale)
    fame, fame_fitness = _hall_of_fame(population, fitness, max(1, int(HALL_OF_FAME * size)))
    for _ in range(generations):
        population = _mutate(_crossover(population[_tournament(fitness, rng)], rng), pools, rng)
        fitness = lore_fitness(x, population, y_x, labels_of(predict, population), same, schema, scale)
        rows, values = np.vstack([fame, population]), np.concatenate([fame_fitness, fitness])
        fame, fame_fitness = _hall_of_fame(rows, values, len(fame))
    return _above_largest_gap(np.vstack([population, fame]), np.concatenate([fitness, fame_fitness]))


def _neighbourhood(predict, x, y_x, rows, schema, scale, n_neighbors, generations, rng) -> np.ndarray:
    """LORE's neighbourhood Z of x (outcome y_x): the same-outcome population, then the different-outcome one."""
    pools = value_pools(rows, schema, rng)
    settings = dict(size=n_neighbors // 2, generations=generations, rng=rng)
    return np.vstack([_population(predict, x, y_x, pools, schema, scale, same=s, **settings) for s in (True, False)])


def _moves(x: np.ndarray, delta: Rule, z_leaf: np.ndarray) -> np.ndarray:
    """x with the columns of ``delta`` taken from each row of the leaf: moves that reach the leaf."""
    columns = sorted({c.column for c in delta.conditions})
    rows = np.repeat(x[None], len(z_leaf), 0)
    rows[:, columns] = z_leaf[:, columns]
    return rows


def counterfactual_rules(x, surrogate: Surrogate, outcome: str, z, predict, check: bool, scale):
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
    y_x = labels_of(predict, x[None])[0]
    for delta, moves in candidates.items():
        moves = moves[np.argsort(np.abs((moves - x) / scale).sum(1), kind="stable")]
        if check:
            moves = moves[labels_of(predict, moves) != y_x]
        if len(moves):
            found[delta] = moves[0]
    if not found:
        return [], []
    fewest = min(map(len, found))
    nearest_first = lambda r: (float(np.abs((found[r] - x) / scale).sum()), str(r))
    order = sorted((r for r in found if len(r) == fewest), key=nearest_first)
    if check:  # the confirmed move becomes the rule's bound, so that Rule.apply(x) reproduces it
        confirmed, shapes = {}, set()
        # nearest first: a farther move of the same features in the same direction adds nothing
        for rule in order:
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
    rows, schema = read_table(data, feature_names, categorical, classes)
    x = _row(x, schema)
    y_x, std = labels_of(predict, x[None])[0], rows.std(0)
    scale = np.where(std > 0, std, 1.0)  # the standard deviation of each column, 1 where it is 0
    z = _neighbourhood(predict, x, y_x, rows, schema, scale, n_neighbors, generations, np.random.default_rng(seed))
    labels = labels_of(predict, z)
    if np.unique(labels).size == 1:
        other = rows[labels_of(predict, rows) != labels[0]]
        z = np.vstack([z, other[np.argsort(mixed_distance(x, other, schema, scale), kind="stable")[:100]]])
        labels = labels_of(predict, z)
    surrogate = _fit_tree(z, labels, schema, seed, max_depth=max_depth, min_samples_leaf=min_samples_leaf)
    rule = surrogate.rule_for(x)
    hit = bool(surrogate.predict(x[None])[0] == y_x)
    phi, moved = counterfactual_rules(x, surrogate, schema.outcome(int(y_x)), z, predict, check, scale)
    moved = np.array(moved).reshape(-1, len(x))
    return LocalExplanation(x, rule, phi, moved, surrogate.fidelity, hit, z, labels, surrogate)


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


def global_max_pool(maps: torch.Tensor) -> torch.Tensor:
    """The global maxima (N, C) of maps (N, C, *positions), or a ValueError for a layer without positions.
    Chapter 05."""
    if maps.ndim < 3:
        raise ValueError(
            f"layer: expected a convolutional layer with outputs (N, C, h, w) or (N, C, L), got {describe(maps)}"
        )
    return maps.flatten(2).amax(2)


@contract
def concept_activations(model: nn.Module, x: torch.Tensor, *, layer="features", batch_size: int = 256):
    """One forward pass: the model's labels (N,), its maps (N, C, h, w) at ``layer`` and their global maxima (N, C).

    The maximum over positions says how strongly a concept is present anywhere in the image; these
    pooled activations are the inputs of ``concept_rules`` and ``fuzzy.FuzzyHead``. A 1-D CNN's maps (N, C, L)
    are pooled over time the same way. Chapter 05.
    """
    logits, maps = feature_maps(model, x, layer, batch_size)
    return logits.argmax(1), maps, global_max_pool(maps)


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
        on_mask = torch.bmm(on, data.masks[part].flatten(1).float().unsqueeze(2))[..., 0]  # (n, C)
        inter.index_add_(1, data.labels[part], on_mask.T)
    mask_area = torch.zeros(k).index_add_(0, data.labels, data.masks.flatten(1).sum(1).float())
    iou = inter / (on_area[:, None] + mask_area[None] - inter).clamp(min=1)
    pooled = global_max_pool(maps)
    means = torch.stack([pooled[data.labels == c].mean(0) for c in range(k)], 1)  # (C, K)
    top = means.max(1)
    rest = (means.sum(1) - top.values) / max(k - 1, 1)
    selectivity = (top.values - rest) / (top.values + rest).clamp(min=1e-12)
    labels = [data.classes[int(c)] if value >= min_iou else "none" for value, c in zip(*iou.max(1))]
    names = [f"concept {j} ({label})" for j, label in enumerate(labels)]
    return Concepts(iou, selectivity, top.indices, thresholds, labels, names)


def check_pooled(z, labels, name: str = "pooled") -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled activations ``z`` (argument ``name``), checked to be a finite float tensor (N, D) with N >= 1, and
    their ``labels``, an integer tensor of N class indices >= 0: z detached and the labels as int64. Chapter 05."""
    if not (isinstance(z, torch.Tensor) and z.is_floating_point() and z.ndim == 2):
        raise TypeError(f"{name}: expected a float tensor (N, D) of pooled activations, got {describe(z)}")
    if z.shape[0] == 0 or not torch.isfinite(z).all():
        raise ValueError(f"{name}: expected at least one row of finite values, got {describe(z)}")
    n = z.shape[0]
    if not (isinstance(labels, torch.Tensor) and not labels.is_floating_point() and labels.dtype != torch.bool):
        raise TypeError(f"labels: expected an integer tensor ({n},) of class indices, got {describe(labels)}")
    if labels.shape != (n,) or (labels < 0).any():
        raise ValueError(f"labels: expected {n} class indices >= 0, one per row, got {describe(labels)}")
    return z.detach(), labels.long()


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
    grows the tree until its leaves are pure. Measure fidelity on other images with ``Surrogate.score``. Chapter 05.
    """
    pooled, labels = check_pooled(pooled, labels)
    names = tuple(names) if names is not None else tuple(f"concept {j}" for j in range(pooled.shape[1]))
    if len(names) != pooled.shape[1] or len(set(names)) != len(names):
        raise ValueError(f"names: expected {pooled.shape[1]} distinct names (one per filter), got {len(names)}")
    if max_depth is not None:
        check_positive_int("max_depth", max_depth)
    seed = check_seed(seed)
    schema = Schema(names, {}, tuple(classes))
    return _fit_tree(pooled.double().cpu().numpy(), labels.cpu().numpy(), schema, seed, max_depth=max_depth)
