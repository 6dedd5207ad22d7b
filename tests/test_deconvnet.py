"""Chapter 07: deconvnet, guided backprop, the deconvolutional network, top activations, limitations."""

import copy
import itertools
import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_unchanged, state_of
from scipy import stats
from torch import nn

from xai_course import data, deconvnet, gradient, inversion, models

# ----------------------------------------------------------------------------- a network small enough to do by hand


class Small(nn.Module):
    """conv 3x3 (1 -> 2 channels) -> ReLU -> max-pool 2 -> flatten -> linear (8 -> 3), on 6 x 6 images."""

    def __init__(self):
        super().__init__()
        self.conv, self.relu, self.pool = nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2)
        self.flatten, self.fc = nn.Flatten(), nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.relu(self.conv(x)))))


@pytest.fixture
def small():
    torch.manual_seed(0)
    return Small().eval()


def by_hand(net: Small, x: torch.Tensor, r_pooled: torch.Tensor, rule: str) -> torch.Tensor:
    """Forward and backward of one image (1, 6, 6) by explicit loops in float64, from r at the pooled layer.

    rule: "gradient" (R 1[z > 0]), "deconvnet" (max(R, 0)) or "guided" (max(R, 0) 1[z > 0]) at the ReLU.
    """
    w, b, x = net.conv.weight.double(), net.conv.bias.double(), x.double()
    z = torch.zeros(2, 4, 4, dtype=torch.float64)
    for c, i, j in itertools.product(range(2), range(4), range(4)):
        z[c, i, j] = b[c] + sum(w[c, 0, u, v] * x[0, i + u, j + v] for u in range(3) for v in range(3))
    a = z.clamp(min=0)
    r_a = torch.zeros(2, 4, 4, dtype=torch.float64)
    for c, p, q in itertools.product(range(2), range(2), range(2)):  # unpool: to the window's argmax (switch)
        window = [(2 * p + u, 2 * q + v) for u in range(2) for v in range(2)]
        i, j = max(window, key=lambda ij: a[c, ij[0], ij[1]].item())
        r_a[c, i, j] += r_pooled[c, p, q]
    gate = {"gradient": r_a * (z > 0), "deconvnet": r_a.clamp(min=0), "guided": r_a.clamp(min=0) * (z > 0)}
    r_z, r_x = gate[rule], torch.zeros(1, 6, 6, dtype=torch.float64)
    for c, i, j, u, v in itertools.product(range(2), range(4), range(4), range(3), range(3)):
        r_x[0, i + u, j + v] += w[c, 0, u, v] * r_z[c, i, j]  # the transposed filter
    return r_x


@pytest.mark.parametrize("rule", ["gradient", "deconvnet", "guided"])
def test_rules_equal_the_backward_pass_by_hand(small, rule):
    torch.manual_seed(1)
    x = torch.randn(4, 1, 6, 6)
    target = torch.tensor([0, 1, 2, 1])
    method = {"gradient": lambda *a: gradient.saliency(*a, abs=False), "deconvnet": deconvnet.deconvnet}
    ours = method.get(rule, deconvnet.guided_backprop)(small, x, target)
    for n in range(4):
        r_pooled = small.fc.weight[target[n]].double().view(2, 2, 2)  # dS_c / d(pooled) = row c of W
        assert torch.allclose(ours[n].double(), by_hand(small, x[n], r_pooled, rule), atol=1e-6)
    if rule != "gradient":  # the rule matters: not the plain gradient
        assert (ours - gradient.saliency(small, x, target, abs=False)).abs().max() > 1e-3


