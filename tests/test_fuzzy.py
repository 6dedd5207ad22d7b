"""fuzzy: membership functions, granules, fuzzy rules, fuzzy graphs, the fuzzy head and the fuzzy CNN."""

import numpy as np
import pytest
import torch
from conftest import assert_unchanged, state_of
from test_rules import _OtherCNN
from torch import nn

from xai_course import data, fuzzy, models, rules

# ----------------------------------------------------------------------------- fuzzy sets


def test_membership_functions_against_hand_values():
    np.testing.assert_allclose(fuzzy.triangular([0, 1, 2, 3, 4, 5], 1, 3, 4), [0, 0, 0.5, 1, 0, 0])
    np.testing.assert_allclose(fuzzy.trapezoidal([0, 1.5, 2, 3, 3.5, 6], 1, 2, 3, 5), [0, 0.5, 1, 1, 0.75, 0])
    np.testing.assert_allclose(fuzzy.trapezoidal([-9, 0, 1.5, 3], -np.inf, -np.inf, 1, 2), [1, 1, 0.5, 0])
    np.testing.assert_allclose(fuzzy.gaussian([1, 3], 1, 2), [1, np.exp(-0.5)])
    with pytest.raises(ValueError, match="a, b, c, d"):
        fuzzy.trapezoidal(0, 2, 1, 3, 4)
    with pytest.raises(ValueError, match="sigma"):
        fuzzy.gaussian(0, 0, 0)


def test_granules_partition_the_line_at_the_quantiles():
    values = np.random.default_rng(6).exponential(size=500)
    g = fuzzy.granules(values, "income")
    assert g.words == ("LOW", "MEDIUM", "HIGH")
    np.testing.assert_allclose(g.centres, np.quantile(values, [0.05, 0.5, 0.95]))
    mu = g.memberships(np.linspace(-1, 8, 301))
    np.testing.assert_allclose(mu.sum(1), 1.0)
    np.testing.assert_allclose(g.memberships(g.centres), np.eye(3))
    assert g.word(0) == "LOW" and g.word(100) == "HIGH" and g.word(g.centres[1]) == "MEDIUM"
    assert fuzzy.granules(np.zeros(9) + np.r_[np.zeros(8), 1], words=3).centres == (0.0, 0.5, 1.0)


def test_fuzzy_rules_against_wang_mendel_by_hand():
    rng = np.random.default_rng(7)
    rows = np.column_stack([rng.uniform(0, 10, 300), rng.integers(2, size=300)])
    black_box = lambda r: ((np.asarray(r)[:, 0] > 6) & (np.asarray(r)[:, 1] == 1)).astype(int)
    base = fuzzy.fuzzy_rules(black_box, rows, feature_names=("x", "flag"), categorical={"flag": ("no", "yes")},
                             classes=("grant", "deny"))  # fmt: skip
    g, labels = base.variables[0], black_box(rows)
    mu = g.memberships(rows[:, 0])
    for rule in base.rules:  # firing = product of memberships, consequent and weight as Ishibuchi et al.
        word, code = rule.words
        firing = np.array([mu[i, word] * (rows[i, 1] == code) for i in range(len(rows))])
        np.testing.assert_allclose(base.firing(rows)[:, base.rules.index(rule)], firing)
        beta = [firing[labels == k].sum() for k in (0, 1)]
        assert rule.outcome == int(np.argmax(beta))
        assert rule.weight == pytest.approx((max(beta) - min(beta)) / sum(beta))
    assert str(base.rules[0]).startswith("IF x is ") and " AND flag is " in str(base.rules[0])
    assert base.fidelity >= 0.9 and base.fidelity == np.mean(base.predict(rows) == labels)
    top = base.explain(rows[0], top=2)
    assert len(top) == 2 and top[0][1] >= top[1][1]


