"""Concept activation vectors and TCAV (concepts): a planted direction, finite differences, the Clever Hans tag."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from xai_course import concepts, data, layers, models


class TwoLayers(nn.Module):
    """f_l(x) = relu(W1 x) at "hidden", then a linear head."""

    def __init__(self, d: int = 6):
        super().__init__()
        torch.manual_seed(0)
        self.body, self.hidden, self.head = nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 3)

    def forward(self, x):
        return self.head(self.hidden(self.body(x)))


def test_a_cav_finds_the_direction_planted_in_the_activations():
    model = TwoLayers()
    with torch.no_grad():
        model.body.weight.copy_(torch.eye(6)), model.body.bias.fill_(5.0)  # f_l(x) = x + 5 > 0: linear here
    torch.manual_seed(1)
    u = torch.tensor([1.0, -1.0, 0, 0, 0, 0]) / 2**0.5
    concept, random = torch.randn(200, 6) + 3.0 * u, torch.randn(200, 6)  # Bayes accuracy 0.93
    v = concepts.cav(model, concept, random, layer="hidden", seed=0)
    assert v.vector @ u > 0.9 and v.accuracy > 0.85 and v.layer == "hidden"
    assert torch.equal(v.vector, concepts.cav(model, concept, random, layer="hidden", seed=0).vector)  # same call


def _optimality(z, y, w, b):
    """The objective's gradient at (w, b) in all D + 1 coordinates: zero at the optimum."""
    residual = 1 / (1 + np.exp(-(z @ w + b))) - y
    return np.r_[z.T @ residual + w, residual.sum()]


@pytest.mark.parametrize("n, d, shift", [(60, 128, 1.0), (40, 300, 0.5), (200, 5, 0.3)])
def test_the_cav_fit_is_scikit_learns_logistic_regression(n, d, shift):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(n + d)
    z, y = rng.random((n, d)) * 10, (np.arange(n) % 2).astype(float)  # ReLU-like: non-negative, not centred
    z[y == 1] += shift * rng.random(d)  # a concept direction
    w, b = concepts._logistic_regression(z, y)
    assert np.linalg.norm(_optimality(z, y, w, b)) < 1e-9 * np.linalg.norm(z.T @ y)  # the slow, obvious reference
    for solver, tolerance in (("newton-cholesky", 1e-9), ("lbfgs", 1e-4)):  # lbfgs stops about 1e-5 short
        fitted = LogisticRegression(C=1.0, solver=solver, tol=1e-12, max_iter=100_000).fit(z, y)
        w_sk, b_sk = fitted.coef_[0], fitted.intercept_[0]
        assert np.linalg.norm(w - w_sk) < tolerance * np.linalg.norm(w_sk)
        assert abs(b - b_sk) < tolerance * (1 + abs(b_sk))
        assert w @ w_sk / np.linalg.norm(w) / np.linalg.norm(w_sk) > 1 - 1e-9


def test_the_cav_fit_on_the_chapters_activations_is_scikit_learns():
    from sklearn.linear_model import LogisticRegression

    model, pool = models.load("shapes_cnn"), data.shapes(90, "test", seed=7)
    tagged, _ = data.add_tag(pool.images[:30])
    y = np.r_[np.ones(30), np.zeros(30)]
    # 128 and 4096 activations of 60 examples; newton-cholesky would build a 4096 x 4096 Hessian (half a minute),
    # lbfgs stops about 1e-5 short of the optimum
    for layer, solver, tolerance in (("classifier.1", "newton-cholesky", 1e-9), ("features", "lbfgs", 1e-4)):
        z = torch.cat([layers.features(model, tagged, layer), layers.features(model, pool.images[30:60], layer)])
        z = z.flatten(1).double().numpy()
        w, b = concepts._logistic_regression(z, y)
        assert np.linalg.norm(_optimality(z, y, w, b)) < 1e-9 * np.linalg.norm(z.T @ y)
        w_sk = LogisticRegression(C=1.0, solver=solver, tol=1e-12, max_iter=100_000).fit(z, y).coef_[0]
        assert np.linalg.norm(w - w_sk) < tolerance * np.linalg.norm(w_sk)
        assert w @ w_sk / np.linalg.norm(w) / np.linalg.norm(w_sk) > 1 - 1e-9


