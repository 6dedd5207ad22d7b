"""Deep SHAP and Kernel SHAP on torchvision's resnet18 (random weights, seed 0) and a scikit-image photo at 224 x 224.

Deep SHAP runs on the network as torchvision builds it: BatchNorm not folded, one in-place ReLU reused within each
block, residual sums written ``out += identity``, an overlapping 3 x 3 max-pool of stride 2 in the stem. It sums to
f(x) - mean f(background), and it equals Captum's DeepLiftShap wherever Captum computes DeepLIFT: on a copy with one
ReLU module per use and out-of-place sums (Captum refuses the reused in-place ReLU), and with the stem's max-pool
swapped for a 2 x 2 one of stride 2 (the same output size). The finding these tests pin: on overlapping max-pooling
Captum 0.9 misses its own summation to delta, because it routes the pooled differences back with
``F.max_unpool2d``, which writes rather than adds where one input wins several windows (the bug tangermeme fixed
in its own rule, jmschrei/tangermeme#95); ``shap.deep`` adds them (``backward.unpool``), which an explicit loop over
the windows confirms.

Kernel SHAP runs on SLIC superpixels of the photo. Few of them (5): exact Shapley values need 2^M forward passes of
resnet18 at 224 x 224, about 0.05 to 0.15 s each on one thread.
"""

import copy
import warnings

import pytest
import torch
from conftest import UnrolledBlock, assert_unchanged, state_of
from torch import nn
from torch.nn import functional as F

from xai_course import shap, zoo

captum = pytest.importorskip("captum.attr")


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got - expected).abs().max() / expected.abs().max()).item()


@pytest.fixture(scope="module")
def photos() -> dict:
    """The cat as a batch of one (normalized as resnet18 expects), its crop in [0, 1], and a background of three
    other photos."""
    images = zoo.photos()
    x = zoo.preprocess("resnet18", images["chelsea"])
    low, high = (zoo.preprocess("resnet18", torch.full((3, 224, 224), v))[:, :, :1, :1] for v in (0.0, 1.0))
    background = zoo.preprocess("resnet18", [images[n] for n in ("coffee", "rocket", "astronaut")])
    return {"x": x, "pixels": ((x - low) / (high - low)).clamp(0, 1), "background": background}


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    return zoo.load("resnet18", weights=None)