def test_fuzzy_graph_interpolates_and_covers_a_known_function():
    square = lambda x: np.asarray(x) ** 2
    graph = fuzzy.fuzzy_graph(square, 0.0, 1.0, n_granules=5)
    x = np.linspace(0, 1, 401)
    np.testing.assert_allclose(graph(x), np.interp(x, np.linspace(0, 1, 5), np.linspace(0, 1, 5) ** 2), atol=1e-12)
    assert np.abs(graph(x) - x**2).max() <= 0.25**2 / 8 * 2 + 1e-12  # linear interpolation error h^2/8 max|f''|
    assert graph.membership(x, x**2).min() >= 0.5 and graph.membership(0.5, 0.9) == 0
    for (x_lo, x_hi), (y_lo, y_hi) in graph.patches:
        assert y_lo == pytest.approx(x_lo**2) and y_hi == pytest.approx(x_hi**2)
    line = fuzzy.fuzzy_graph(lambda v: 3 * np.asarray(v) - 1, -2.0, 2.0, n_granules=3)
    np.testing.assert_allclose(line(x), 3 * x - 1)
    assert line.rules[0] == "IF x is LOW THEN y is about -7"


# ----------------------------------------------------------------------------- the fuzzy head


def test_fuzzy_head_fires_products_of_gaussians():
    torch.manual_seed(0)
    head = fuzzy.FuzzyHead(3, 2, rules_per_class=2)
    with torch.no_grad():
        head.centres.normal_()
        head.log_sigma.uniform_(-0.5, 0.5)
        head.mean.copy_(torch.tensor([1.0, -1.0, 0.5]))
        head.std.copy_(torch.tensor([2.0, 0.5, 1.0]))
    z = torch.randn(7, 3)
    u = ((z - head.mean) / head.std).double()
    w = torch.ones(7, 4, dtype=torch.float64)
    for r in range(4):
        for d in range(3):
            c, s = head.centres[r, d].item(), head.log_sigma[r, d].exp().item()
            w[:, r] *= torch.from_numpy(fuzzy.gaussian(u[:, d].numpy(), c, s))
    torch.testing.assert_close(head.log_firing(z).double(), w.log(), atol=1e-4, rtol=1e-5)
    normalized = w / w.sum(1, keepdim=True)
    torch.testing.assert_close(head(z).softmax(1).double(), normalized.view(7, 2, 2).sum(2), atol=1e-5, rtol=1e-5)
    assert torch.isfinite(head.log_firing(torch.full((1, 3), 1e4))).all(), "log space: no underflow"


def test_adam_step_matches_torch_optim_adam():
    g = torch.Generator().manual_seed(1)
    target = torch.randn(5, 3, generator=g)
    ours = torch.randn(5, 3, generator=g)
    theirs = nn.Parameter(ours.clone())
    ours.requires_grad_(True)
    m, v = torch.zeros_like(ours), torch.zeros_like(ours)
    optimizer = torch.optim.Adam([theirs], lr=0.05)
    for step in range(1, 21):
        (gradient,) = torch.autograd.grad(((ours - target) ** 3).abs().sum(), [ours])
        with torch.no_grad():
            fuzzy._adam_step(ours, gradient, m, v, step, 0.05)
        optimizer.zero_grad()
        ((theirs - target) ** 3).abs().sum().backward()
        optimizer.step()
    torch.testing.assert_close(ours.detach(), theirs.detach(), rtol=1e-6, atol=1e-7)


def test_fuzzy_head_mimics_the_cnn():
    cnn = models.load("shapes_cnn")
    before = state_of(cnn)
    train, test = data.shapes(300, "train", seed=5), data.shapes(300, "test", seed=123)
    _, _, pooled = rules.concept_activations(cnn, train.images)
    _, _, test_pooled = rules.concept_activations(cnn, test.images)
    head = fuzzy.fit_fuzzy_head(pooled, train.labels, rules_per_class=2, steps=150)
    fuzzy_cnn = fuzzy.FuzzyCNN(cnn, head)
    cnn_accuracy = models.accuracy(cnn, test.images, test.labels)
    assert models.accuracy(fuzzy_cnn, test.images, test.labels) >= cnn_accuracy - 0.03
    torch.testing.assert_close(fuzzy_cnn(test.images[:4]), head(test_pooled[:4]))
    names = [f"concept {d}" for d in range(pooled.shape[1])]
    variables = [fuzzy.granules(pooled[:, d], name) for d, name in enumerate(names)]
    text = head.rules(names, variables, train.classes)
    assert len(text) == 8 and text[0].startswith("IF concept ") and text[0].endswith("THEN circle")
    again = fuzzy.fit_fuzzy_head(pooled, train.labels, rules_per_class=2, steps=150)
    assert torch.equal(again.centres, head.centres)
    assert_unchanged(before, cnn)


