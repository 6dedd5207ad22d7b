"""Chapter 02: exact Shapley values, Kernel SHAP, Deep SHAP, superpixels."""

import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import UnrolledBlock, assert_unchanged, state_of
from sklearn.tree import DecisionTreeRegressor
from torch import nn

from xai_course import core, data, lrp, models, shap


def linear_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 2, 1), nn.Flatten(), nn.Linear(2 * 8 * 8, 3)).eval()


def sum_model() -> nn.Module:
    """A nonlinear model of the total pixel sum only: segments with equal sums are interchangeable."""
    torch.manual_seed(0)
    first = nn.Linear(3 * 8 * 8, 4)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([1.0, -1.0, 0.5, 2.0]).view(4, 1).expand(4, 192) / 50)
    return nn.Sequential(nn.Flatten(), first, nn.Tanh(), nn.Linear(4, 2)).eval()


@pytest.fixture
def images():
    torch.manual_seed(1)
    return torch.rand(2, 3, 8, 8)


def grid(x, n=6):
    return shap.superpixels(x, n_segments=n, method="grid")


def logit(model, x, target):
    with torch.no_grad():
        return model(x)[torch.arange(x.shape[0]), target]


# ----------------------------------------------------------------------------- superpixels


def test_superpixels_grid_and_slic():
    x = data.canonical(2).images
    g = shap.superpixels(x, n_segments=12, method="grid")
    assert g.shape == (2, 64, 64) and g.dtype == torch.long
    assert torch.equal(torch.unique(g), torch.arange(12))
    assert torch.equal(shap.superpixels(x, n_segments=4, method="grid")[0, ::32, ::32], torch.tensor([[0, 1], [2, 3]]))
    s = shap.superpixels(x, n_segments=16)
    for labels in s:
        m = int(labels.max()) + 1
        assert 4 <= m <= 32 and torch.equal(torch.unique(labels), torch.arange(m))
    assert shap.superpixels(x[0], n_segments=16).shape == (64, 64)
    with pytest.raises(ValueError, match="method"):
        shap.superpixels(x, method="quickshift")


# ----------------------------------------------------------------------------- exact


def test_exact_equals_closed_form_on_linear_model(images):
    model = linear_model()
    seg = grid(images)
    attribution, phi = shap.exact(model, images, 1, segments=seg, baseline=0.25, return_values=True)
    # f linear: phi_i = sum over the pixels of segment i of w * (x - baseline)
    x = images.clone().requires_grad_(True)
    (w,) = torch.autograd.grad(model(x)[:, 1].sum(), x)
    pixel = (w * (images - 0.25)).sum(1)
    closed = torch.stack([torch.bincount(s.flatten(), p.flatten()) for s, p in zip(seg, pixel)])
    assert torch.allclose(phi, closed, atol=1e-5)
    delta = logit(model, images, 1) - logit(model, torch.full_like(images, 0.25), 1)
    assert torch.allclose(attribution.sum((1, 2, 3)), delta, atol=1e-5)
    # each segment's value spread evenly over its pixels and channels
    assert torch.allclose(attribution[0, :, 0, 0] * 3 * 12, phi[0, 0].expand(3), atol=1e-6)


def test_exact_axioms_efficiency_symmetry_dummy():
    model = sum_model()
    torch.manual_seed(2)
    x = torch.rand(3, 8, 8)
    x[:, :4, 3:6] = x[:, :4, :3]  # segment 1 is a copy of segment 0: same sum, symmetric players
    x[:, 4:, 6:] = 0.5  # segment 5 equals the baseline: a dummy player
    seg = grid(x)
    attribution, phi = shap.exact(model, x, 0, segments=seg, baseline=0.5, return_values=True)
    assert attribution.shape == x.shape
    delta = logit(model, x[None], 0) - logit(model, torch.full_like(x[None], 0.5), 0)
    assert abs(phi.sum() - delta[0]) < 1e-5 and abs(attribution.sum() - delta[0]) < 1e-5
    assert abs(phi[0] - phi[1]) < 1e-5
    assert abs(phi[5]) < 1e-6
    assert phi[:5].abs().min() > 1e-3  # the others are not trivially zero


