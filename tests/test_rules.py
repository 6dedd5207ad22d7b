"""rules: rules as data, trees and their paths, LORE, surrogate trees, rules for a CNN."""

import copy
import itertools

import numpy as np
import pytest
import torch
from conftest import assert_unchanged, state_of
from sklearn.tree import DecisionTreeClassifier
from torch import nn

from xai_course import data, models, rules
from xai_course.occlusion import resize

JOB = data.LOAN_CATEGORICAL["job"]
RULE_FEATURES = ("age", "job", "income", "amount", "duration", "car")  # housing and children play no part


def _c(feature, column, op, value, codes=()):
    return rules.Condition(feature, column, op, float(value), tuple(codes))


def _survey_rule():
    return rules.Rule((_c("age", 0, "<=", 25), _c("job", 1, "=", 0, JOB), _c("amount", 3, ">", 5000)), "deny")


@pytest.fixture(scope="module")
def loans():
    return data.loans(1500, "train", seed=11)


@pytest.fixture(scope="module")
def mlp():
    return models.load("loan_mlp")


def _true_rule(rows) -> np.ndarray:
    """The known rule that generated the loan labels, as a black box rows -> labels (1 deny)."""
    return data.loan_decision(torch.as_tensor(np.asarray(rows), dtype=torch.float32)).long().numpy()


# ----------------------------------------------------------------------------- rules as data


def test_rule_reads_as_the_survey_writes_it():
    rule = _survey_rule()
    assert str(rule) == "{age <= 25, job = none, amount > 5k} -> deny"
    assert rule.as_if() == "IF age <= 25 AND job = none AND amount > 5k THEN deny"
    assert len(rule) == 3 and str(_c("income", 2, ">", 900.5)) == "income > 900.5"