# ----------------------------------------------------------------------------- other tables, functions and CNNs


def test_granules_and_fuzzy_rules_of_constant_duplicated_and_inseparable_features():
    g = fuzzy.granules(np.full(10, 5.0))
    assert g.centres == (4.5, 5.0, 5.5) and g.word(5.0) == "MEDIUM"
    rng = np.random.default_rng(2)
    rows = np.column_stack([rng.uniform(0, 10, 200), np.full(200, 3.0)])
    above = lambda r: (np.asarray(r)[:, 0] > 6).astype(int)
    base = fuzzy.fuzzy_rules(above, rows)
    assert base.fidelity >= 0.9 and all(base.variables[1].words[w] == "MEDIUM" for r in base.rules for w in r.words[1:])
    with pytest.raises(ValueError, match="features:"):
        fuzzy.fuzzy_rules(above, rows, features=["x0", "x0"])
    with pytest.raises(ValueError, match="features, words:"):
        fuzzy.fuzzy_rules(lambda r: np.arange(len(r)) % 2, np.array([[0.0], [0.0], [1.0], [1.0]]))
    with pytest.raises(TypeError, match="words:"):
        fuzzy.granules(rows[:, 0], words="LOW")
    with pytest.raises(ValueError, match="x:"):
        base.explain(rows[:2])


def test_fuzzy_graph_keeps_the_shape_of_its_input_and_refuses_a_non_finite_f():
    graph = fuzzy.fuzzy_graph(lambda v: np.asarray(v) ** 2, 0.0, 1.0)
    grid = np.linspace(0, 1, 12).reshape(3, 4)
    np.testing.assert_allclose(graph(grid), [[graph(v)[()] for v in row] for row in grid])
    assert graph(grid).shape == (3, 4) and np.shape(graph(0.5)) == ()
    assert fuzzy.fuzzy_graph(lambda v: 2.0, 0.0, 1.0).rules[0] == "IF x is VERY LOW THEN y is about 2"
    with pytest.raises(ValueError, match="f:"):
        fuzzy.fuzzy_graph(lambda v: np.where(np.asarray(v) > 0.5, np.inf, 0.0), 0.0, 1.0)


def test_fuzzy_cnn_on_other_cnns():
    shapes = data.shapes(24, seed=4)
    cnn = _OtherCNN().train()
    before = state_of(cnn)
    _, _, pooled = rules.concept_activations(cnn, shapes.images.mean(1, keepdim=True), layer="block")
    lopsided = torch.tensor([1] * 23 + [2])  # class 0 has no rows, class 2 one row for two rules
    head = fuzzy.fit_fuzzy_head(pooled.double(), lopsided, rules_per_class=2, steps=20)
    assert head.centres.dtype == torch.float64 and torch.isfinite(head.centres).all()
    fuzzy_cnn = fuzzy.FuzzyCNN(cnn, head.float(), layer=cnn.block)  # a sub-module, not its name
    fuzzy_cnn.train()
    assert not fuzzy_cnn.cnn.training and fuzzy_cnn.head.training
    torch.testing.assert_close(fuzzy_cnn(shapes.images[:3].mean(1, keepdim=True)), head.float()(pooled[:3]))
    assert_unchanged(before, cnn)
    with pytest.raises(ValueError, match="head:"):
        fuzzy.FuzzyCNN(cnn, fuzzy.FuzzyHead(7, 3), layer="block")(shapes.images[:2].mean(1, keepdim=True))
    with pytest.raises(TypeError, match="labels:"):
        fuzzy.fit_fuzzy_head(pooled, lopsided.float())
    with pytest.raises(ValueError, match="z:"):
        fuzzy.fit_fuzzy_head(pooled * float("nan"), lopsided)


def test_fuzzy_cnn_on_a_1d_cnn():
    series = data.timeseries(12, seed=2)
    cnn = _OtherCNN(nn.Conv1d, nn.AdaptiveAvgPool1d).eval()
    labels, _, pooled = rules.concept_activations(cnn, series.series, layer="block")
    head = fuzzy.fit_fuzzy_head(pooled, labels, steps=5)
    torch.testing.assert_close(fuzzy.FuzzyCNN(cnn, head, layer="block")(series.series), head(pooled))