def test_project_equals_the_deconvolutional_network_by_hand(small):
    torch.manual_seed(2)
    x = torch.randn(3, 1, 6, 6)
    pooled = small.pool(small.relu(small.conv(x))).detach()
    for channel, position in ((0, (1, 0)), (1, (0, 1))):
        ours = deconvnet.project(small, x, "pool", channel, position=position)
        for n in range(3):
            kept = torch.zeros(2, 2, 2, dtype=torch.float64)
            kept[(channel, *position)] = pooled[(n, channel, *position)]
            assert torch.allclose(ours[n].double(), by_hand(small, x[n], kept, "deconvnet"), atol=1e-6)
    whole = deconvnet.project(small, x, "pool", 1)  # the whole feature map 1
    kept = torch.zeros(2, 2, 2, dtype=torch.float64)
    kept[1] = pooled[0, 1]
    assert torch.allclose(whole[0].double(), by_hand(small, x[0], kept, "deconvnet"), atol=1e-6)


def test_unpool_by_hand():
    a = torch.tensor([[1.0, 2, 0, 1], [3, 0, 1, 5], [0, 4, 2, 2], [1, 1, 3, 0]]).view(1, 1, 4, 4)
    pooled, switches = F.max_pool2d(a, 2, return_indices=True)
    assert pooled.flatten().tolist() == [3, 5, 4, 3]
    expected = torch.tensor([[0.0, 0, 0, 0], [3, 0, 0, 5], [0, 4, 0, 0], [0, 0, 3, 0]]).view(1, 1, 4, 4)
    assert torch.equal(deconvnet.unpool(pooled, switches, a.shape), expected)
    overlapping, switches = F.max_pool2d(a, 2, stride=1, return_indices=True)  # a shared switch adds up
    assert deconvnet.unpool(overlapping, switches, a.shape)[0, 0, 1, 3] == 10
    with pytest.raises(ValueError, match="switches"):
        deconvnet.unpool(pooled, switches, a.shape)


# ----------------------------------------------------------------------------- against Captum on the course models


def captum_map(method: str, model: nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    captum = pytest.importorskip("captum.attr")
    explainer = {"deconvnet": captum.Deconvolution, "guided_backprop": captum.GuidedBackprop}[method]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Captum announces its hooks
        return explainer(model).attribute(x, target=target)


@pytest.mark.parametrize("name", ["shapes_cnn", "shapes_cnn_clever_hans"])
@pytest.mark.parametrize("method", ["deconvnet", "guided_backprop"])
def test_equal_captum_on_course_models(name, method):
    model = models.load(name)
    x = data.canonical(8).images
    for target in (model(x).argmax(1), 3):
        ours = getattr(deconvnet, method)(model, x, target)
        assert (ours - captum_map(method, model, x, target)).abs().max() <= 1e-6
        assert ours.abs().max() > 0.1


class SeparateReLUs(nn.Module):
    """shapes_resnet with one ReLU module per call and out-of-place residual sums: the same function."""

    def __init__(self, resnet: nn.Module):
        super().__init__()
        self.resnet, self.relus = resnet, nn.ModuleList(nn.ReLU() for _ in range(7))

    def forward(self, x):
        r, relu = self.resnet, iter(self.relus)
        x = r.maxpool(next(relu)(r.bn1(r.conv1(x))))
        for b in (r.layer1, r.layer2, r.layer3):
            identity = x if b.downsample is None else b.downsample(x)
            x = next(relu)(b.bn2(b.conv2(next(relu)(b.bn1(b.conv1(x))))) + identity)
        return r.fc(torch.flatten(r.avgpool(x), 1))


@pytest.mark.parametrize("method", ["deconvnet", "guided_backprop"])
def test_resnet_with_reused_inplace_relu_equals_captum_on_separate_relus(method):
    model = models.load("shapes_resnet")
    before = state_of(model)
    x = data.canonical(4).images
    separate = SeparateReLUs(copy.deepcopy(model)).eval()
    assert torch.equal(separate(x), model(x))
    target = model(x).argmax(1)
    ours = getattr(deconvnet, method)(model, x, target)
    assert_unchanged(before, model)  # the in-place flags too
    assert (ours - captum_map(method, separate, x, target)).abs().max() <= 1e-6
    assert (ours - getattr(deconvnet, method)(separate, x, target)).abs().max() <= 1e-6
    assert (ours - gradient.saliency(model, x, target, abs=False)).abs().max() > 1e-2


class Functional(nn.Module):
    """ReLUs written three ways without modules (F.relu, an in-place method, torch.relu), or as modules."""

    def __init__(self, modules: bool):
        super().__init__()
        torch.manual_seed(3)
        self.conv1, self.conv2, self.conv3 = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 3)
        self.fc = nn.Linear(4 * 2 * 2, 3)
        self.relus = nn.ModuleList(nn.ReLU() for _ in range(3)) if modules else None

    def forward(self, x):
        if self.relus is not None:
            a = self.relus[2](self.conv3(self.relus[1](self.conv2(self.relus[0](self.conv1(x))))))
        else:
            a = torch.relu(self.conv3(self.conv2(F.relu(self.conv1(x))).relu_()))
        return self.fc(a.flatten(1))