def _holds_by_loop(rule, rows):
    ops = {"<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}
    ops |= {"=": lambda a, b: a == b, "!=": lambda a, b: a != b}
    return np.array([all(ops[c.op](row[c.column], c.value) for c in rule.conditions) for row in rows])


def _random_rule(rng, codes=JOB):
    conditions = []
    for column in rng.choice(4, size=rng.integers(1, 4), replace=False):
        if column == 1:
            conditions.append(_c("job", 1, rng.choice(["=", "!="]), rng.integers(len(codes)), codes))
        else:
            conditions.append(_c(f"x{column}", int(column), rng.choice(["<=", ">", ">="]), rng.normal()))
    return rules.Rule(rules.merge(conditions), "deny")


def test_rule_holds_agrees_with_a_loop_over_rows():
    rng = np.random.default_rng(0)
    rows = np.column_stack([rng.normal(size=200), rng.integers(4, size=200), rng.normal(size=(200, 2))])
    for _ in range(30):
        rule = _random_rule(rng)
        np.testing.assert_array_equal(rule.holds(rows), _holds_by_loop(rule, rows))
    assert rules.Rule((), "grant").holds(rows).all()


def test_apply_moves_only_falsified_values_and_only_to_the_boundary():
    rng = np.random.default_rng(1)
    rows = np.column_stack([rng.normal(size=300), rng.integers(4, size=300), rng.normal(size=(300, 2))])
    for _ in range(30):
        rule = _random_rule(rng)
        moved = rule.apply(rows)
        assert rule.holds(moved).all()
        for c in rule.conditions:
            kept = c.holds(rows)
            np.testing.assert_array_equal(moved[kept, c.column], rows[kept, c.column])
            changed = moved[~kept, c.column]
            if c.op in ("<=", ">="):
                assert (changed == c.value).all()
            elif c.op == ">":
                assert (changed == np.nextafter(c.value, np.inf)).all()
            elif c.op == "!=":  # the nearest allowed code, by enumeration
                for old, new in zip(rows[~kept, c.column], changed):
                    on_job = [d for d in rule.conditions if d.column == 1]
                    allowed = [k for k in range(4) if all(d.holds(np.array([[0.0, k]]))[0] for d in on_job)]
                    assert new == min(allowed, key=lambda k: (abs(k - old), k))
        untouched = sorted(set(range(4)) - {c.column for c in rule.conditions})
        np.testing.assert_array_equal(moved[:, untouched], rows[:, untouched])
    shifted = rules.Rule((_c("x0", 0, ">", 1.0), _c("x2", 2, "<=", 0.0)), "deny").apply([0.0, 0, 1.0, 0], margin=0.5)
    np.testing.assert_array_equal(shifted, [1.5, 0, -0.5, 0])


def test_merge_keeps_the_premise_and_one_interval_per_feature():
    rng = np.random.default_rng(2)
    grid = np.array(list(itertools.product(np.linspace(-2, 2, 21), range(4))))
    for _ in range(100):
        raw = [_c("x0", 0, rng.choice(["<=", ">", ">="]), rng.normal()) for _ in range(rng.integers(1, 5))]
        raw += [_c("job", 1, rng.choice(["=", "!="]), rng.integers(4), JOB) for _ in range(rng.integers(0, 3))]
        merged = rules.merge(raw)
        before, after = rules.Rule(tuple(raw), "deny"), rules.Rule(merged, "deny")
        if not before.holds(grid).any():
            continue  # a contradiction: merge need not keep it
        np.testing.assert_array_equal(after.holds(grid), before.holds(grid))
        for op in ("<=", ">", ">=", "="):
            assert sum(c.op == op for c in merged) <= 1


# ----------------------------------------------------------------------------- trees


def test_tree_paths_partition_the_rows_as_sklearn_routes_them(loans):
    rows, schema = rules.read_table(loans)
    labels = ((rows[:, 1] == 0) & (rows[:, 3] > 5000)) | ((rows[:, 5] == 1) & (rows[:, 2] > 3000))  # job, car
    tree = DecisionTreeClassifier(max_depth=5, random_state=0).fit(schema.encode(rows), labels)
    paths = rules.tree_paths(tree, schema)
    leaf = tree.apply(schema.encode(rows))
    indicator = tree.decision_path(schema.encode(rows)).toarray().astype(bool)
    for node, conditions in paths.items():
        np.testing.assert_array_equal(rules.Rule(conditions, "").holds(rows), leaf == node)
        depth = indicator[leaf == node].sum(1) - 1  # nodes on the path minus the leaf: the number of splits
        assert (len(conditions) <= depth).all()
    assert set(paths) == set(np.flatnonzero(tree.tree_.children_left < 0))
    assert any(c.op in ("=", "!=") for conditions in paths.values() for c in conditions)
    names = schema.encoded_names()
    assert len(names) == schema.encode(rows).shape[1] == len(schema.one_hot_columns())
    assert names[:5] == ["age", "job = none", "job = clerk", "job = skilled", "job = manager"]


def test_surrogate_finds_the_rule_features_and_scores_like_a_count(loans, mlp):
    s = rules.surrogate_tree(mlp, loans, max_depth=4)
    assert {"age", "income", "amount", "duration"} <= set(s.features) <= set(RULE_FEATURES)
    labels = rules.black_box(mlp)(loans.features)
    assert s.fidelity == pytest.approx(sum(a == b for a, b in zip(s.predict(loans.features), labels)) / len(labels))
    test = data.loans(1000, "test", seed=5)
    assert s.score(test.features, rules.black_box(mlp)(test.features)) >= 0.9
    for row in loans.features[:50].numpy():
        rule = s.rule_for(row)
        assert rule.holds(row)[0] and rule.outcome == loans.classes[s.predict(row)[0]]
    shallow = rules.surrogate_tree(_true_rule, loans, max_depth=1)
    assert len(shallow.rules) == 2 and shallow.fidelity < s.fidelity


# ----------------------------------------------------------------------------- LORE


def test_mixed_distance_against_the_formula_row_by_row(loans):
    rows, schema = rules.read_table(loans)
    scale = rows.std(0)
    x, z = rows[0], rows[1:40]
    d = rules.mixed_distance(x, z, schema, scale)
    cat, num = [1, 5, 6], [0, 2, 3, 4, 7]
    for row, value in zip(z, d):
        simple_match = sum(row[j] != x[j] for j in cat) / 3
        u, v = x[num] / scale[num], row[num] / scale[num]
        euclid = 0.5 * np.var(u - v) / (np.var(u) + np.var(v))
        assert value == pytest.approx(3 / 8 * simple_match + 5 / 8 * euclid)
    assert rules.mixed_distance(x, x[None], schema, scale)[0] == 0


def test_genetic_operators_against_their_definitions():
    rng = np.random.default_rng(3)
    fitness = rng.random(50)
    winners = rules._tournament(fitness, np.random.default_rng(4))
    draws = np.random.default_rng(4).integers(50, size=(50, rules.TOURNAMENT))
    np.testing.assert_array_equal(winners, [d[np.argmax(fitness[d])] for d in draws])
    parents = rng.normal(size=(40, 8))
    children = rules._crossover(parents, np.random.default_rng(5))
    for i in range(0, 40, 2):
        a, b, c, d = parents[i], parents[i + 1], children[i], children[i + 1]
        swapped = np.flatnonzero(c != a)
        assert np.array_equal(c[swapped], b[swapped]) and np.array_equal(d[swapped], a[swapped])
        assert np.array_equal(np.sort(np.r_[c, d]), np.sort(np.r_[a, b]))
        if swapped.size:
            assert swapped.max() - swapped.min() + 1 == swapped.size, "one contiguous block"
    fitness = np.array([0.52, 0.1, 0.91, 0.12, 0.9, 0.5, 0.55])  # sorted, the largest gap is 0.12 -> 0.5
    assert sorted(rules._above_largest_gap(np.arange(7)[:, None], fitness)[:, 0]) == [0, 2, 4, 5, 6]
    assert len(rules._above_largest_gap(np.arange(3)[:, None], np.full(3, 0.5))) == 3


def test_lore_explains_a_known_rule(loans):
    black_box = lambda rows: ((np.asarray(rows)[:, 0] <= 25) & (np.asarray(rows)[:, 3] > 5000)).astype(int)
    x = np.array([22.0, 0, 900, 6000, 24, 0, 1, 0])
    e = rules.lore(black_box, x, loans, seed=1)
    assert e.rule.outcome == "deny" and e.hit and e.fidelity >= 0.95
    assert {c.feature for c in e.rule.conditions} >= {"age", "amount"}
    assert e.rule.holds(x)[0]
    flipped = {str(c) for rule in e.counterfactuals for c in rule.conditions}
    assert any(s.startswith("age >") for s in flipped) and any(s.startswith("amount <=") for s in flipped)
    assert all(len(r) == 1 and r.outcome == "grant" for r in e.counterfactuals)
    for rule, row in zip(e.counterfactuals, e.counterfactual_rows):
        assert rule.holds(row)[0] and black_box(row[None])[0] == 0
        assert set(np.flatnonzero(row != x)) <= {c.column for c in rule.conditions}
        np.testing.assert_array_equal(rule.apply(x), row)  # the confirmed move is the rule's minimal move
    raw = rules.lore(black_box, x, loans, seed=1, check=False)
    leaves = [set(r.conditions) for r in raw.surrogate.rules if r.outcome == "grant"]
    assert raw.counterfactuals and all(any(set(r.conditions) <= leaf for leaf in leaves) for r in raw.counterfactuals)
    again = rules.lore(black_box, x, loans, seed=1)
    assert str(again) == str(e) and np.array_equal(again.neighbourhood, e.neighbourhood)
    assert not np.array_equal(rules.lore(black_box, x, loans, seed=2).neighbourhood, e.neighbourhood)
    assert str(e).startswith("e = <r = {")


def test_lore_on_the_black_box_is_faithful_and_its_counterfactuals_flip_it(loans, mlp):
    before = state_of(mlp)
    test = data.loans(12, "test", seed=123)
    black_box = rules.black_box(mlp)
    explanations = [rules.lore(mlp, x, loans, seed=i) for i, x in enumerate(test.features)]
    assert np.mean([e.fidelity for e in explanations]) >= 0.9
    assert np.mean([e.hit for e in explanations]) >= 0.9
    valid = [bool(e.counterfactuals) and black_box(e.counterfactuals[0].apply(e.x)[None])[0] != black_box(e.x[None])[0]
             for e in explanations]  # fmt: skip
    assert np.mean(valid) >= 0.9
    for e in explanations:  # no checked counterfactual is a farther copy of another
        shapes = [
            tuple((c.column, c.op, c.value if c.codes else None) for c in r.conditions) for r in e.counterfactuals
        ]
        assert len(shapes) == len(set(shapes))
    assert_unchanged(before, mlp)


@pytest.mark.parametrize(
    "kwargs, error, name",
    [({"x": np.zeros(3)}, ValueError, "x:"), ({"predict": 3}, TypeError, "predict:"),
     ({"n_neighbors": 1}, ValueError, "n_neighbors:"), ({"data": np.zeros((0, 8))}, ValueError, "data:"),
     ({"categorical": {"colour": ("a",)}}, ValueError, "categorical:"), ({"seed": -1}, ValueError, "seed:")],
)  # fmt: skip
def test_lore_bad_input(kwargs, error, name, loans):
    arguments = {"predict": _true_rule, "x": loans.features[0], "data": loans, "n_neighbors": 20, **kwargs}
    with pytest.raises(error, match=name):
        rules.lore(**arguments, generations=1)


# ----------------------------------------------------------------------------- rules for a CNN


def test_dissect_against_an_explicit_count():
    g = torch.Generator().manual_seed(0)
    shapes = data.shapes(12, seed=3)
    maps = torch.rand(12, 5, 4, 4, generator=g)
    concepts = rules.dissect(maps, shapes, quantile=0.8, batch_size=5)
    for c in range(5):
        threshold = torch.quantile(maps[:, c].flatten(), 0.8)
        assert concepts.thresholds[c] == pytest.approx(threshold.item())
        for k in range(4):
            inter = union = 0
            for n in range(12):
                on = resize(maps[n, c][None], (64, 64))[0] > threshold
                truth = shapes.masks[n] & (shapes.labels[n] == k)
                inter += int((on & truth).sum())
                union += int((on | truth).sum())
            assert concepts.iou[c, k].item() == pytest.approx(inter / union, abs=1e-6)
    assert len(concepts.names) == 5 and concepts.names[0].startswith("concept 0 (")


def test_cnn_concept_rules_mimic_the_cnn():
    cnn = models.load("shapes_cnn")
    before = state_of(cnn)
    train, test = data.shapes(300, "train", seed=5), data.shapes(300, "test", seed=123)
    labels, maps, pooled = rules.concept_activations(cnn, train.images)
    test_labels, _, test_pooled = rules.concept_activations(cnn, test.images)
    concepts = rules.dissect(maps, train)
    assert {"circle", "triangle", "cross"} <= set(concepts.labels)
    tree = rules.concept_rules(pooled, labels, names=concepts.names, classes=train.classes, max_depth=3)
    assert tree.score(test_pooled.double().numpy(), test_labels.numpy()) >= 0.9
    assert all(c.feature.startswith("concept ") for rule in tree.rules for c in rule.conditions)
    assert_unchanged(before, cnn)


# ----------------------------------------------------------------------------- other models, tables and CNNs


def _tabular_net(n_features=3, n_classes=2):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(n_features, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, n_classes)
    ).train()  # fmt: skip