def test_a_cav_needs_activations_that_differ():
    model = TwoLayers()
    with torch.no_grad():
        model.body.weight.zero_(), model.body.bias.fill_(-1.0)  # every activation at "hidden" is 0
    x = torch.randn(10, 6)
    with pytest.raises(ValueError, match="layer: the concept's and the random examples' activations at 'hidden'"):
        concepts.cav(model, x + 1, x, layer="hidden")


def test_another_seed_draws_another_split():
    model = TwoLayers()
    concept, random = torch.randn(20, 6) + 1, torch.randn(20, 6)
    v0, v1 = (concepts.cav(model, concept, random, layer="hidden", seed=s) for s in (0, 1))
    assert not torch.equal(v0.vector, v1.vector) and torch.cosine_similarity(v0.vector, v1.vector, dim=0) > 0.5


def test_sensitivities_are_directional_derivatives():
    model, x = TwoLayers(), torch.randn(5, 6)
    v = concepts.cav(model, torch.randn(20, 6) + 1, torch.randn(20, 6), layer="hidden")
    s = concepts.sensitivities(model, x, 2, direction=v)
    eps = 1e-3  # the slow, obvious reference: move f_l(x) along v and read the head
    with torch.no_grad():
        a = model.hidden(model.body(x))
        slope = (model.head(a + eps * v.vector)[:, 2] - model.head(a - eps * v.vector)[:, 2]) / (2 * eps)
    assert torch.allclose(s, slope, atol=1e-4)
    assert concepts.sensitivities(model, x[0], 2, direction=v).shape == ()


def test_tcav_finds_the_clever_hans_tag_only_in_the_model_that_learned_it():
    pool = data.shapes(60, "test", seed=3)
    tagged, _ = data.add_tag(pool.images)
    randoms = [data.shapes(60, "test", seed=10 + r).images for r in range(10)]
    test = data.shapes(200, "test", seed=1)
    circles = test.images[test.labels == data.TAG_CLASS][:40]
    results = {
        name: concepts.tcav(models.load(name), circles, data.TAG_CLASS, concept=tagged, randoms=randoms,
                            layer="classifier.1")  # fmt: skip
        for name in ("shapes_cnn", "shapes_cnn_clever_hans")
    }
    hans, plain = results["shapes_cnn_clever_hans"], results["shapes_cnn"]
    assert hans.significant and hans.scores.mean() > 0.9 and hans.accuracies.min() > 0.95
    assert not plain.significant and plain.p_value > 0.2


def test_tcav_checks_its_arguments():
    model, x = TwoLayers(), torch.randn(8, 6)
    with pytest.raises(TypeError, match="randoms"):
        concepts.tcav(model, x, 0, concept=x, randoms=[x], layer="hidden")
    with pytest.raises(ValueError, match="randoms\\[1\\]"):
        concepts.tcav(model, x, 0, concept=x, randoms=[x, x[:1]], layer="hidden")
    with pytest.raises(TypeError, match="direction"):
        concepts.sensitivities(model, x, 0, direction=torch.ones(6))
    wrong = concepts.CAV(torch.ones(3), "hidden", 1.0)
    with pytest.raises(ValueError, match="direction: expected a CAV of the layer's 6 activations"):
        concepts.sensitivities(model, x, 0, direction=wrong)
    with pytest.raises(ValueError, match="layer"):
        concepts.cav(model, x, x, layer="nowhere")


def test_welch_p_value_equals_scipys():
    from scipy import stats

    torch.manual_seed(0)
    a, b = torch.rand(10), torch.rand(7) + 0.3
    expected = stats.ttest_ind(a.double().numpy(), b.double().numpy(), equal_var=False).pvalue
    assert abs(concepts.welch_p_value(a, b) - expected) < 1e-12
    constant, spread = torch.ones(5, dtype=torch.float64), 0.5 + torch.arange(4, dtype=torch.float64) / 10
    expected = stats.ttest_ind(constant.numpy(), spread.numpy(), equal_var=False).pvalue  # one sample constant
    assert abs(concepts.welch_p_value(constant, spread) - expected) < 1e-12
    assert concepts.welch_p_value(torch.ones(5), torch.ones(3)) == 1.0
    assert concepts.welch_p_value(torch.ones(5), torch.zeros(3)) == 0.0
