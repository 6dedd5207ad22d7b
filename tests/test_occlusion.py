"""Chapter 03: sliding window, overlay, RISE, SIDU and TimeREISE against Captum and slow explicit references."""

import math
from itertools import product

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import Occlusion
from conftest import assert_unchanged, state_of
from skimage.transform import resize as skimage_resize
from torch import nn

from xai_course import data, layers, models, occlusion


class Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


def series_model(channels: int = 1) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv1d(channels, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool1d(4), nn.Flatten(), nn.Linear(16, 3)
    ).eval()


def sidu_model() -> nn.Module:
    """conv -> ReLU -> x10 -> x0.1 -> head: the outputs of [1] and [2] differ only in scale."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 5, 3, padding=1),
        nn.ReLU(),
        Scale(10.0),
        Scale(0.1),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(20, 3),
    ).eval()


@pytest.fixture
def images():
    torch.manual_seed(1)
    return torch.rand(2, 3, 11, 9)


def logit(model, x, target):
    with torch.no_grad():
        return model(x)[torch.arange(x.shape[0]), target]


def probability(model, x, target):
    with torch.no_grad():
        return F.softmax(model(x), dim=1)[:, target]


# ----------------------------------------------------------------------------- sliding window and overlay


def captum_occlusion(model, x, target, window, stride, baseline):
    c = x.shape[1]
    shape = (c, *[window] * (x.ndim - 2))
    strides = (c, *[stride] * (x.ndim - 2))
    return Occlusion(model).attribute(
        x, target=target, sliding_window_shapes=shape, strides=strides, baselines=baseline, perturbations_per_eval=16
    )


def test_sliding_window_equals_captum_on_the_course_model():
    model = models.load("shapes_cnn")
    x = data.canonical(2).images
    ours = occlusion.sliding_window(model, x, window=8, stride=4)
    reference = captum_occlusion(model, x, model(x).argmax(1), 8, 4, 0.0)
    assert reference.abs().max() > 1.0  # not trivially zero
    # relative to the largest value (logit drops up to ~50, where one float32 step is ~4e-6): our channels-last
    # forward passes round differently from Captum's, by about 1e-5 absolute
    assert (ours - reference).abs().max() / reference.abs().max() < 1e-5


@pytest.mark.parametrize("window, stride, value", [(5, 3, "mean"), (4, 4, 0.3), (3, 1, "tensor"), (9, 2, 0.0)])
def test_sliding_window_equals_captum_on_a_random_model(tiny, images, window, stride, value):
    """Windows cut off by the border (11 x 9 images), every kind of value, targets given as a tensor."""
    target = torch.tensor([2, 0])
    if value == "mean":
        baseline = images.mean((2, 3), keepdim=True).expand_as(images).contiguous()
    elif value == "tensor":
        value = baseline = torch.rand(3, 11, 9, generator=torch.Generator().manual_seed(3))
    else:
        baseline = value
    ours = occlusion.sliding_window(tiny, images, target, window=window, stride=stride, baseline=value, batch_size=7)
    reference = captum_occlusion(tiny, images, target, window, stride, baseline)
    assert reference.abs().max() > 1e-3
    assert torch.allclose(ours, reference, rtol=0, atol=1e-5)


def test_sliding_window_on_series_equals_captum():
    model = series_model(channels=2)
    torch.manual_seed(2)
    x = torch.randn(3, 2, 30)
    ours = occlusion.sliding_window(model, x, window=6, stride=4, baseline="mean")
    reference = captum_occlusion(model, x, model(x).argmax(1), 6, 4, x.mean(2, keepdim=True).expand_as(x).contiguous())
    assert torch.allclose(ours, reference, rtol=0, atol=1e-5)
    single = occlusion.sliding_window(model, x[0], window=6, stride=4, baseline="mean")
    assert single.shape == x[0].shape and torch.allclose(single, ours[0], atol=1e-6)


def test_one_pixel_window_equals_single_pixel_ablation(tiny):
    torch.manual_seed(4)
    x = torch.rand(2, 3, 5, 6)
    target = tiny(x).argmax(1)
    ours = occlusion.sliding_window(tiny, x, window=1, stride=1, baseline=0.25)
    slow = torch.empty(2, 5, 6)
    for i in range(5):
        for j in range(6):
            hidden = x.clone()
            hidden[:, :, i, j] = 0.25
            slow[:, i, j] = logit(tiny, x, target) - logit(tiny, hidden, target)
    assert slow.abs().max() > 1e-3
    assert torch.allclose(ours, slow.unsqueeze(1).expand_as(x), rtol=0, atol=1e-6)


def test_overlay_pastes_the_occluders_patches(tiny, images):
    torch.manual_seed(5)
    other = torch.rand(3, 11, 9)
    target = tiny(images).argmax(1)
    # one window over the whole image: every pixel gets f(x) - f(occluder)
    whole = occlusion.overlay(tiny, images[:, :, :9], occluder=other[:, :9], window=9, stride=9)
    delta = logit(tiny, images[:, :, :9], target) - logit(tiny, other[:, :9].expand(2, 3, 9, 9), target)
    assert torch.allclose(whole, delta.view(2, 1, 1, 1).expand_as(whole), atol=1e-6)
    # otherwise the same as a sliding window showing the occluder
    ours = occlusion.overlay(tiny, images, occluder=other, window=4, stride=2)
    assert torch.allclose(ours, occlusion.sliding_window(tiny, images, window=4, stride=2, baseline=other), atol=0)
    per_image = occlusion.overlay(tiny, images, occluder=torch.stack([other, images[0]]), window=4, stride=2)
    assert torch.allclose(per_image[0], ours[0], atol=1e-6) and not torch.allclose(per_image[1], ours[1])


# ----------------------------------------------------------------------------- RISE


def test_resize_equals_scikit_image():
    torch.manual_seed(6)
    for cells, size in [((8, 8), (72, 72)), ((3, 5), (13, 11)), ((2,), (9,)), ((4, 4), (64, 64))]:
        maps = (torch.rand(3, *cells) < 0.5).float()
        ours = occlusion.resize(maps, size)
        for m, o in zip(maps, ours):
            reference = skimage_resize(m.numpy(), size, order=1, mode="reflect", anti_aliasing=False)
            assert np.abs(o.numpy() - reference).max() < 1e-6


def test_rise_masks_follow_the_reference_recipe():
    """Bernoulli grid, bilinear resize to (s + 1) cells, crop at a random shift below one cell."""
    size, grid, p = (10, 13), 3, 0.4
    masks = occlusion.rise_masks(size, 300, grid=grid, p=p, seed=7)
    grids, shifts = occlusion._draw(7, 0, slice(0, 300), (grid, grid), (4, 5), p)
    assert masks.shape == (300, *size) and 0 <= masks.min() and masks.max() <= 1
    assert set(grids.unique().tolist()) == {0.0, 1.0} and (shifts.amax(0) == torch.tensor([3, 4])).all()
    for i in (0, 1, 257, 299):
        up = skimage_resize(grids[i].numpy(), (16, 20), order=1, mode="reflect", anti_aliasing=False)
        (a, b) = shifts[i].tolist()
        assert np.abs(masks[i].numpy() - up[a : a + 10, b : b + 13]).max() < 1e-6
    assert abs(grids.mean() - p) < 0.03
    # mask i does not depend on how the masks are asked for (chunks of MASK_CHUNK = 256)
    assert torch.equal(occlusion.rise_masks(size, 40, grid=grid, p=p, seed=7, start=240), masks[240:280])


def rise_slowly(model, x, target, masks, p, value=0.0):
    """RISE written plainly, as the paper: one mask at a time, sum_i P_i M_i / (N p)."""
    saliency = torch.zeros(x.shape[1:])
    for mask in masks:
        saliency += probability(model, (x * mask + (1 - mask) * value)[None], target)[0] * mask
    return saliency / (len(masks) * p)


def rise_control_variate_slowly(model, x, target, masks, p, value=0.0):
    """The control variate written plainly: the mean score plus the sample covariance of score and mask over p."""
    scores = [probability(model, (x * mask + (1 - mask) * value)[None], target)[0] for mask in masks]
    mean = sum(scores) / len(masks)
    covariance = sum((s - mean) * mask for s, mask in zip(scores, masks)) / (len(masks) - 1)
    return mean + covariance / p


@pytest.mark.parametrize("value", [0.0, 0.3])
@pytest.mark.parametrize("control_variate", [False, True])
def test_rise_equals_a_slow_reference(tiny, images, value, control_variate):
    target = [1, 2]
    ours = occlusion.rise(tiny, images, torch.tensor(target), n_masks=37, grid=3, p=0.4, seed=5, baseline=value,
                          control_variate=control_variate)  # fmt: skip
    masks = occlusion.rise_masks((11, 9), 37, grid=3, p=0.4, seed=5)
    slowly = rise_control_variate_slowly if control_variate else rise_slowly
    for n in range(2):
        slow = slowly(tiny, images[n], target[n], masks, 0.4, value)
        assert torch.allclose(ours[n], slow.expand(3, -1, -1), rtol=0, atol=1e-5)


def every_mask(length: int, grid: int, p: float):
    """All RISE masks of a series of ``length`` (every grid and every shift) and their probabilities."""
    cell = -(-length // grid)
    grids = torch.tensor(list(product([0.0, 1.0], repeat=grid)))
    pairs = [(g, s) for g in grids for s in range(cell)]
    masks = torch.stack([occlusion.resize(g[None], (length,), up=((grid + 1) * cell,), shifts=torch.tensor([[s]]))[0]
                         for g, s in pairs])  # fmt: skip
    chance = torch.tensor([p ** g.sum().item() * (1 - p) ** (grid - g.sum().item()) / cell for g, _ in pairs])
    return masks, chance


def test_both_estimators_have_the_expectation_of_the_paper():
    """Enumerate every RISE mask of a short series: the exact S = E[P M] / p, and each estimator's exact
    expectation over every pair of masks (N = 2, where a bias would be largest)."""
    torch.manual_seed(0)
    model, p = nn.Sequential(nn.Flatten(), nn.Linear(6, 2)).eval(), 0.4  # a score that depends on the mask
    with torch.no_grad():
        model[1].weight.mul_(8.0)
    x = torch.randn(1, 6, generator=torch.Generator().manual_seed(2))
    masks, chance = every_mask(6, 3, p)
    assert torch.allclose(chance.sum(), torch.tensor(1.0)) and len(masks) == 16
    assert torch.allclose((chance[:, None] * masks).sum(0), torch.full((6,), p))  # E[M] = p, what both rely on
    scores = torch.stack([probability(model, (x * m)[None], 0)[0] for m in masks])
    exact = (chance[:, None] * scores[:, None] * masks).sum(0) / p
    expected = {False: torch.zeros(6), True: torch.zeros(6), "divided by N": torch.zeros(6)}
    for i, j in product(range(16), repeat=2):
        pair, weight = masks[[i, j]], chance[i] * chance[j]
        expected[False] += weight * rise_slowly(model, x, 0, pair, p)
        expected[True] += weight * rise_control_variate_slowly(model, x, 0, pair, p)
        mean = (scores[i] + scores[j]) / 2
        expected["divided by N"] += weight * (mean + ((scores[[i, j]] - mean)[:, None] * pair).sum(0) / (2 * p))
    assert torch.allclose(expected[False], exact, atol=1e-6)
    assert torch.allclose(expected[True], exact, atol=1e-6)
    assert (expected["divided by N"] - exact).abs().max() > 0.01  # the test sees a bias of (S - E P) / N


def test_rise_error_is_the_spread_across_seeds(tiny, images):
    """The standard error from one run's masks against the spread of the maps, about their mean, over 48 seeds."""
    for control_variate in (False, True):
        runs = [occlusion.rise(tiny, images, n_masks=60, grid=3, seed=s, control_variate=control_variate,
                               return_error=True) for s in range(48)]  # fmt: skip
        maps, errors = (torch.stack([run[k][:, 0] for run in runs]).double() for k in (0, 1))
        about_mean = maps - maps.mean((2, 3), keepdim=True)
        spread = about_mean.std(0).pow(2).mean((1, 2)).sqrt()  # per image
        predicted = errors.pow(2).mean((0, 2, 3)).sqrt()
        assert ((predicted / spread - 1).abs() < 0.15).all(), (control_variate, predicted / spread)