def test_shapley_from_values_by_hand():
    # v(S) for M = 2 with codes 0: {}, 1: {0}, 2: {1}, 3: {0, 1}
    v = torch.tensor([0.0, 1.0, 2.0, 5.0], dtype=torch.float64)
    assert torch.allclose(shap.shapley_from_values(v), torch.tensor([2.0, 3.0], dtype=torch.float64))
    assert torch.allclose(shap.shapley_weights(3), torch.tensor([1 / 3, 1 / 6, 1 / 3], dtype=torch.float64))


def test_exact_evaluates_each_coalition_once(images):
    calls = []
    model = linear_model()
    model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    shap.exact(model, images[0], segments=grid(images[0]), batch_size=20)
    assert calls[1:] == [20, 20, 20, 4]  # first call: the prediction; then 2^6 coalitions in batches


def test_exact_refuses_too_many_players(images):
    seg = torch.arange(64).view(8, 8) % 21
    with pytest.raises(ValueError, match="segments.*kernel"):
        shap.exact(linear_model(), images, segments=seg)


@pytest.mark.parametrize("baseline", ["mean", "blur", 0.3, torch.rand(3, 8, 8)])
def test_baselines_and_efficiency(tiny, images, baseline):
    seg = grid(images)
    attribution = shap.exact(tiny, images, segments=seg, baseline=baseline)
    target = tiny(images).argmax(1)
    reference = core.baseline_like(images, baseline)
    delta = logit(tiny, images, target) - logit(tiny, reference, target)
    assert torch.allclose(attribution.sum((1, 2, 3)), delta, atol=1e-5)


def test_contract_and_model_unchanged(tiny, images):
    before = state_of(tiny)
    seg = grid(images)
    for method in (shap.exact, shap.kernel):
        out = method(tiny, images, segments=seg)
        assert out.shape == images.shape and out.dtype == images.dtype and not out.requires_grad
        single = method(tiny, images[0], segments=seg[0])
        assert single.shape == images[0].shape
    out = shap.deep(tiny, images, background=images.flip(0))
    assert out.shape == images.shape
    assert_unchanged(before, tiny)


def test_bad_arguments(tiny, images):
    with pytest.raises(ValueError, match="segments"):
        shap.exact(tiny, images, segments=torch.zeros(3, 8, 8, dtype=torch.long))
    with pytest.raises(TypeError, match="segments"):
        shap.exact(tiny, images, segments=torch.zeros(8, 8))
    with pytest.raises(ValueError, match="baseline"):
        shap.exact(tiny, images, segments=grid(images), baseline="white")
    with pytest.raises(ValueError, match="n_samples"):
        shap.kernel(tiny, images, segments=grid(images), n_samples=0)
    with pytest.raises(TypeError, match="model"):
        shap.deep("model", images, background=images)


# ----------------------------------------------------------------------------- Kernel SHAP


def pairwise_game(m: int):
    """v(z) = a . z + sum_{i<j} b_ij z_i z_j and its Shapley values a_i + (sum_j b_ij) / 2."""
    torch.manual_seed(m)
    a, b = torch.randn(m, dtype=torch.float64), torch.randn(m, m, dtype=torch.float64).triu(1)
    return lambda z: z.double() @ a + ((z.double() @ b) * z.double()).sum(1), a + (b.sum(0) + b.sum(1)) / 2


def test_kernel_allocation():
    assert [shap.kernel_pairs(12, s) for s in range(1, 7)] == [12, 66, 220, 495, 792, 462]  # 462 = C(12, 6) / 2
    assert shap.kernel_allocation(12, 2**11 - 1) == {s: shap.kernel_pairs(12, s) for s in range(1, 7)}  # all
    k = shap.kernel_allocation(12, 128)
    assert sum(k.values()) == 128 and k[1] == 12  # size 1 (and 11) enumerated, the rest drawn
    assert max(k[s] for s in range(2, 6)) - min(k[s] for s in range(2, 6)) <= 1 and abs(2 * k[6] - k[2]) <= 2
    assert shap.kernel_allocation(12, 512)[2] == 66  # a larger budget enumerates sizes 2 and 10 too