@pytest.mark.parametrize("method", ["deconvnet", "guided_backprop"])
def test_functional_relus_are_seen(method):
    x = torch.rand(2, 3, 8, 8)
    functional, modules = Functional(modules=False).eval(), Functional(modules=True).eval()
    ours = getattr(deconvnet, method)(functional, x, 1)
    assert torch.equal(ours, getattr(deconvnet, method)(modules, x, 1))
    assert (ours - captum_map(method, modules, x, 1)).abs().max() <= 1e-6
    assert (ours - gradient.saliency(functional, x, 1, abs=False)).abs().max() > 1e-3
    twice = nn.Sequential(modules.conv1, nn.ReLU(), nn.ReLU(), nn.Conv2d(4, 1, 6), nn.Flatten()).eval()
    once = nn.Sequential(*twice[:2], *twice[3:]).eval()  # both rules are idempotent: max(max(R, 0), 0)
    assert torch.equal(getattr(deconvnet, method)(twice, x, 0), getattr(deconvnet, method)(once, x, 0))


class HalfRectified(nn.Module):
    """A ReLU module, then a ReLU on half of the channels only: in place on a view, or written out."""

    def __init__(self, in_place: bool):
        super().__init__()
        torch.manual_seed(4)
        self.conv1, self.relu, self.conv2 = nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3)
        self.fc, self.in_place = nn.Linear(4 * 4 * 4, 3), in_place

    def forward(self, x):
        a = self.conv2(self.relu(self.conv1(x)))
        if self.in_place:
            a[:, :2].relu_()  # the ReLU's node hides behind the view's CopySlices node
        else:
            a = torch.cat([a[:, :2].relu(), a[:, 2:]], 1)
        return self.fc(a.flatten(1))


@pytest.mark.parametrize("method", ["deconvnet", "guided_backprop"])
def test_an_in_place_relu_on_a_view_gets_the_rule(method):
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    explain = getattr(deconvnet, method)
    in_place, written_out = HalfRectified(True).eval(), HalfRectified(False).eval()
    ours = explain(in_place, x, 1)
    assert (ours - explain(written_out, x, 1)).abs().max() <= 1e-6
    assert (ours - gradient.saliency(in_place, x, 1, abs=False)).abs().max() > 1e-3


def test_captum_deconvolution_on_two_relus_in_a_row():
    """Cited in chapter 07: with two ReLU modules in a row, Captum 0.9's ``Deconvolution`` returns guided backprop.

    Its hooks record the gradient arriving at the first ReLU's output before the second ReLU's hook has replaced
    it, so the first ReLU rectifies the plain gradient, whose forward mask is then already applied. Ours gives
    the same map with one ReLU or two (``test_functional_relus_are_seen``). If Captum changes, update chapter 07.
    """
    conv = Functional(modules=True).conv1
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    twice = nn.Sequential(conv, nn.ReLU(), nn.ReLU(), nn.Conv2d(4, 1, 6), nn.Flatten()).eval()
    once = nn.Sequential(*twice[:2], *twice[3:]).eval()
    theirs = captum_map("deconvnet", twice, x, 0)
    assert (theirs - captum_map("deconvnet", once, x, 0)).abs().max() > 1e-2
    assert (theirs - deconvnet.guided_backprop(once, x, 0)).abs().max() <= 1e-6
    assert (deconvnet.deconvnet(twice, x, 0) - captum_map("deconvnet", once, x, 0)).abs().max() <= 1e-6