def test_the_control_variate_takes_out_the_common_part_of_the_score():
    """A model that is 0.9 sure of its class whatever is hidden, but for a small bonus from the top-left
    quadrant: the paper's estimator carries 0.9 times a random mask as noise, the control variate does not."""
    model = nn.Sequential(nn.Conv2d(3, 1, 1), nn.Flatten(), nn.Linear(16 * 16, 2)).eval()
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.zero_()
        model[2].weight.zero_()
        model[2].bias.copy_(torch.tensor([math.log(9.0), 0.0]))  # P_0 = 0.9 with everything hidden
        model[2].weight[0].view(16, 16)[:8, :8] = 0.01
    x = torch.ones(3, 16, 16)
    noise = {}
    for control_variate in (False, True):
        saliency, error = occlusion.rise(model, x[None], 0, n_masks=200, grid=4, control_variate=control_variate,
                                         return_error=True)  # fmt: skip
        noise[control_variate] = occlusion.noise_to_contrast(saliency, error).item()
        assert saliency[0, 0, :6, :6].mean() > saliency[0, 0, 10:, 10:].mean()
    assert noise[True] < noise[False] / 4


def test_rise_returns_its_error_shaped_like_x(tiny, images):
    saliency, error = occlusion.rise(tiny, images, n_masks=30, grid=3, return_error=True)
    assert torch.equal(saliency, occlusion.rise(tiny, images, n_masks=30, grid=3))
    assert error.shape == images.shape and error.dtype == images.dtype and (error > 0).all()
    one = occlusion.rise(tiny, images[0], n_masks=30, grid=3, return_error=True, batch_size=7)
    assert one[1].shape == images[0].shape and torch.allclose(one[1], error[0], rtol=1e-4, atol=1e-7)