def test_kernel_coalitions():
    z, w = shap.kernel_coalitions(10, 200, np.random.default_rng(0))
    assert z.shape == (200, 10) and abs(w.sum() - 1) < 1e-12
    assert torch.equal(z[100:], ~z[:100]) and torch.equal(w[100:], w[:100])  # each with its complement, same weight
    assert len({tuple(row.tolist()) for row in z}) == 200  # drawn without replacement
    sizes = z.sum(1)
    assert ((sizes == 1) | (sizes == 9)).sum() == 20  # sizes 1 and 9 enumerated in full first
    kernel_mass = torch.tensor([9 / (s * (10 - s)) for s in range(1, 10)], dtype=torch.float64)
    mass = torch.stack([w[sizes == s].sum() for s in range(1, 10)])
    assert torch.allclose(mass, kernel_mass / kernel_mass.sum())  # each size carries its share of the kernel
    counts = torch.bincount(sizes, minlength=10)[2:9]
    assert counts.max() - counts.min() <= 2  # leverage scores: the drawn sizes equally often


@pytest.mark.parametrize("m", [9, 10])
def test_kernel_is_exact_on_pairwise_games_at_any_budget(m):
    game, phi_exact = pairwise_game(m)
    all_z = torch.arange(2**m).unsqueeze(1) >> torch.arange(m) & 1 == 1
    assert torch.allclose(shap.shapley_from_values(game(all_z)), phi_exact)
    for n in (40, 64, 300):
        z, w = shap.kernel_coalitions(m, n, np.random.default_rng(n))
        v_full = game(torch.ones(1, m, dtype=torch.bool))[0]
        phi = shap.kernel_weighted_least_squares(z, w, game(z), 0.0, v_full)
        assert torch.allclose(phi, phi_exact, atol=1e-9)
        assert shap.kernel_standard_error(z, w, game(z), 0.0, phi).max() < 1e-6  # and knows it
    z, w = shap.kernel_coalitions(m, 64, np.random.default_rng(0))
    cubic = lambda z: game(z) + z[:, :3].all(1).double()  # a three-player interaction breaks it
    phi = shap.kernel_weighted_least_squares(z, w, cubic(z), 0.0, v_full + 1)
    assert (phi - phi_exact - torch.arange(m).lt(3) / 3).abs().max() > 1e-3


def test_kernel_shapley_with_more_players_than_an_int64_has_bits():
    game, phi_exact = pairwise_game(70)
    phi, error = shap.kernel_shapley(game, 70, 256, seed=0)
    assert torch.allclose(phi, phi_exact, atol=1e-9) and error.max() < 1e-6


def test_tree_shapley_equals_enumeration():
    m = 7
    all_z = torch.arange(2**m).unsqueeze(1) >> torch.arange(m) & 1 == 1
    torch.manual_seed(0)
    fitted = DecisionTreeRegressor(max_depth=5, random_state=0).fit(all_z[::3].numpy(), torch.randn(43).numpy())
    assert fitted.get_depth() == 5 and fitted.get_n_leaves() > 8  # paths with present and absent players
    values = torch.from_numpy(fitted.predict(all_z.numpy())).double()
    assert torch.allclose(shap.tree_shapley(fitted, m), shap.shapley_from_values(values), atol=1e-12)