def test_black_box_runs_the_model_in_eval_mode_and_leaves_it_as_it_was():
    net, rows = _tabular_net(n_classes=4), np.random.default_rng(0).normal(size=(40, 3))
    before, black_box = state_of(net), rules.black_box(net)
    labels = black_box(rows)
    assert_unchanged(before, net)  # BatchNorm statistics, train flags
    reference = copy.deepcopy(net).eval()
    expected = [int(reference(torch.tensor(row, dtype=torch.float32)[None]).argmax()) for row in rows]
    assert labels.tolist() == expected and np.array_equal(black_box(rows), labels)  # no Dropout
    assert black_box(rows[0]) == expected[0]  # one row, one label
    assert np.array_equal(rules.labels_of(net, rows), labels)  # a model is wrapped with black_box
    with pytest.raises(ValueError, match="rows:"):
        black_box(np.zeros((2, 5)))
    assert_unchanged(before, net)
    with pytest.raises(ValueError, match="model:"):
        rules.black_box(nn.Sequential(nn.Linear(3, 1), nn.Flatten(0)))(rows)


def test_black_box_labels_may_be_bools_or_whole_floats_but_not_negative(loans):
    by_int = rules.surrogate_tree(_true_rule, loans, max_depth=2)
    by_bool = rules.surrogate_tree(lambda r: _true_rule(r).astype(bool), loans, max_depth=2)
    by_float = rules.surrogate_tree(lambda r: _true_rule(r).astype(float), loans, max_depth=2)
    assert [str(r) for r in by_bool.rules] == [str(r) for r in by_float.rules] == [str(r) for r in by_int.rules]
    with pytest.raises(ValueError, match="predict:"):
        rules.surrogate_tree(lambda r: 2 * _true_rule(r) - 1, loans)  # -1 would name outcome classes[-1]
    with pytest.raises(ValueError, match="predict:"):
        rules.surrogate_tree(lambda r: _true_rule(r) + 0.5, loans)