def test_noise_to_contrast_closed_form():
    torch.manual_seed(0)
    saliency = torch.randn(3, 1, 8, 8)
    error = torch.full_like(saliency, 0.5)
    variance = saliency.flatten(1).var(1, correction=0)
    expected = (0.25 / (variance - 0.25)).sqrt()
    assert torch.allclose(occlusion.noise_to_contrast(saliency, error), expected.double())
    flat = occlusion.noise_to_contrast(torch.zeros(1, 4, 4), torch.ones(1, 4, 4))  # all noise, no contrast
    assert flat.item() == math.inf
    with pytest.raises(ValueError, match="error: expected the shape of saliency"):
        occlusion.noise_to_contrast(saliency, error[:1])
    with pytest.raises(TypeError, match="saliency, error"):
        occlusion.noise_to_contrast(saliency.numpy(), error)


def test_rise_does_not_depend_on_batch_size_and_is_seeded(tiny, images):
    a = occlusion.rise(tiny, images, n_masks=300, grid=4, seed=1, batch_size=1000)
    for batch_size in (1, 7, 64):
        b = occlusion.rise(tiny, images, n_masks=300, grid=4, seed=1, batch_size=batch_size)
        assert torch.allclose(a, b, rtol=0, atol=1e-6)
    assert torch.equal(a, occlusion.rise(tiny, images, n_masks=300, grid=4, seed=1, batch_size=1000))
    assert not torch.allclose(a, occlusion.rise(tiny, images, n_masks=300, grid=4, seed=2), atol=1e-4)
    g = torch.Generator().manual_seed(9)
    c = occlusion.rise(tiny, images, n_masks=50, seed=g)
    assert torch.equal(c, occlusion.rise(tiny, images, n_masks=50, seed=torch.Generator().manual_seed(9)))