def test_other_activations_are_refused():
    x = torch.rand(2, 3, 8, 8)
    for activation in (nn.GELU(), nn.LeakyReLU(), nn.Sigmoid()):
        model = nn.Sequential(nn.Conv2d(3, 2, 3), activation, nn.Flatten(), nn.Linear(72, 2)).eval()
        before = state_of(model)
        with pytest.raises(NotImplementedError, match="ReLU only"):
            deconvnet.guided_backprop(model, x)
        assert_unchanged(before, model)

    class Clamped(nn.Module):
        def forward(self, x):
            return x.clamp(min=0).flatten(1)

    with pytest.raises(NotImplementedError, match="clamp"):
        deconvnet.deconvnet(Clamped(), torch.rand(2, 3))


def test_contract(small):
    torch.manual_seed(4)
    x = torch.randn(3, 1, 6, 6)
    before = state_of(small)
    for method in (deconvnet.deconvnet, deconvnet.guided_backprop):
        batched = method(small, x)
        assert batched.shape == x.shape and batched.dtype == x.dtype and not batched.requires_grad
        assert torch.equal(batched, method(small, x, small(x).argmax(1)))
        assert torch.allclose(method(small, x[1]), batched[1], atol=1e-7)
        with pytest.raises(ValueError, match="target"):
            method(small, x, 5)
        with pytest.raises(TypeError, match="x"):
            method(small, x.numpy())
        assert_unchanged(before, small)
    small.train()
    deconvnet.guided_backprop(small, x)
    assert small.training and small.conv.training


# ----------------------------------------------------------------------------- the explicit deconvolutional network


def test_project_from_the_logits_equals_deconvnet():
    model = models.load("shapes_cnn")
    x = data.canonical(8).images
    logits = model(x).detach()
    target = logits.argmax(1)
    maps = deconvnet.deconvnet(model, x, target)
    for n in range(len(x)):
        logit = logits[n, target[n]]
        assert logit > 0  # the projection starts from the logit's value; the deconvnet from 1
        projection = deconvnet.project(model, x[n], "classifier.2", int(target[n]))
        assert (projection / logit - maps[n]).abs().max() <= 1e-5


def test_project_on_a_time_series_model_with_global_average_pooling():
    model = models.load("timeseries_cnn")
    x = data.timeseries(4).series
    logits = model(x).detach()
    target = int(logits[0].argmax())
    assert logits[0, target] > 0
    projection = deconvnet.project(model, x[:1], "classifier", target)
    assert (projection / logits[0, target] - deconvnet.deconvnet(model, x[:1], target)).abs().max() <= 1e-5