def _check_counterfactuals(e, black_box):
    y = black_box(e.x[None])[0]
    assert e.rule.holds(e.x)[0] and e.fidelity == np.mean(
        e.surrogate.predict(e.neighbourhood) == e.neighbourhood_labels
    )
    for rule, row in zip(e.counterfactuals, e.counterfactual_rows):
        assert black_box(row[None])[0] != y and rule.holds(row)[0] and np.array_equal(rule.apply(e.x), row)


def test_lore_on_one_feature_on_categories_only_and_on_a_model_in_training_mode():
    rng = np.random.default_rng(1)
    one = rng.normal(size=(200, 1))
    threshold = lambda r: (np.asarray(r)[:, 0] > 0.3).astype(int)
    e = rules.lore(threshold, one[0], one, n_neighbors=100)
    assert e.counterfactuals and e.hit
    _check_counterfactuals(e, threshold)
    codes = {"a": ("p", "q", "r"), "b": tuple("vwxyz")}
    table = np.column_stack([rng.integers(3, size=300), rng.integers(5, size=300)]).astype(float)
    either = lambda r: ((np.asarray(r)[:, 0] == 1) | (np.asarray(r)[:, 1] >= 3)).astype(int)
    for i in range(3):
        e = rules.lore(either, table[i], table, n_neighbors=100, seed=i, feature_names=("a", "b"), categorical=codes)
        _check_counterfactuals(e, either)
    with pytest.raises(ValueError, match="x: column 'a'"):
        rules.lore(either, [7.0, 1.0], table, n_neighbors=20, feature_names=("a", "b"), categorical=codes)
    net = _tabular_net()
    before = state_of(net)
    first, again = (rules.lore(net, one[0].repeat(3), np.tile(one, 3), n_neighbors=60, seed=3) for _ in range(2))
    assert str(first) == str(again) and np.array_equal(first.neighbourhood, again.neighbourhood)
    assert_unchanged(before, net)