def test_rise_finds_the_region_a_model_looks_at():
    """A model whose class-0 logit is the mean brightness of the top-left quadrant."""
    model = nn.Sequential(nn.Conv2d(3, 1, 1), nn.Flatten(), nn.Linear(16 * 16, 2)).eval()
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.zero_()
        model[2].weight.zero_()
        model[2].bias.zero_()
        model[2].weight[0].view(16, 16)[:8, :8] = 0.02
    x = torch.ones(3, 16, 16)
    saliency = occlusion.rise(model, x, 0, n_masks=500, grid=4)[0]
    assert saliency[:6, :6].mean() > saliency[10:, 10:].mean() + 0.05


def test_rise_on_series():
    model = series_model()
    x = torch.randn(2, 1, 40, generator=torch.Generator().manual_seed(3))
    ours = occlusion.rise(model, x, 0, n_masks=20, grid=5, p=0.5, seed=0, control_variate=False)
    masks = occlusion.rise_masks((40,), 20, grid=5, p=0.5, seed=0)
    assert torch.allclose(ours[1, 0], rise_slowly(model, x[1], 0, masks, 0.5), atol=1e-5)


# ----------------------------------------------------------------------------- SIDU


REFERENCE_P1 = 0.5  # the reference code divides by N p1, a constant left over from RISE; the course does not