def test_kernel_adjusted_captures_what_the_regression_misses():
    m = 12
    torch.manual_seed(1)
    a = torch.randn(m, dtype=torch.float64)
    game = lambda z: z.double() @ a + 4 * z[:, :3].all(1).double()  # additive, plus three players together
    phi_exact = a + 4 / 3 * torch.arange(m).lt(3)
    v_full = game(torch.ones(1, m, dtype=torch.bool))[0]
    z, w = shap.kernel_coalitions(m, 256, np.random.default_rng(0))
    for rows, w_half in shap._halves(z, w):  # each half keeps the pairs and each size's kernel mass
        size = z[rows].sum(1)
        assert torch.equal(z[rows][: len(size) // 2], ~z[rows][len(size) // 2 :])
        assert torch.allclose(torch.stack([w_half[size == s].sum() for s in range(1, m)]),
                              torch.stack([w[z.sum(1) == s].sum() for s in range(1, m)]))  # fmt: skip
    plain = shap.kernel_weighted_least_squares(z, w, game(z), 0.0, v_full)
    plain_error = shap.kernel_standard_error(z, w, game(z), 0.0, plain)
    adjusted, adjusted_error = shap.kernel_adjusted(z, w, game(z), 0.0, v_full)
    assert (adjusted - phi_exact).abs().max() < 0.3 * (plain - phi_exact).abs().max()  # the tree finds the three
    assert adjusted_error.mean() < 0.3 * plain_error.mean()  # and the standard errors say so
    assert abs(adjusted.sum() - v_full) < 1e-9  # efficiency
    chosen, chosen_error = shap.kernel_shapley(game, m, 256, seed=0)  # the same coalitions: it keeps the tree
    assert (chosen - phi_exact).abs().max() < 0.3 * (plain - phi_exact).abs().max()
    assert chosen_error.mean() < 0.3 * plain_error.mean()
    z, w = shap.kernel_coalitions(m, 2**m - 2, np.random.default_rng(0))  # everything enumerated: exact
    adjusted, adjusted_error = shap.kernel_adjusted(z, w, game(z), 0.0, v_full)
    assert torch.allclose(adjusted, phi_exact) and not adjusted_error.any()
    with pytest.raises(ValueError, match="z: expected pairs enough"):
        shap.kernel_adjusted(z[[0, -1]], w[[0, -1]], game(z[[0, -1]]), 0.0, v_full)


@pytest.mark.parametrize("m", [1, 2, 3, 6, 7])
def test_kernel_equals_exact_at_full_budget(tiny, images, m):
    seg = torch.arange(64).view(8, 8) % m
    _, exact = shap.exact(tiny, images, segments=seg, return_values=True)
    n = max(2**m - 2, 2)
    _, phi, error = shap.kernel(tiny, images, segments=seg, n_samples=n, return_values=True, return_error=True)
    assert phi.shape == error.shape == (2, m) and torch.allclose(phi, exact, atol=1e-5)
    assert torch.equal(error, torch.zeros_like(error))  # nothing drawn, nothing uncertain
    _, single = shap.kernel(tiny, images[0], segments=seg, n_samples=n, return_values=True)
    assert single.shape == (m,) and torch.allclose(single, exact[0], atol=1e-5)


def test_kernel_converges_and_is_seeded():
    model = sum_model()
    torch.manual_seed(3)
    x = torch.rand(3, 8, 8)
    seg = torch.arange(64).view(8, 8) % 12
    _, exact = shap.exact(model, x, segments=seg, return_values=True)
    errors = [
        (shap.kernel(model, x, segments=seg, n_samples=n, return_values=True)[1] - exact).abs().max()
        for n in (40, 400, 4094)
    ]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-5
    a, error_a = shap.kernel(model, x, segments=seg, n_samples=100, seed=5, return_error=True)
    b, error_b = shap.kernel(model, x, segments=seg, n_samples=100, seed=5, return_error=True)
    assert torch.equal(a, b) and torch.equal(error_a, error_b)
    assert not torch.equal(a, shap.kernel(model, x, segments=seg, n_samples=100, seed=6))
    g = lambda: torch.Generator().manual_seed(5)
    b = shap.kernel(model, x, segments=seg, n_samples=100, seed=g())
    assert torch.equal(b, shap.kernel(model, x, segments=seg, n_samples=100, seed=g())) and not torch.equal(a, b)
    delta = logit(model, x[None], 0) - logit(model, x.mean((1, 2), keepdim=True).expand_as(x)[None], 0)
    assert abs(a.sum() - delta[0]) < 1e-5  # efficiency holds at any budget


def test_kernel_standard_error_matches_the_spread_over_seeds(tiny):
    torch.manual_seed(3)
    x = torch.rand(3, 8, 8)
    seg = torch.arange(64).view(8, 8) % 12
    _, exact = shap.exact(tiny, x, segments=seg, return_values=True)
    typical = {}
    for n in (128, 512):
        runs = [shap.kernel(tiny, x, segments=seg, n_samples=n, seed=s, return_values=True, return_error=True)
                for s in range(40)]  # fmt: skip
        error = torch.stack([phi for _, phi, _ in runs]).double() - exact.double()
        predicted = torch.stack([e for _, _, e in runs]).double()
        ratio = predicted.pow(2).mean(0).sqrt() / error.pow(2).mean(0).sqrt()  # per value, over the seeds
        assert 0.8 < ratio.median() < 1.25 and 0.6 < ratio.min() and ratio.max() < 1.6
        within = (error.abs() < 2 * predicted).double().mean()
        assert 0.9 < within <= 0.99  # about 95 % inside two standard errors
        typical[n] = predicted.mean()
    assert typical[512] < 0.6 * typical[128]  # the estimate shrinks with the budget, as the error does


def test_kernel_error_undefined_at_tiny_budgets_and_bad_arguments(tiny, images):
    seg = torch.arange(64).view(8, 8) % 12
    attribution, phi, error = shap.kernel(tiny, images, segments=seg, n_samples=8, return_values=True,
                                          return_error=True)  # fmt: skip
    assert error.isnan().all() and phi.isfinite().all()  # 4 pairs cannot fit 11 values and measure their spread
    assert torch.allclose(attribution.sum((1, 2, 3)), phi.sum(1), atol=1e-5)
    for bad, kind in ((1, ValueError), (2.0, TypeError), (True, TypeError)):
        with pytest.raises(kind, match="n_samples"):
            shap.kernel(tiny, images, segments=seg, n_samples=bad)
    with pytest.raises(ValueError, match="seed"):
        shap.kernel(tiny, images, segments=seg, seed=-1)
    with pytest.raises(ValueError, match="m: expected an int >= 2"):
        shap.kernel_coalitions(1, 10, np.random.default_rng(0))
    game = lambda z: z.double().sum(1)
    with pytest.raises(ValueError, match="m: expected an int >= 1"):
        shap.kernel_shapley(game, 0)
    with pytest.raises(TypeError, match="seed"):
        shap.kernel_shapley(game, 4, seed=1.5)
    phi, error = shap.kernel_shapley(game, 1)
    assert phi.tolist() == [1.0] and error.tolist() == [0.0]  # one player takes it all, exactly
    with pytest.raises(ValueError, match="n_samples"):
        shap.kernel_coalitions(5, 1, np.random.default_rng(0))


# ----------------------------------------------------------------------------- Deep SHAP


def summation_error(model, x, background, attribution):
    with torch.no_grad():
        logits, reference = model(x), model(background)
    target = logits.argmax(1)
    delta = logits[torch.arange(len(x)), target] - reference[:, target].mean(0)
    return (attribution.sum((1, 2, 3)) - delta).abs().max().item()


def separated(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with a size-1 identity convolution between each ReLU and the max-pool after it.

    The same function; Captum's DeepLift needs it, because it breaks the summation to delta (by
    tens of logits) when a max-pool directly follows a ReLU.
    """
    model = copy.deepcopy(model)
    layers = []
    for layer in model.features:
        if isinstance(layer, (nn.MaxPool1d, nn.MaxPool2d)):
            channels = layers[-2].out_channels
            conv = nn.Conv1d if isinstance(layer, nn.MaxPool1d) else nn.Conv2d
            identity = conv(channels, channels, 1, groups=channels, bias=False)
            nn.init.ones_(identity.weight)
            layers.append(identity)
        layers.append(layer)
    model.features = nn.Sequential(*layers)
    return model


def test_deep_agrees_with_captum_on_shapes_cnn():
    captum = pytest.importorskip("captum.attr")
    model = models.load("shapes_cnn")
    x = data.canonical(2).images
    background = data.shapes(8, split="train", seed=1).images
    phi = shap.deep(model, x, background=background)
    assert summation_error(model, x, background, phi) < 1e-4
    target = model(x).argmax(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Captum announces its hooks
        reference = captum.DeepLiftShap(separated(model)).attribute(x, baselines=background, target=target)
    assert (phi - reference).abs().max() < 1e-4


def test_deep_on_time_series_with_max_pool_1d():
    captum = pytest.importorskip("captum.attr")
    model = models.load("timeseries_cnn")
    x = data.timeseries(2, "test", seed=3).series
    background = data.timeseries(6, "train", seed=4).series
    phi = shap.deep(model, x, background=background)
    assert phi.shape == x.shape
    logits, reference = model(x), model(background)
    target = logits.argmax(1)
    delta = logits[torch.arange(len(x)), target] - reference[:, target].mean(0)
    assert (phi.sum((1, 2)) - delta).abs().max() < 1e-4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Captum announces its hooks
        expected = captum.DeepLiftShap(separated(model)).attribute(x, baselines=background, target=target)
    assert (phi - expected).abs().max() < 1e-4


class UnrolledResNet(nn.Module):
    """shapes_resnet rewritten for Captum: the same function, no reused ReLU, no ``+=``, no ReLU -> MaxPool2d."""

    def __init__(self, resnet: nn.Module):
        super().__init__()
        self.resnet, self.relu = resnet, nn.ReLU()
        self.identity = nn.Conv2d(16, 16, 1, groups=16, bias=False)
        nn.init.ones_(self.identity.weight)
        self.layers = nn.Sequential(*(UnrolledBlock(b) for b in (resnet.layer1, resnet.layer2, resnet.layer3)))

    def forward(self, x):
        r = self.resnet
        x = r.maxpool(self.identity(self.relu(r.bn1(r.conv1(x)))))
        return r.fc(torch.flatten(r.avgpool(self.layers(x)), 1))


def test_deep_on_resnet_equals_captum_on_the_unrolled_resnet():
    captum = pytest.importorskip("captum.attr")
    model = models.load("shapes_resnet")
    x = data.canonical(2).images
    background = data.shapes(8, split="train", seed=1).images
    unrolled = UnrolledResNet(copy.deepcopy(model)).eval()
    assert torch.equal(unrolled(x), model(x))
    phi = shap.deep(model, x, background=background)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = captum.DeepLiftShap(unrolled).attribute(x, baselines=background, target=model(x).argmax(1))
    assert (phi - reference).abs().max() < 1e-4


def test_deep_summation_on_resnet_with_reused_inplace_relu():
    model = models.load("shapes_resnet")
    before = state_of(model)
    x = data.canonical(2).images
    background = data.shapes(8, split="train", seed=1).images
    phi = shap.deep(model, x, background=background)
    assert summation_error(model, x, background, phi) < 1e-4
    assert phi.abs().max() > 1e-3
    assert_unchanged(before, model)


@pytest.mark.parametrize(
    "activation",
    [nn.GELU(), nn.SiLU(), nn.Mish(), nn.ReLU6(), nn.Hardswish(), nn.SELU(), nn.PReLU(4, 0.3), nn.Softsign()],
    ids=lambda a: type(a).__name__,
)
def test_deep_rescale_on_any_elementwise_activation_matches_the_closed_form(activation):
    """One hidden layer y = w2 . sigma(W1 x + b1): the rescale contributions of x_i, written out, per background."""
    torch.manual_seed(8)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4), activation, nn.Linear(4, 3)).eval()
    x, background = torch.randn(2, 3, 2, 2) * 2, torch.randn(5, 3, 2, 2) * 2
    target = model(x).argmax(1)
    phi = shap.deep(model, x, background=background)
    w1, b1, w2 = model[1].weight, model[1].bias, model[3].weight
    with torch.no_grad():
        for n, t in enumerate(target.tolist()):
            z, z_bar = (w1 @ x[n].flatten() + b1)[None], background.flatten(1) @ w1.T + b1  # (1, 4), (B, 4)
            m = (activation(z) - activation(z_bar)) / (z - z_bar)  # rescale multiplier of each hidden unit
            expected = ((m * w2[t]) @ w1 * (x[n].flatten() - background.flatten(1))).mean(0)
            assert (phi[n].flatten() - expected).abs().max() < 1e-5
    assert summation_error(model, x, background, phi) < 1e-5


def test_deep_on_tiny_net_and_unbatched(tiny, images):
    background = torch.rand(5, 3, 8, 8)
    phi = shap.deep(tiny, images, background=background)
    assert summation_error(tiny, images, background, phi) < 1e-5
    assert torch.allclose(shap.deep(tiny, images[0], background=background), phi[0], atol=1e-6)
    one_row_per_pass = shap.deep(tiny, images, background=background, batch_size=2)  # 5 passes per image
    assert torch.allclose(one_row_per_pass, phi, atol=1e-6)
    with pytest.raises(ValueError, match="batch_size"):
        shap.deep(tiny, images, background=background, batch_size=0)


def test_deep_refuses_what_it_cannot_handle(tiny, images):
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Softmax(dim=1), nn.Flatten(), nn.Linear(72, 2)).eval()
    before = state_of(model)
    with pytest.raises(NotImplementedError, match="Softmax.*supported.*ReLU"):
        shap.deep(model, images, background=images)
    assert_unchanged(before, model)

    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 2, 3), nn.Linear(72, 2)

        def forward(self, x):
            return self.fc(F.relu(self.conv(x)).flatten(1))

    torch.manual_seed(0)
    with pytest.raises(NotImplementedError, match="not a module"):
        shap.deep(Functional().eval(), images, background=torch.rand(4, 3, 8, 8))
    before = state_of(tiny)
    with pytest.raises(ValueError, match="background"):
        shap.deep(tiny, images, background=torch.rand(4, 3, 9, 9))
    assert_unchanged(before, tiny)


# ----------------------------------------------------------------------------- global importance


def test_global_importance(tiny, images):
    seg = grid(images)
    labels = torch.tensor([0, 2])
    per_class = shap.global_importance(shap.exact, tiny, images, labels, segments=seg)
    local = shap.exact(tiny, images, labels, segments=seg)
    assert per_class.shape == (3, 3, 8, 8)
    assert torch.allclose(per_class[0], local[0]) and torch.allclose(per_class[2], local[1])
    assert torch.equal(per_class[1], torch.zeros(3, 8, 8))
    mean_abs = shap.global_importance(shap.exact, tiny, images, labels, reduce="abs", segments=seg)
    assert torch.allclose(mean_abs, local.abs().mean(0))
    with pytest.raises(ValueError, match="reduce"):
        shap.global_importance(shap.exact, tiny, images, reduce="max", segments=seg)


def test_deep_on_adaptive_max_pooling_reshaping_layers_and_explicit_sums():
    """Adaptive max-pooling is max-pooling with windows of the matching size; Sum is the addition it replaces."""
    torch.manual_seed(0)
    conv, fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(16, 3)
    adaptive = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveMaxPool2d(2), nn.Dropout2d(), nn.Flatten(),
                             nn.Unflatten(1, (4, 4)), nn.Flatten(), fc).double().eval()  # fmt: skip
    windows = nn.Sequential(conv, nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(), fc).double().eval()
    x, background = torch.rand(2, 3, 8, 8, dtype=torch.float64), torch.rand(4, 3, 8, 8, dtype=torch.float64)
    phi = shap.deep(adaptive, x, background=background)
    torch.testing.assert_close(phi, shap.deep(windows, x, background=background))
    assert summation_error(adaptive, x, background, phi) < 1e-10
    series = nn.Sequential(nn.Conv1d(2, 3, 3), nn.ReLU(), nn.AdaptiveMaxPool1d(1), nn.Flatten(), nn.Linear(3, 2))
    s, s_background = torch.rand(2, 2, 10), torch.rand(3, 2, 10)
    with torch.no_grad():
        delta = series(s)[:, 1] - series(s_background)[:, 1].mean()
    assert torch.allclose(shap.deep(series, s, 1, background=s_background).sum((1, 2)), delta, atol=1e-5)
    resnet = models.ShapesResNet(3).double().eval()
    canonized = lrp.canonize(resnet)
    torch.testing.assert_close(shap.deep(canonized, x, 1, background=background),
                               shap.deep(resnet, x, 1, background=background))  # fmt: skip


def test_exact_and_kernel_on_table_rows_equal_the_closed_form_of_a_linear_model():
    torch.manual_seed(0)
    model = nn.Linear(6, 3).eval()
    rows, baseline = torch.randn(5, 6), torch.randn(6)
    with torch.no_grad():
        target = model(rows).argmax(1)
    expected = model.weight[target].detach() * (rows - baseline)  # phi_i = w_i (x_i - b_i)
    attribution, phi = shap.exact(model, rows, baseline=baseline, return_values=True)
    assert attribution.shape == rows.shape and torch.allclose(attribution, expected, atol=1e-5)
    assert torch.allclose(phi.float(), expected, atol=1e-5)
    assert torch.allclose(shap.kernel(model, rows, baseline=baseline, n_samples=16), expected, atol=1e-5)
    groups = torch.tensor([0, 0, 1, 1, 2, 2])  # players made of two features: each gets its group's value, halved
    grouped = expected.view(5, 3, 2).sum(2).repeat_interleave(2, dim=1) / 2
    assert torch.allclose(shap.exact(model, rows, segments=groups, baseline=baseline), grouped, atol=1e-5)
    with pytest.raises(ValueError, match="baseline: expected a number or a row of 6 values"):
        shap.exact(model, rows)
    with pytest.raises(ValueError, match=r"segments: expected an integer label map \(6,\)"):
        shap.exact(model, rows, segments=torch.tensor([0, 1]), baseline=0.0)