@pytest.mark.parametrize(
    "kwargs, error, name",
    [({"seed": -1}, ValueError, "seed:"), ({"seed": 1.5}, TypeError, "seed:"), ({"data": "rows"}, TypeError, "data:"),
     ({"feature_names": "abc"}, TypeError, "feature_names:"), ({"categorical": ["x0"]}, TypeError, "categorical:"),
     ({"feature_names": ("a", "a", "b")}, ValueError, "feature_names:")],
)  # fmt: skip
def test_surrogate_tree_bad_input(kwargs, error, name):
    arguments = {"predict": lambda r: (np.asarray(r)[:, 0] > 0).astype(int), "data": np.eye(3), **kwargs}
    with pytest.raises(error, match=name):
        rules.surrogate_tree(**arguments)


def test_conditions_and_moves_refuse_what_they_cannot_mean():
    with pytest.raises(ValueError, match="op:"):
        _c("x0", 0, "<", 3)  # would have been read as !=
    with pytest.raises(ValueError, match="op:"):
        _c("job", 1, "<=", 2, JOB)
    with pytest.raises(ValueError, match="value:"):
        _c("job", 1, "=", 7, JOB)
    empty = rules.Rule((_c("x0", 0, ">", 3), _c("x0", 0, "<=", 1)), "deny")
    with pytest.raises(ValueError, match="rule:"):
        empty.apply([2.0, 0.0])  # no value satisfies it: no row that falsifies it is returned
    narrow = rules.Rule((_c("x0", 0, ">", 3), _c("x0", 0, "<=", 3.5)), "deny")
    np.testing.assert_array_equal(narrow.apply([0.0, 0.0], margin=0.25), [3.25, 0.0])
    for margin in (1.0, -1.0, [1.0, 2.0, 3.0]):
        with pytest.raises(ValueError, match="rule:|margin:"):
            narrow.apply([0.0, 0.0], margin=margin)
    s = rules.surrogate_tree(lambda r: (np.asarray(r)[:, 0] > 0).astype(int), np.eye(3))
    with pytest.raises(ValueError, match="labels:"):
        s.score(np.eye(3), [1])


