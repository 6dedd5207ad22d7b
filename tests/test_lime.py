"""LIME (shap.lime): its kernel, its ridge regression in closed form, the lime package, a linear game."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import pairwise_distances
from torch import nn

from xai_course import data, models, shap


@pytest.fixture(scope="module")
def shapes_model():
    return models.load("shapes_cnn")


@pytest.fixture(scope="module")
def images():
    return data.canonical(2).images


def all_coalitions(m: int) -> torch.Tensor:
    return torch.arange(2**m).unsqueeze(1) >> torch.arange(m) & 1 == 1


def test_lime_kernel_is_the_exponential_of_the_cosine_distance_to_the_image():
    z = all_coalitions(6)
    distance = pairwise_distances(z.numpy().astype(float), np.ones((1, 6)), metric="cosine").ravel()
    for width in (0.25, 1.0):
        expected = np.exp(-(distance**2) / (2 * width**2))
        assert np.allclose(shap.lime_kernel(z, width).numpy(), expected, atol=1e-12)
    assert shap.lime_kernel(z).argmax() == 2**6 - 1  # the full coalition weighs most, the empty one least
    assert shap.lime_kernel(z).argmin() == 0


@pytest.mark.parametrize("alpha", [0.0, 1.0, 10.0])
def test_lime_fit_is_the_weighted_ridge_regression_over_all_coalitions(alpha):
    m = 7
    z = all_coalitions(m)
    torch.manual_seed(0)
    v = torch.randn(2**m, dtype=torch.float64) + z.double() @ torch.randn(m, dtype=torch.float64)
    w = shap.lime_kernel(z)
    beta, b0 = shap.lime_fit(z, w, v, alpha)
    # the obvious form: least squares on the stacked system [sqrt(w) [1 z]; 0 sqrt(alpha) I] theta = [sqrt(w) v; 0]
    design = np.hstack([np.ones((2**m, 1)), z.numpy().astype(float)]) * np.sqrt(w.numpy())[:, None]
    penalty = np.hstack([np.zeros((m, 1)), np.sqrt(alpha) * np.eye(m)])
    rhs = np.concatenate([np.sqrt(w.numpy()) * v.numpy(), np.zeros(m)])
    theta = np.linalg.lstsq(np.vstack([design, penalty]), rhs, rcond=None)[0]
    assert np.allclose(beta.numpy(), theta[1:], atol=1e-10) and abs(b0 - theta[0]) < 1e-10


def test_lime_recovers_the_coefficients_of_a_game_linear_in_the_segments(images):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, 3)).eval()
    x, segments = images[0], shap.superpixels(images[:1], n_segments=12, method="grid")[0]
    _, beta = shap.lime(model, x, 1, segments=segments, baseline=0.0, n_samples=300, alpha=0.0, return_values=True)
    with torch.no_grad():  # v(S) = sum over the segments in S of c_i, c_i = the logit's terms over segment i
        terms = (model[1].weight[1].view(3, 64, 64) * x).sum(0)
    c = torch.zeros(int(segments.max()) + 1).index_add_(0, segments.flatten(), terms.flatten())
    assert torch.allclose(beta.float(), c, atol=1e-4 * c.abs().max())


def test_lime_equals_the_lime_package_on_its_own_samples(images, shapes_model):
    lime_image = pytest.importorskip("lime.lime_image")
    x, segments = images[1], shap.superpixels(images[1:2], n_segments=10, method="grid")[0]
    target = int(shapes_model(x[None]).argmax())
    seen_z, seen_v = [], []

    def classifier(batch: np.ndarray) -> np.ndarray:  # records the coalitions lime evaluates and their logits
        pixels = torch.from_numpy(batch).permute(0, 3, 1, 2).float()
        present = (pixels == x).all(1)  # (B, H, W); the baseline is 0 and x has no black pixel in a whole segment
        m = int(segments.max()) + 1
        z = torch.stack([torch.stack([p[segments == i].all() for i in range(m)]) for p in present])
        with torch.no_grad():
            logits = shapes_model(pixels)
        seen_z.append(z), seen_v.append(logits[:, target].double())
        return logits.double().numpy()

    explainer = lime_image.LimeImageExplainer(random_state=0)
    explanation = explainer.explain_instance(
        x.permute(1, 2, 0).double().numpy(), classifier, labels=(target,), top_labels=None, hide_color=0,
        num_samples=400, batch_size=64, segmentation_fn=lambda image: segments.numpy(), random_seed=0,
    )  # fmt: skip
    z, v = torch.cat(seen_z), torch.cat(seen_v)
    beta, b0 = shap.lime_fit(z, shap.lime_kernel(z), v)
    theirs = torch.zeros_like(beta)
    for i, coefficient in explanation.local_exp[target]:
        theirs[i] = coefficient
    assert torch.allclose(beta, theirs, atol=1e-6 * theirs.abs().max())
    assert abs(b0 - explanation.intercept[target]) < 1e-6 * (1 + abs(b0))


def test_lime_is_seeded_and_checks_its_settings(images, shapes_model):
    segments = shap.superpixels(images, n_segments=8, method="grid")
    first = shap.lime(shapes_model, images, segments=segments, n_samples=64, seed=3)
    assert torch.allclose(first, shap.lime(shapes_model, images, segments=segments, n_samples=64, seed=3))
    assert not torch.allclose(first, shap.lime(shapes_model, images, segments=segments, n_samples=64, seed=4))
    for name, bad in (("kernel_width", 0.0), ("kernel_width", float("inf")), ("alpha", -1.0), ("alpha", "big")):
        with pytest.raises((TypeError, ValueError), match=name):
            shap.lime(shapes_model, images, segments=segments, **{name: bad})
    with pytest.raises(ValueError, match="n_samples"):
        shap.lime(shapes_model, images, segments=segments, n_samples=1)