def captum_deep_shap(model: nn.Module, x, background, target) -> tuple[torch.Tensor, torch.Tensor]:
    """Captum's DeepLiftShap (DeepLift for a single background row) and its deltas."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Captum announces its hooks
        explainer = (captum.DeepLift if len(background) == 1 else captum.DeepLiftShap)(model)
        phi, delta = explainer.attribute(x, baselines=background, target=target, return_convergence_delta=True)
    return phi.detach(), delta.detach()


def logit_difference(model: nn.Module, x, background, target: int) -> torch.Tensor:
    """f_c(x) - mean_b f_c(b), what Deep SHAP sums to."""
    with torch.no_grad():
        return model(x)[:, target] - model(background)[:, target].mean()


# ----------------------------------------------------------------------------- Deep SHAP


class UnrolledResNet(nn.Module):
    """torchvision's resnet18 rewritten for Captum: the same function, no reused ReLU, no ``+=``, and a 1 x 1
    identity convolution between the stem's ReLU and its max-pool (Captum's DeepLIFT breaks when a max-pool directly
    follows a ReLU, tests/test_shap.py)."""

    def __init__(self, resnet: nn.Module):
        super().__init__()
        self.resnet, self.relu = copy.deepcopy(resnet), nn.ReLU()
        self.identity = nn.Conv2d(64, 64, 1, groups=64, bias=False)
        nn.init.ones_(self.identity.weight)
        r = self.resnet
        self.blocks = nn.Sequential(*(UnrolledBlock(b) for layer in (r.layer1, r.layer2, r.layer3, r.layer4)
                                      for b in layer))  # fmt: skip

    def forward(self, x):
        r = self.resnet
        x = r.maxpool(self.identity(self.relu(r.bn1(r.conv1(x)))))
        return r.fc(torch.flatten(r.avgpool(self.blocks(x)), 1))


def test_deep_shap_on_resnet18_sums_to_the_logit_difference(resnet18, photos):
    x, background = photos["x"], photos["background"]
    before = state_of(resnet18)
    phi = shap.deep(resnet18, x, 0, background=background)
    assert_unchanged(before, resnet18)
    delta = logit_difference(resnet18, x, background, 0)
    assert (phi.sum() - delta).abs() < 1e-5 * (1 + delta.abs())
    assert phi.abs().max() > 1e-6 and phi.shape == x.shape


def test_deep_shap_on_resnet18_equals_captum_with_a_non_overlapping_stem_pool(resnet18, photos):
    """The stem's 3 x 3 max-pool of stride 2 swapped for a 2 x 2 one: 56 x 56 either way. Ours explains the network
    as torchvision builds it (reused in-place ReLU, ``+=``, BatchNorm), Captum its unrolled copy."""
    model = copy.deepcopy(resnet18)
    model.maxpool = nn.MaxPool2d(2, 2)
    x, background = photos["x"], photos["background"]
    unrolled = UnrolledResNet(model).eval()
    with torch.no_grad():
        torch.testing.assert_close(unrolled(x), model(x), rtol=0, atol=0)
    phi = shap.deep(model, x, 0, background=background)
    reference, delta = captum_deep_shap(unrolled, x, background, torch.tensor([0]))
    assert delta.abs().max() < 1e-5  # Captum computes DeepLIFT here: its summation to delta holds
    assert relative_error(phi, reference) < 1e-5


def overlapping_pool_reference(x: torch.Tensor, b: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """DeepLIFT's contributions of x (H, W) against b for w . maxpool_3x3/2, padding 1 (x), one window at a time.

    Window k has input maximum y at the position s and reference maximum y_b at s_b; with top = max(y, y_b), the
    change w_k (y - y_b) goes to the inputs as w_k (top - y_b) at s and w_k (y - top) at s_b, added over windows.
    """
    h, w = x.shape
    contributions, k = torch.zeros_like(x), 0
    for i in range(-1, h - 1, 2):
        for j in range(-1, w - 1, 2):
            window = [(r, c) for r in range(i, i + 3) for c in range(j, j + 3) if 0 <= r < h and 0 <= c < w]
            s, s_b = max(window, key=lambda p: x[p]), max(window, key=lambda p: b[p])
            y, y_b = x[s], b[s_b]
            top = max(y, y_b)
            contributions[s] += weight[k] * (top - y_b)
            contributions[s_b] += weight[k] * (y - top)
            k += 1
    return contributions


def test_overlapping_max_pooling_equals_the_window_by_window_reference_where_captum_drops_windows():
    g = torch.Generator().manual_seed(0)
    x, b = torch.randn(2, 1, 1, 7, 7, generator=g, dtype=torch.float64)
    model = nn.Sequential(nn.MaxPool2d(3, 2, 1), nn.Flatten(), nn.Linear(16, 1, bias=False)).double().eval()
    weight = model[2].weight.detach()[0]
    phi = shap.deep(model, x, 0, background=b)
    expected = overlapping_pool_reference(x[0, 0], b[0, 0], weight)
    assert relative_error(phi[0, 0], expected) < 1e-12
    assert abs(phi.sum() - logit_difference(model, x, b, 0)) < 1e-12
    reference, delta = captum_deep_shap(model, x, b, 0)
    assert delta.abs().max() > 1e-3 and relative_error(reference[0, 0], expected) > 1e-2  # Captum misses windows
    indices = F.max_pool2d(x, 3, 2, 1, return_indices=True)[1]
    ones = torch.ones(indices.shape, dtype=torch.float64)
    assert F.max_unpool2d(ones, indices, 3, 2, 1, x.shape[-2:]).sum() < ones.sum()  # why: it writes, not adds


def test_captum_misses_its_summation_on_resnet18s_stem_where_deep_shap_holds(resnet18, photos):
    """The stem alone (conv, BatchNorm, ReLU, the overlapping max-pool) with average pooling and a linear head."""
    g = torch.Generator().manual_seed(0)
    head = nn.Linear(64, 3)
    head.weight.data = torch.randn(3, 64, generator=g)
    stem = UnrolledResNet(resnet18)
    model = nn.Sequential(stem.resnet.conv1, stem.resnet.bn1, stem.relu, stem.identity, stem.resnet.maxpool,
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), head).eval()  # fmt: skip
    x, background = photos["x"], photos["background"]
    delta = logit_difference(model, x, background, 0)
    phi = shap.deep(model, x, 0, background=background)
    assert (phi.sum() - delta).abs() < 1e-5 * (1 + delta.abs())
    _, captum_delta = captum_deep_shap(model, x, background, 0)
    assert captum_delta.abs().max() > 1e-3 * delta.abs()


# ----------------------------------------------------------------------------- Kernel SHAP on superpixels


def test_kernel_shap_on_slic_superpixels_is_efficient_and_equals_exact_shapley_values(resnet18, photos):
    x = photos["x"]
    segments = shap.superpixels(photos["pixels"], n_segments=8)
    m = int(segments.max()) + 1
    assert 4 <= m <= 6  # SLIC's count: a few players, so that 2^M passes stay affordable
    _, exact = shap.exact(resnet18, x, 0, segments=segments, baseline="mean", return_values=True)
    attribution, phi = shap.kernel(resnet18, x, 0, segments=segments, n_samples=2**m, return_values=True)
    with torch.no_grad():
        delta = resnet18(x)[0, 0] - resnet18(x.mean((2, 3), keepdim=True).expand_as(x))[0, 0]
    assert abs(attribution.sum() - delta) < 1e-5 * (1 + abs(delta))  # efficiency, spread onto the pixels
    assert abs(exact.sum() - delta) < 1e-5 * (1 + abs(delta))
    assert relative_error(phi, exact) < 1e-4  # every coalition drawn: the regression gives the Shapley values
    sampled, phi_sampled = shap.kernel(resnet18, x, 0, segments=segments, n_samples=12, seed=1, return_values=True)
    assert relative_error(phi_sampled, exact) > 1e-3  # 6 pairs of the 2^(M-1) - 1: an estimate, not the values
    assert abs(sampled.sum() - delta) < 1e-5 * (1 + abs(delta))  # efficiency at any budget