class _OtherCNN(nn.Module):
    """Not the course's CNN: one input channel, a container block with BatchNorm and an in-place ReLU."""

    def __init__(self, conv=nn.Conv2d, pool=nn.AdaptiveAvgPool2d):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(conv(1, 6, 3, padding=1), nn.ReLU(inplace=True))
        self.block = nn.Sequential(
            conv(6, 5, 3, padding=1), nn.BatchNorm2d(5) if conv is nn.Conv2d else nn.BatchNorm1d(5)
        )
        self.head = nn.Sequential(nn.ReLU(), pool(1), nn.Flatten(), nn.Linear(5, 3))

    def forward(self, x):
        return self.head(self.block(self.stem(x)))


def test_concept_rules_on_other_cnns():
    shapes = data.shapes(24, seed=4)
    cnn = _OtherCNN().train()
    before = state_of(cnn)
    labels, maps, pooled = rules.concept_activations(cnn, shapes.images.mean(1, keepdim=True), layer="block")
    assert maps.shape == (24, 5, 64, 64) and torch.equal(pooled, maps.amax((2, 3)))
    tree = rules.concept_rules(pooled, labels, max_depth=None)
    assert tree.fidelity == 1.0
    assert_unchanged(before, cnn)
    with pytest.raises(TypeError, match="labels:"):
        rules.concept_rules(pooled, labels.float())
    with pytest.raises(ValueError, match="pooled:"):
        rules.concept_rules(pooled * float("nan"), labels)


def test_dissect_on_a_1d_cnn_against_an_explicit_count():
    series = data.timeseries(12, seed=2)
    cnn = _OtherCNN(nn.Conv1d, nn.AdaptiveAvgPool1d).eval()
    _, maps, _ = rules.concept_activations(cnn, series.series, layer="block")
    concepts = rules.dissect(maps, series, quantile=0.8, batch_size=5)
    for c in range(5):
        threshold = torch.quantile(maps[:, c].flatten(), 0.8)
        for k in range(4):
            on = [resize(maps[n, c][None], (128,))[0] > threshold for n in range(12)]
            truth = [series.masks[n] & (series.labels[n] == k) for n in range(12)]
            inter, union = (
                sum(int((a & b).sum()) for a, b in zip(on, truth)),
                sum(int((a | b).sum()) for a, b in zip(on, truth)),
            )
            assert concepts.iou[c, k].item() == pytest.approx(inter / union, abs=1e-6)