def sidu_slowly(model, x, target, layer, threshold=0.5, relative=False, sigma=0.25, weights="both"):
    """SIDU as the reference code computes it, written plainly: binarize each feature map at ``threshold``
    before upsampling (times the map's maximum if ``relative``), scikit-image resize, one mask at a time,
    the kernel as sqrt(exp(-d^2 / sigma^2)), uniqueness by a double loop, the sum divided by N p1."""
    captured = []
    handle = layer.register_forward_hook(lambda m, i, o: captured.append(o))
    with torch.no_grad():
        p_x = F.softmax(model(x[None]), dim=1)[0].double().numpy()
    handle.remove()
    masks, probs = [], []
    for a in captured[0][0]:
        cut = threshold * a.max() if relative else threshold
        mask = skimage_resize((a > cut).double().numpy(), x.shape[1:], order=1, mode="reflect", anti_aliasing=False)
        masks.append(mask)
        with torch.no_grad():
            masked = x * torch.from_numpy(mask).float()
            probs.append(F.softmax(model(masked[None]), dim=1)[0].double().numpy())
    k = len(masks)
    uniqueness = np.array([sum(np.linalg.norm(probs[i] - probs[j]) for j in range(k)) for i in range(k)])
    uniqueness = (uniqueness - uniqueness.min()) / (uniqueness.max() - uniqueness.min() + 1e-13)
    saliency = np.zeros(x.shape[1:])
    for i in range(k):
        similarity = np.sqrt(np.exp(-(abs(p_x[target] - probs[i][target]) ** 2) / sigma**2))
        weight = {"both": similarity * uniqueness[i], "similarity": similarity, "uniqueness": uniqueness[i]}[weights]
        saliency += weight * masks[i]
    return torch.from_numpy(saliency / k / REFERENCE_P1).float()


