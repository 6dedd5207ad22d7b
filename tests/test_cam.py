"""cam: Grad-CAM and Grad-CAM++ against Captum, the grad-cam package, and slow references without autograd."""

import math
import warnings

import numpy as np
import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam
from conftest import assert_unchanged, state_of
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from scipy import stats
from torch import nn

import xai_course as xc
from xai_course import cam


@pytest.fixture(scope="module")
def course():
    return xc.models.load("shapes_cnn"), xc.data.canonical()


def relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return ((ours - theirs).abs().max() / theirs.abs().max()).item()


def captum_grad_cam(model, x, target, layer: str) -> torch.Tensor:
    module = model.get_submodule(layer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        coarse = LayerGradCam(model, module).attribute(x, target=target, relu_attributions=True)
    mode = "bilinear" if x.ndim == 4 else "linear"
    return LayerAttribution.interpolate(coarse, tuple(x.shape[2:]), mode).expand_as(x)


@pytest.mark.parametrize(
    "name, layer",
    [("shapes_cnn", "features"), ("shapes_cnn", "features.8"), ("shapes_cnn", "features.4"),
     ("shapes_resnet", "layer3"), ("shapes_resnet", "layer2"), ("timeseries_cnn", "features")],
)  # fmt: skip
def test_grad_cam_equals_captum_layer_grad_cam_upsampled(name, layer):
    model = xc.models.load(name)
    x = xc.data.timeseries(6, seed=3).series if name == "timeseries_cnn" else xc.data.canonical().images
    target = torch.arange(len(x)) % model(x).shape[1]  # not only the predicted classes
    ours = cam.grad_cam(model, x, target, layer=layer)
    reference = captum_grad_cam(model, x, target, layer)
    assert ours.shape == x.shape and reference.abs().max() > 0
    assert relative_error(ours, reference) < 1e-5


def grad_cam_package(method, model, x, target, layer: str):
    """The grad-cam package's map before its min-max scaling and resizing (coarse, (N, h, w)), and after."""
    explainer = method(model, target_layers=[model.get_submodule(layer)])
    targets = [ClassifierOutputTarget(int(t)) for t in target]
    final = explainer(input_tensor=x, targets=targets)
    activations = explainer.activations_and_grads.activations[0].numpy()
    grads = explainer.activations_and_grads.gradients[0].numpy()
    coarse = explainer.get_cam_image(x, None, targets, activations, grads)
    explainer.activations_and_grads.release()
    return torch.from_numpy(np.maximum(coarse, 0)), torch.from_numpy(final)


def upsampled(coarse: torch.Tensor, size) -> torch.Tensor:
    return nn.functional.interpolate(coarse[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def test_grad_cam_equals_the_grad_cam_package(course):
    model, canon = course
    x, target = canon.images, torch.tensor([1, 0, 3, 2, 0, 1, 2, 3])
    coarse, final = grad_cam_package(GradCAM, model, x, target, "features")
    ours = cam.grad_cam(model, x, target, layer="features")[:, 0]
    assert relative_error(ours, upsampled(coarse, (64, 64))) < 1e-5
    # then it scales each map to [0, 1] (min-max), resizes it with OpenCV and scales the result again
    low, high = ours.flatten(1).amin(1).view(-1, 1, 1), ours.flatten(1).amax(1).view(-1, 1, 1)
    torch.testing.assert_close(final, (ours - low) / (high - low), rtol=1e-5, atol=1e-6)


def test_grad_cam_plus_plus_equals_the_grad_cam_package_where_its_epsilon_is_negligible(course):
    """The package adds 1e-6 to the denominator g^2 (2 + sum A g); with logits scaled by 1000 (g by 1000) the
    term is negligible and the two agree; on the course model itself (median |g| 7e-3) it moves the maps by about
    1 % of their maximum."""
    model, canon = course
    x, target = canon.images, torch.tensor([1, 0, 3, 2, 0, 1, 2, 3])
    scaled = nn.Sequential(model, Scale(1000.0)).eval()
    coarse, _ = grad_cam_package(GradCAMPlusPlus, scaled, x, target, "0.features")
    ours = cam.grad_cam_plus_plus(scaled, x, target, layer="0.features")[:, 0]
    assert relative_error(ours, upsampled(coarse, (64, 64))) < 1e-5
    coarse, _ = grad_cam_package(GradCAMPlusPlus, model, x, target, "features")
    ours = cam.grad_cam_plus_plus(model, x, target, layer="features")[:, 0]
    assert 1e-4 < relative_error(ours, upsampled(coarse, (64, 64))) < 0.2


class Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, z):
        return z * self.factor


# ----------------------------------------------------------------------------- slow references


class Split(nn.Module):
    """A tiny ReLU network in two halves: features (the layer's output A) and head (the logits from A)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 9, 3))

    def forward(self, x):
        return self.head(self.features(x))


def finite_difference_gradient(head, a: torch.Tensor, c: int, h: float = 1e-6) -> torch.Tensor:
    """dS_c/dA by central differences, one entry of A at a time (a ReLU net is linear between kinks)."""
    grad = torch.zeros_like(a)
    for index in np.ndindex(*a.shape):
        step = torch.zeros_like(a)
        step[index] = h
        grad[index] = (head(a + step)[0, c] - head(a - step)[0, c]) / (2 * h)
    return grad


def bilinear(coarse: np.ndarray, size: int) -> np.ndarray:
    """Resize a square map with half-pixel centres (align_corners=False), edges clamped, by explicit loops."""
    n = coarse.shape[0]
    out = np.zeros((size, size))
    for p in range(size):
        for q in range(size):
            u, v = [max((k + 0.5) * n / size - 0.5, 0.0) for k in (p, q)]
            i0, j0 = int(math.floor(u)), int(math.floor(v))
            i1, j1 = min(i0 + 1, n - 1), min(j0 + 1, n - 1)
            du, dv = u - i0, v - j0
            out[p, q] = ((1 - du) * (1 - dv) * coarse[i0, j0] + (1 - du) * dv * coarse[i0, j1]
                         + du * (1 - dv) * coarse[i1, j0] + du * dv * coarse[i1, j1])  # fmt: skip
    return out


def slow_cam(model: Split, x: torch.Tensor, c: int, plus_plus: bool) -> np.ndarray:
    """Grad-CAM or Grad-CAM++ of one image by the formulas of the papers, channel by channel, position by
    position, with finite-difference gradients."""
    with torch.no_grad():
        a = model.features(x[None])
        g = finite_difference_gradient(model.head, a, c)
    a, g = a[0].numpy(), g[0].numpy()
    coarse = np.zeros(a.shape[1:])
    for k in range(a.shape[0]):
        if not plus_plus:
            weight = g[k].mean()
        else:
            weight = 0.0
            for i, j in np.ndindex(*a.shape[1:]):
                denominator = 2 * g[k, i, j] ** 2 + a[k].sum() * g[k, i, j] ** 3
                if g[k, i, j] != 0 and denominator != 0:
                    weight += g[k, i, j] ** 2 / denominator * max(g[k, i, j], 0.0)
        coarse += weight * a[k]
    return bilinear(np.maximum(coarse, 0.0), x.shape[-1])


@pytest.mark.parametrize("plus_plus", [False, True])
def test_grad_cam_equals_the_slow_reference(plus_plus):
    model = Split().double().eval()
    x = torch.rand(3, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) - 0.3
    method = cam.grad_cam_plus_plus if plus_plus else cam.grad_cam
    for c in range(3):
        ours = method(model, x, c, layer="features")
        assert torch.equal(ours[:, 0], ours[:, 2])  # the same map on every channel
        for n in range(len(x)):
            reference = slow_cam(model, x[n], c, plus_plus)
            np.testing.assert_allclose(ours[n, 0].numpy(), reference, rtol=1e-6, atol=1e-8)


def test_grad_cam_plus_plus_is_the_papers_closed_form_for_exp_of_the_logit():
    """Chattopadhay et al.'s weights from the actual second and third derivatives of Y = exp(S_c) with respect
    to each A_ij (autograd, one entry at a time), times ReLU(dY/dA): exp(S_c) times the package's."""
    model = Split().double().eval()
    x = torch.rand(1, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    c = 1
    a = model.features(x).detach().requires_grad_(True)
    y = model.head(a)[0, c].exp()
    (d1,) = torch.autograd.grad(y, a, create_graph=True)
    weights = torch.zeros(a.shape[1], dtype=torch.float64)
    for index in np.ndindex(*a.shape[1:]):
        (d2,) = torch.autograd.grad(d1[(0, *index)], a, create_graph=True)
        (d3,) = torch.autograd.grad(d2[(0, *index)], a, retain_graph=True)
        second, third = d2[(0, *index)].item(), d3[(0, *index)].item()
        k = index[0]
        if second != 0:
            alpha = second / (2 * second + a[0, k].sum().item() * third)
            weights[k] += alpha * max(d1[(0, *index)].item(), 0.0)
    paper = (weights.view(1, -1, 1, 1) * a.detach()).sum(1, keepdim=True).relu()
    paper = nn.functional.interpolate(paper, size=(6, 6), mode="bilinear", align_corners=False)[0, 0]
    ours = cam.grad_cam_plus_plus(model, x, c, layer="features")[0, 0]
    assert paper.abs().max() > 0
    torch.testing.assert_close(ours * y.detach(), paper, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------- the layer


def test_the_default_layer_is_the_last_feature_map_by_a_rule():
    images, series = xc.data.canonical(2).images, xc.data.timeseries(2, seed=3).series
    assert cam.last_feature_map(xc.models.load("shapes_cnn"), images) == "features"
    assert cam.last_feature_map(xc.models.load("shapes_resnet"), images) == "layer3"  # not its 1 x 1 avgpool
    assert cam.last_feature_map(xc.models.load("timeseries_cnn"), series) == "features"
    flat = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))
    assert cam.last_feature_map(flat, images) == "1"
    with pytest.raises(ValueError, match="^model: .*feature map"):
        cam.last_feature_map(xc.models.load("loan_mlp"), xc.data.loans(2, seed=4).features)


def test_the_layer_is_chosen_by_name_or_module_and_a_bad_one_is_refused(course, tiny):
    model, canon = course
    x = canon.images[:2]
    by_module = cam.grad_cam(model, x, layer=model.features)
    assert torch.equal(by_module, cam.grad_cam(model, x, layer="features"))
    before = state_of(model)
    for layer, match in [("classifier.0", "feature map"), ("nope", "one of"), (nn.ReLU(), "sub-module")]:
        with pytest.raises((ValueError, TypeError), match=f"^layer: .*{match}"):
            cam.grad_cam_plus_plus(model, x, layer=layer)
        assert_unchanged(before, model)
    with pytest.raises(ValueError, match="^layer: .*run 2 times"):
        cam.grad_cam(tiny, torch.rand(2, 3, 8, 8), layer="relu")  # one ReLU module used twice


def test_a_later_in_place_operation_does_not_change_the_layer_output():
    """ResNet's bn2 output is changed in place by out += identity: the map is the one of a twin without it."""
    model = xc.models.load("shapes_resnet")
    x = xc.data.canonical(2).images

    class Twin(nn.Module):
        def __init__(self, block):
            super().__init__()
            self.block = block

        def forward(self, z):
            b = self.block
            identity = z if b.downsample is None else b.downsample(z)
            out = b.bn2(b.conv2(nn.functional.relu(b.bn1(b.conv1(z)))))
            return nn.functional.relu(out + identity)

    twin = xc.models.load("shapes_resnet")
    twin.layer3 = Twin(twin.layer3)
    ours = cam.grad_cam(model, x, 0, layer="layer3.bn2")
    expected = cam.grad_cam(twin, x, 0, layer="layer3.block.bn2")
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-7)
    assert ours.abs().max() > 0


def test_unbatched_float64_and_model_unchanged(course, tiny):
    model, canon = course
    x = canon.images[:3].double()
    model64 = xc.models.load("shapes_cnn").double()
    before = state_of(model64)
    single = cam.grad_cam(model64, x[1], layer="features")
    assert single.shape == x[1].shape and single.dtype == torch.float64
    torch.testing.assert_close(single, cam.grad_cam(model64, x, layer="features")[1])
    assert_unchanged(before, model64)
    tiny.train()
    before = state_of(tiny)
    cam.grad_cam(tiny, torch.rand(2, 3, 8, 8), layer="conv")
    with pytest.raises(ValueError, match="^target"):
        cam.grad_cam(tiny, torch.rand(2, 3, 8, 8), 5, layer="conv")
    assert_unchanged(before, tiny)


# ----------------------------------------------------------------------------- "why two classes give the same map"


def channel_weights(model, x, c: int, layer: str) -> torch.Tensor:
    """alpha_k for class c, (N, K): the spatial mean of dS_c/dA_k, computed here with a hook and autograd."""
    kept = []
    handle = model.get_submodule(layer).register_forward_hook(lambda m, args, out: kept.append(out))
    try:
        logits = model(x)
    finally:
        handle.remove()
    (g,) = torch.autograd.grad(logits[:, c].sum(), kept[0])
    return g.mean(dim=(2, 3))


def test_the_class_dependence_of_grad_cam_is_measurable(course):
    """On the course model, the maps of the four classes differ, and two classes' maps are as alike as their
    channel weights alpha: the features A are the same for every class, only the weights change."""
    model, canon = course
    x = canon.images
    maps = torch.stack([cam.grad_cam(model, x, c, layer="features")[:, 0].flatten(1) for c in range(4)], 1)
    alphas = torch.stack([channel_weights(model, x, c, "features") for c in range(4)], 1)
    map_similarity, weight_similarity = [], []
    for n in range(len(x)):
        varying = [c for c in range(4) if maps[n, c].std() > 0]  # a class with no positive evidence: an all-zero map
        correlation = torch.corrcoef(maps[n, varying])
        true = varying.index(canon.labels[n].item())
        assert correlation[true].min() < 0.5  # some class's map differs from the true class's
        for i in range(len(varying)):
            for j in range(i + 1, len(varying)):
                map_similarity.append(correlation[i, j].item())
                weight_similarity.append(torch.corrcoef(alphas[n, [varying[i], varying[j]]])[0, 1].item())
    assert max(map_similarity) > 0.9  # some pairs of classes do give nearly the same map
    assert stats.spearmanr(weight_similarity, map_similarity).statistic > 0.5