class Weighted(nn.Module):
    """A fixed linear head: the sum of its input times ``w``."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.register_buffer("w", w)

    def forward(self, a):
        return (a * self.w).flatten(1).sum(1, keepdim=True)


def test_project_inside_the_network_equals_captum_on_the_truncated_network():
    model = models.load("shapes_cnn")
    x = data.canonical(2).images
    truncated = nn.Sequential(*model.features[:6]).eval()  # up to the second max-pool, 16 x 16
    a = truncated(x).detach()
    one = deconvnet.project(model, x, "features.5", 7, position=(4, 9))
    reference = captum_map("deconvnet", truncated, x, (7, 4, 9)) * a[:, 7, 4, 9].view(-1, 1, 1, 1)
    assert (one - reference).abs().max() <= 1e-5 and one.abs().max() > 1e-2
    whole = deconvnet.project(model, x, "features.5", 7)
    kept = torch.zeros_like(a[:1])
    kept[:, 7] = a[:1, 7]
    head = nn.Sequential(truncated, Weighted(kept)).eval()
    reference = captum_map("deconvnet", head, x[:1], 0)
    assert (whole[:1] - reference).abs().max() <= 1e-5
    at_max = deconvnet.project(model, x[:1], "features.5", 7, position="max")
    i, j = divmod(int(a[0, 7].argmax()), 16)
    assert torch.equal(at_max, deconvnet.project(model, x[:1], "features.5", 7, position=(i, j)))
    assert torch.equal(deconvnet.project(model, x, "features", 7), deconvnet.project(model, x, "features.10", 7))


def test_project_refuses_what_it_cannot_walk(small):
    x = data.canonical(1).images
    resnet = models.load("shapes_resnet")
    before = state_of(resnet)
    with pytest.raises(NotImplementedError, match="relu \\(ReLU\\) is called 2 times"):
        deconvnet.project(resnet, x, "layer1.conv1", 0)
    assert_unchanged(before, resnet)
    functional = Functional(modules=False).eval()
    with pytest.raises(NotImplementedError, match="do not give its output"):
        deconvnet.project(functional, x[:, :, :8, :8], "conv3", 0)
    gelu = nn.Sequential(nn.Conv2d(3, 2, 3), nn.GELU(), nn.Flatten(), nn.Linear(2 * 62 * 62, 2)).eval()
    with pytest.raises(NotImplementedError, match="GELU.*no deconvolutional counterpart"):
        deconvnet.project(gelu, x, "0", 0)
    y = torch.randn(1, 1, 6, 6)
    with pytest.raises(ValueError, match="layer: expected one of the layers"):
        deconvnet.project(small, y, "conv2", 0)
    with pytest.raises(ValueError, match="channel"):
        deconvnet.project(small, y, "conv", 2)
    with pytest.raises(ValueError, match="position"):
        deconvnet.project(small, y, "conv", 0, position=(4, 0))
    with pytest.raises(ValueError, match="position"):
        deconvnet.project(small, y, "conv", 0, position="min")


# ----------------------------------------------------------------------------- top activations


def test_top_activations_against_brute_force():
    model = models.load("shapes_cnn")
    images = data.shapes(40, seed=5).images
    gallery = deconvnet.top_activations(model, images, "features.5", 3, k=5, batch_size=16)
    a = model.features[:6](images).detach()[:, 3]  # (N, 16, 16)
    best = a.flatten(1).max(1).values
    assert torch.equal(gallery.indices, torch.argsort(best, descending=True)[:5])
    assert torch.equal(gallery.activations, best[gallery.indices])
    for n, (i, j) in zip(gallery.indices, gallery.positions.tolist()):
        assert a[n, i, j] == a[n].max()
    for r, (index, position) in enumerate(zip(gallery.indices, gallery.positions)):
        expected = deconvnet.project(model, images[index], "features.5", 3, position=tuple(position.tolist()))
        assert torch.allclose(gallery.projections[r], expected, atol=1e-6)  # batched: other rounding
        # two 3x3 convolutions (padding 1) and two 2x2 max-pools: rows 4 i - 3 ... 4 i + 6
        (i, j), box = position.tolist(), gallery.boxes[r].tolist()
        assert box == [max(4 * i - 3, 0), min(4 * i + 7, 64), max(4 * j - 3, 0), min(4 * j + 7, 64)]
        outside = expected.clone()
        outside[:, box[0] : box[1], box[2] : box[3]] = 0
        assert outside.abs().max() == 0 and expected.abs().max() > 0
        assert gallery.patches[r].shape == (3, box[1] - box[0], box[3] - box[2])
        patch = gallery.projections[r][:, box[0] : box[1], box[2] : box[3]]
        assert torch.equal(gallery.projection_patches[r], patch)
    hidden = deconvnet.top_activations(model, data.Shapes(images, None, None), "classifier.1", 0, k=2)
    assert hidden.positions.shape == (2, 0) and hidden.boxes.tolist() == [[0, 64, 0, 64]] * 2
    with pytest.raises(ValueError, match="k"):
        deconvnet.top_activations(model, images, "features.5", 3, k=41)


# ----------------------------------------------------------------------------- limitations, measured


def test_target_similarity_against_explicit_pairs():
    model = models.load("shapes_cnn")
    x = data.canonical(3).images
    method = lambda m, x, t: gradient.saliency(m, x, t, abs=False)  # noqa: E731
    result = deconvnet.target_similarity(method, model, x, [0, 2, 3])
    maps = [method(model, x, t) for t in (0, 2, 3)]
    for n in range(3):
        pairs = list(itertools.combinations(maps, 2))
        cosine = sum(float((p[n] * q[n]).sum() / (p[n].norm() * q[n].norm())) for p, q in pairs) / 3
        rho = sum(stats.spearmanr(p[n].abs().sum(0).flatten(), q[n].abs().sum(0).flatten())[0] for p, q in pairs) / 3
        assert abs(result.cosine[n].item() - cosine) < 1e-5
        assert abs(result.spearman[n].item() - rho) < 1e-9
    assert result.maps.shape == (3, 3, 3, 64, 64) and result.targets == [0, 2, 3]
    with pytest.raises(ValueError, match="targets"):
        deconvnet.target_similarity(method, model, x, [1, 1])
    with pytest.raises(ValueError, match="targets"):
        deconvnet.target_similarity(method, model, x, [0, 4])


def test_upsampler_starts_from_bilinear_and_training_is_seeded():
    low = torch.rand(2, 3, 32, 32)
    bilinear = F.interpolate(low, scale_factor=2, mode="bilinear", align_corners=False)
    for upsampling in inversion.UPSAMPLING:
        assert torch.equal(deconvnet.Upsampler(upsampling=upsampling)(low), bilinear)
    first = deconvnet.train_upsampler(n_train=64, n_test=8, epochs=1, width=8, seed=1)
    second = deconvnet.train_upsampler(n_train=64, n_test=8, epochs=1, width=8, seed=1)
    assert first.rmse == second.rmse and first.history == second.history
    test = data.shapes(8, "test", seed=1).images
    low = deconvnet.downsample(test)
    assert torch.allclose(low[0, :, 0, 0], test[0, :, :2, :2].mean((1, 2)), atol=1e-7)
    with torch.no_grad():
        output = first.net(low)
    bilinear = F.interpolate(low, scale_factor=2, mode="bilinear", align_corners=False)
    assert first.rmse == pytest.approx(((output - test) ** 2).flatten(1).mean(1).sqrt().mean().item(), rel=1e-6)
    assert first.rmse_bilinear == pytest.approx(((bilinear - test) ** 2).flatten(1).mean(1).sqrt().mean().item())
    assert first.rmse != first.rmse_bilinear and first.seconds > 0
    with pytest.raises(ValueError, match="kernel_size"):
        deconvnet.Upsampler(kernel_size=4)
    with pytest.raises(ValueError, match="upsampling"):
        deconvnet.train_upsampler(upsampling="pixel_shuffle")


def test_transposed_convolution_overlaps_unevenly():
    """Odena et al.: kernel 3, stride 2 covers the output pixels unevenly; a resize-convolution evenly."""
    constant = torch.ones(1, 1, 8, 8)
    transposed = nn.ConvTranspose2d(1, 1, 3, 2, 1, output_padding=1, bias=False)
    resize = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(1, 1, 3, padding=1, bias=False))
    with torch.no_grad():
        for layer in (transposed, resize[1]):
            layer.weight.fill_(1.0)
        assert inversion.checkerboard(transposed(constant))[0] > 0.5
        assert inversion.checkerboard(resize(constant)[:, :, 1:-1, 1:-1])[0] == 0


def test_downsample_averages_blocks_and_refuses_series():
    images = torch.rand(2, 1, 5, 7)
    loop = torch.tensor(
        [
            [[[images[n, 0, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].mean() for j in range(3)] for i in range(2)]]
            for n in range(2)
        ]
    ).view(2, 1, 2, 3)
    assert torch.allclose(deconvnet.downsample(images), loop)
    with pytest.raises(TypeError, match="images: expected a float tensor"):
        deconvnet.downsample(torch.rand(2, 3, 17))