def test_sidu_default_is_the_published_algorithm(images):
    """Absolute threshold 0.5 on the raw feature maps (model[2] = model[1] times 10), bilinear masks, the
    reference code's formula: the same map up to the factor p1 the course leaves out."""
    model = sidu_model()
    target = [1, 2]
    ours = occlusion.sidu(model, images, torch.tensor(target), layer=model[2])
    for n in range(2):
        kept = (model[:3](images[n : n + 1]) > 0.5).float().mean((2, 3))
        assert 0 < kept.min() and kept.max() < 1  # no mask empty or full: the threshold matters
        slow = sidu_slowly(model, images[n], target[n], model[2])
        assert slow.abs().max() > 1e-3
        assert torch.allclose(ours[n], REFERENCE_P1 * slow.expand(3, -1, -1), rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "relative, threshold, weights",
    [(True, 0.5, "both"), (True, 0.2, "both"), (False, 0.05, "both"), (False, 0.05, "similarity"),
     (True, 0.5, "uniqueness")],
)  # fmt: skip
def test_sidu_options_equal_the_slow_reference(images, relative, threshold, weights):
    """relative=True, threshold=0.5 is the course's default before issue 21; "similarity" is the reference
    code's explain_diff."""
    model = sidu_model()
    target = [0, 2]
    ours = occlusion.sidu(model, images, torch.tensor(target), layer=model[1], threshold=threshold,
                          relative=relative, weights=weights)  # fmt: skip
    for n in range(2):
        slow = REFERENCE_P1 * sidu_slowly(model, images[n], target[n], model[1], threshold, relative, weights=weights)
        assert slow.abs().max() > 1e-3
        assert torch.allclose(ours[n], slow.expand(3, -1, -1), rtol=0, atol=1e-5)


def test_sidu_absolute_threshold_is_in_the_units_of_the_layer(images):
    """The published threshold depends on the activation scale, the relative one does not."""
    model = sidu_model()
    assert model[:2](images).max() < 0.5  # layer "1": every mask is empty at 0.5, and the map is zero
    assert occlusion.sidu(model, images, layer="1").abs().max() == 0
    published = occlusion.sidu(model, images, layer="2")  # the same feature maps times 10
    assert torch.allclose(published, occlusion.sidu(model, images, layer="1", threshold=0.05), atol=1e-6)
    assert published.abs().max() > 1e-3
    relative = occlusion.sidu(model, images, layer="1", relative=True)
    assert torch.allclose(relative, occlusion.sidu(model, images, layer="2", relative=True), atol=1e-6)
    assert not torch.allclose(relative, published, atol=1e-4)


def test_sidu_on_the_course_model_and_a_series_model():
    model = models.load("shapes_cnn")
    x = data.canonical(1).images
    saliency = occlusion.sidu(model, x, layer="features.8")
    assert saliency.shape == x.shape and saliency.min() >= 0 and saliency.max() > 0
    series = series_model()
    s = torch.randn(2, 1, 24, generator=torch.Generator().manual_seed(0))
    slow = REFERENCE_P1 * sidu_slowly(series, s[0], series(s[:1]).argmax().item(), series[1])
    assert slow.abs().max() > 1e-3
    assert torch.allclose(occlusion.sidu(series, s, layer=series[1])[0, 0], slow, atol=1e-5)


# ----------------------------------------------------------------------------- TimeREISE


def test_timereise_shape_range_and_seeding():
    model = series_model(channels=2)
    x = torch.randn(3, 2, 50, generator=torch.Generator().manual_seed(1))
    kwargs = dict(n_masks=30, probabilities=(0.3, 0.7), slices=(5, 10))
    a = occlusion.timereise(model, x, **kwargs, seed=3)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.allclose(a.flatten(1).amin(1), torch.zeros(3)) and torch.allclose(a.flatten(1).amax(1), torch.ones(3))
    assert not torch.allclose(a[:, 0], a[:, 1], atol=1e-3)  # the channels get their own masks
    assert torch.equal(a, occlusion.timereise(model, x, **kwargs, seed=3))
    assert torch.allclose(a, occlusion.timereise(model, x, **kwargs, seed=3, batch_size=7), atol=1e-6)
    assert not torch.allclose(a, occlusion.timereise(model, x, **kwargs, seed=4), atol=1e-3)
    assert occlusion.timereise(model, x[0], **kwargs).shape == x[0].shape


def test_timereise_equals_a_slow_reference():
    model = series_model()
    x = torch.randn(1, 40, generator=torch.Generator().manual_seed(2))
    ours = occlusion.timereise(model, x, 1, n_masks=6, probabilities=(0.5, 0.2), slices=(4, 7), seed=1)
    total, count = torch.zeros(40, dtype=torch.float64), torch.zeros(40, dtype=torch.float64)
    for stream, (p, s) in enumerate([(0.5, 4), (0.5, 7), (0.2, 4), (0.2, 7)]):
        cell = -(-40 // s)
        grids, shifts = occlusion._draw(1, stream, slice(0, 6), (1, s), (cell,), p)
        for grid, shift in zip(grids, shifts):
            up = skimage_resize(grid[0].numpy(), ((s + 1) * cell,), order=1, mode="reflect", anti_aliasing=False)
            mask = torch.from_numpy(up[shift.item() : shift.item() + 40])
            total += probability(model, (x * mask.float())[None], 1)[0].double() * mask
            count += mask
    slow = total / count
    slow = (slow - slow.min()) / (slow.max() - slow.min())
    assert torch.allclose(ours[0], slow.float(), atol=1e-5)


def test_timereise_localizes_the_pattern_on_the_course_series():
    """Mostly inside the pattern; triangles are the hard case (masked drift and noise make triangular bumps)."""
    model = models.load("timeseries_cnn")
    d = data.timeseries(16, seed=5)
    attribution = occlusion.timereise(model, d.series, d.labels, n_masks=50)
    inside = (attribution[:, 0] * d.masks).sum(1) / d.masks.sum(1)
    outside = (attribution[:, 0] * ~d.masks).sum(1) / (~d.masks).sum(1)
    assert (inside > outside).float().mean() >= 0.8 and inside.mean() > outside.mean() + 0.3


# ----------------------------------------------------------------------------- the contract


CALLS = {
    "sliding_window": lambda m, x, t: occlusion.sliding_window(m, x, t, window=3, stride=2),
    "overlay": lambda m, x, t: occlusion.overlay(m, x, t, occluder=x.flip(0), window=3, stride=2),
    "rise": lambda m, x, t: occlusion.rise(m, x, t, n_masks=20, grid=3),
    "sidu": lambda m, x, t: occlusion.sidu(m, x, t, layer="conv"),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_contract_and_model_unchanged_even_on_errors(tiny, images, name):
    before = state_of(tiny)
    out = CALLS[name](tiny, images, None)
    assert out.shape == images.shape and out.dtype == images.dtype and not out.requires_grad
    assert CALLS[name](tiny, images[0], None).shape == images[0].shape
    with pytest.raises(ValueError, match="target"):
        CALLS[name](tiny, images, 7)
    assert_unchanged(before, tiny)


def test_timereise_leaves_the_model_unchanged():
    model = series_model()
    model[1].inplace = True
    before = state_of(model)
    occlusion.timereise(model, torch.randn(2, 1, 20), n_masks=4)
    with pytest.raises(ValueError, match="target"):
        occlusion.timereise(model, torch.randn(2, 1, 20), torch.tensor([0, 5]), n_masks=4)
    assert_unchanged(before, model)


def test_sidu_refuses_a_layer_not_run_exactly_once(tiny, images):
    tiny.unused = nn.Conv2d(3, 2, 1)
    before = state_of(tiny)
    with pytest.raises(ValueError, match="layer: .* run 0 times"):
        occlusion.sidu(tiny, images, layer="unused")
    with pytest.raises(ValueError, match="layer: .* run 2 times"):
        occlusion.sidu(tiny, images, layer=tiny.relu)  # TinyNet calls its ReLU twice
    assert_unchanged(before, tiny)


BAD = [
    (occlusion.sliding_window, {"window": 0}, ValueError, "window"),
    (occlusion.sliding_window, {"window": 2.0}, TypeError, "window"),
    (occlusion.sliding_window, {"window": 12}, ValueError, "window"),
    (occlusion.sliding_window, {"window": 3, "stride": 4}, ValueError, "stride"),
    (occlusion.sliding_window, {"baseline": "white"}, ValueError, "baseline"),
    (occlusion.sliding_window, {"baseline": torch.rand(4, 11, 9)}, ValueError, "baseline"),
    (occlusion.sliding_window, {"batch_size": 0}, ValueError, "batch_size"),
    (occlusion.overlay, {"occluder": 0.5}, TypeError, "occluder"),
    (occlusion.overlay, {"occluder": torch.rand(3, 5, 5)}, ValueError, "occluder"),
    (occlusion.rise, {"n_masks": 0}, ValueError, "n_masks"),
    (occlusion.rise, {"n_masks": 1}, ValueError, "n_masks"),
    (occlusion.rise, {"control_variate": "yes"}, TypeError, "control_variate"),
    (occlusion.rise, {"return_error": 1}, TypeError, "return_error"),
    (occlusion.rise, {"p": 0.0}, ValueError, "p"),
    (occlusion.rise, {"p": 1.5}, ValueError, "p"),
    (occlusion.rise, {"grid": "8"}, TypeError, "grid"),
    (occlusion.rise, {"seed": -1}, ValueError, "seed"),
    (occlusion.rise, {"baseline": [0.5]}, TypeError, "baseline"),
    (occlusion.sidu, {"layer": "nonexistent"}, ValueError, "layer"),
    (occlusion.sidu, {"layer": nn.ReLU()}, TypeError, "layer"),
    (occlusion.sidu, {"layer": "conv", "sigma": 0.0}, ValueError, "sigma"),
    (occlusion.sidu, {"layer": "conv", "threshold": "high"}, TypeError, "threshold"),
    (occlusion.sidu, {"layer": "conv", "threshold": float("nan")}, TypeError, "threshold"),
    (occlusion.sidu, {"layer": "conv", "threshold": True}, TypeError, "threshold"),
    (occlusion.sidu, {"layer": "conv", "threshold": 1.0, "relative": True}, ValueError, "threshold"),
    (occlusion.sidu, {"layer": "conv", "threshold": -0.1, "relative": True}, ValueError, "threshold"),
    (occlusion.sidu, {"layer": "conv", "relative": 1}, TypeError, "relative"),
    (occlusion.sidu, {"layer": "conv", "relative": "yes"}, TypeError, "relative"),
    (occlusion.sidu, {"layer": "conv", "weights": "sd"}, ValueError, "weights"),
    (occlusion.sidu, {"layer": "conv", "weights": None}, ValueError, "weights"),
    (occlusion.sidu, {"layer": "fc"}, ValueError, "layer"),  # output (N, 3), not feature maps
    (occlusion.timereise, {}, ValueError, "x"),  # images, not series
]


@pytest.mark.parametrize("method, kwargs, error, name", BAD)
def test_bad_arguments_name_the_argument(tiny, images, method, kwargs, error, name):
    if method is occlusion.overlay and "occluder" not in kwargs:
        kwargs = {"occluder": images, **kwargs}
    with pytest.raises(error, match=f"{name}:"):
        method(tiny, images, **kwargs)


@pytest.mark.parametrize(
    "kwargs, error, name",
    [({"probabilities": ()}, TypeError, "probabilities"), ({"probabilities": (0.5, 0)}, ValueError, "probabilities"),
     ({"slices": (4, 0)}, ValueError, "slices"), ({"slices": 4}, TypeError, "slices"),
     ({"n_masks": -2}, ValueError, "n_masks")],
)  # fmt: skip
def test_timereise_bad_arguments(kwargs, error, name):
    with pytest.raises(error, match=f"{name}:"):
        occlusion.timereise(series_model(), torch.randn(2, 1, 20), **kwargs)


def test_inputs_are_checked(tiny):
    with pytest.raises(TypeError, match="x:"):
        occlusion.rise(tiny, np.zeros((1, 3, 8, 8)))
    with pytest.raises(TypeError, match="model:"):
        occlusion.sliding_window("model", torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="x:"):
        occlusion.rise(tiny, torch.full((1, 3, 8, 8), float("nan")))


def test_feature_maps_keep_the_layer_output_before_a_later_in_place_relu():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(72, 2)).eval()
    x = torch.randn(1, 1, 8, 8)
    _, maps = layers.feature_maps(model, x, "0")
    with torch.no_grad():
        expected = model[0](x)
    assert expected.min() < 0 and torch.equal(maps, expected)
