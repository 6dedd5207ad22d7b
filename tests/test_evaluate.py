"""Tests of xai_course.evaluate: exact small cases, agreement with naive loops, bad input, model untouched."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from scipy import ndimage, stats
from torch import nn

from xai_course import core, data, gradient
from xai_course import evaluate as ev

# ----------------------------------------------------------------------------- models and helpers


def linear_model(weight: torch.Tensor, bias: torch.Tensor | None = None) -> nn.Sequential:
    """logits = W . flatten(x) (+ b)."""
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return nn.Sequential(nn.Flatten(), layer)


def toy():
    """A 2-class linear model on 1x2x2 images: z_0 = 0, z_1 = sum_p w_p x_p with contributions d = (.5, -1, -.5, .5)."""
    w1 = torch.tensor([1.0, -1.0, 0.5, 2.0])
    model = linear_model(torch.stack([torch.zeros(4), w1]))
    x = torch.tensor([0.5, 1.0, -1.0, 0.25]).view(1, 1, 2, 2)
    attribution = torch.tensor([0.1, 0.4, 0.3, 0.2]).view(1, 1, 2, 2)  # order: pixels 1, 2, 3, 0
    return model, x, attribution


def small_cnn(classes: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
    return nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(3), nn.Flatten(), nn.Linear(36, classes))


def guarded_cnn() -> nn.Module:
    """A model whose training mode matters (BatchNorm, Dropout), left in training mode."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3),
    )  # fmt: skip
    return model.train()


def signed_saliency(model, x, target=None):
    return gradient.saliency(model, x, target, abs=False)


def state(model: nn.Module):
    hooks = sum(len(getattr(m, name)) for m in model.modules() for name in ("_forward_hooks", "_forward_pre_hooks"))
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        hooks,
    )


def assert_same_state(before, after):
    assert before[0].keys() == after[0].keys()
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    assert before[1:] == after[1:]


def rise_naive_deletion(model, x, attribution, substrate, steps, target):
    """One forward pass per image and step, straight from the RISE description."""
    n, c, h, w = x.shape
    curves = torch.empty(n, steps + 1)
    with torch.no_grad():
        for i in range(n):
            order = torch.argsort(attribution[i].sum(0).flatten(), descending=True, stable=True)
            for s in range(steps + 1):
                k = round(s / steps * h * w)
                image = x[i].clone().view(c, -1)
                image[:, order[:k]] = substrate[i].reshape(c, -1)[:, order[:k]]
                curves[i, s] = model(image.view(1, c, h, w)).softmax(1)[0, target[i]]
    return curves


# ----------------------------------------------------------------------------- deletion and insertion


def test_deletion_on_linear_model_matches_closed_form():
    model, x, a = toy()
    result = ev.deletion(model, x, 1, a, steps=4)
    expected = torch.sigmoid(torch.tensor([-0.5, 0.5, 1.0, 0.5, 0.0]))  # z_1 after deleting pixels 1, 2, 3, 0
    torch.testing.assert_close(result.scores[0], expected)
    torch.testing.assert_close(result.fractions, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    manual = (expected.sum() - expected[0] / 2 - expected[-1] / 2) / 4
    assert result.auc[0].item() == pytest.approx(manual.item())
    assert result.mean_auc == pytest.approx(manual.item())
    assert result.target.tolist() == [1]


def test_deletion_constant_substrate_and_uneven_steps():
    model, x, a = toy()
    # substrate 1.0: a deleted pixel contributes w_p = (1, -1, .5, 2) instead of d_p
    result = ev.deletion(model, x, 1, a, steps=4, baseline=1.0)
    torch.testing.assert_close(result.scores[0], torch.sigmoid(torch.tensor([-0.5, -0.5, 0.5, 2.0, 2.5])))
    # 3 steps on 4 pixels: k = round(4 * (0, 1/3, 2/3, 1)) = 0, 1, 3, 4
    result = ev.deletion(model, x, 1, a, steps=3)
    torch.testing.assert_close(result.scores[0], torch.sigmoid(torch.tensor([-0.5, 0.5, 0.5, 0.0])))


def test_insertion_on_linear_model_matches_closed_form():
    model, x, a = toy()
    result = ev.insertion(model, x, 1, a, steps=4, baseline=0.0)
    torch.testing.assert_close(result.scores[0], torch.sigmoid(torch.tensor([0.0, -1.0, -1.5, -1.0, -0.5])))


def test_all_zero_attribution_gives_the_pixel_index_order():
    model, x, _ = toy()
    result = ev.deletion(model, x, 1, torch.zeros_like(x), steps=4)
    torch.testing.assert_close(result.scores[0], torch.sigmoid(torch.tensor([-0.5, -1.0, 0.0, 0.5, 0.0])))


@pytest.mark.parametrize("substrate", [0.0, "blur", "mean"])
def test_batched_deletion_equals_naive_loop(substrate):
    model = small_cnn().eval()
    x = torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    a = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    result = ev.deletion(model, x, None, a, steps=7, baseline=substrate, batch_size=5)
    background = core.baseline_like(x, substrate)
    expected = rise_naive_deletion(model, x, a, background, 7, model(x).argmax(1))
    torch.testing.assert_close(result.scores, expected, atol=1e-5, rtol=1e-5)


def test_curves_start_and_end_where_they_should():
    model = small_cnn().eval()
    x = torch.rand(2, 3, 12, 12)
    a = torch.rand(2, 3, 12, 12)
    probability = model(x).softmax(1).gather(1, model(x).argmax(1, keepdim=True)).squeeze(1).detach()
    deleted, inserted = ev.deletion(model, x, None, a, steps=3), ev.insertion(model, x, None, a, steps=3)
    torch.testing.assert_close(deleted.scores[:, 0], probability)
    torch.testing.assert_close(inserted.scores[:, -1], probability)
    blurred = model(core.gaussian_blur(x)).softmax(1).gather(1, deleted.target[:, None]).squeeze(1).detach()
    torch.testing.assert_close(inserted.scores[:, 0], blurred)


def test_blur_is_rise_kernel_with_zero_padding():
    impulse = np.zeros((11, 11))
    impulse[5, 5] = 1.0
    kernel = ndimage.gaussian_filter(impulse, 5)  # RISE's gkern(11, 5)
    x = torch.rand(1, 2, 16, 16, dtype=torch.float64)
    expected = np.stack([ndimage.correlate(c, kernel, mode="constant") for c in x[0].numpy()])
    np.testing.assert_allclose(core.gaussian_blur(x)[0].numpy(), expected, atol=1e-12)


def test_time_series_deletion_and_insertion():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(2, 3, 5), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(3, 2)).eval()
    x, a = torch.randn(2, 2, 30), torch.randn(2, 2, 30)
    inserted = ev.insertion(model, x, None, a, steps=6)
    assert inserted.scores.shape == (2, 7)
    torch.testing.assert_close(inserted.scores[:, -1], model(x).softmax(1).amax(1).detach())
    deleted = ev.deletion(model, x, 0, a, steps=30, baseline="mean")
    order = a[0].sum(0).argsort(descending=True, stable=True)
    three_gone = x[:1].clone()
    three_gone[0, :, order[:3]] = x[0].mean(1, keepdim=True)
    assert deleted.scores[0, 3].item() == pytest.approx(model(three_gone).softmax(1)[0, 0].item(), abs=1e-6)
    assert ev.pixel_flipping(model, x, None, a, region=5).regions.tolist() == list(range(7))
    mask = torch.zeros(2, 30, dtype=torch.bool)
    mask[:, :10] = True
    assert ev.relevance_mass_accuracy(mask[:, None].float(), mask).tolist() == [1.0, 1.0]


def test_never_more_than_one_batch_of_perturbed_inputs():
    sizes = []

    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = small_cnn()

        def forward(self, x):
            sizes.append(x.shape[0])
            return self.net(x)

    x = torch.rand(4, 3, 12, 12)
    ev.deletion(Recorder(), x, None, torch.rand_like(x), steps=20, batch_size=16)
    assert max(sizes) <= 16
    assert sum(sizes) == 4 + 4 * 21  # one prediction pass, then every (image, step) pair once


# ----------------------------------------------------------------------------- pixel flipping


def test_pixel_flipping_on_linear_model():
    model, x, a = toy()
    result = ev.pixel_flipping(model, x, 1, a, region=1, baseline=0.0)
    # target logit z_1: -0.5, then 0.5, 1.0, 0.5, 0 as pixels 1, 2, 3, 0 go
    torch.testing.assert_close(result.scores[0], torch.tensor([-0.5, 0.5, 1.0, 0.5, 0.0]))
    torch.testing.assert_close(result.drops[0], torch.tensor([0.0, -1.0, -1.5, -1.0, -0.5]))
    assert result.aopc[0].item() == pytest.approx(-0.8)
    assert result.regions.tolist() == [0, 1, 2, 3, 4]


def test_pixel_flipping_ranks_regions_by_summed_relevance():
    model = linear_model(torch.ones(1, 16))  # logit = sum of pixels
    quadrant = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # values of the 2x2 regions TL, TR, BL, BR
    x = quadrant.repeat_interleave(2, 0).repeat_interleave(2, 1).view(1, 1, 4, 4)
    a = torch.zeros(1, 1, 4, 4)
    a[0, 0, 2:, :2] = 3.0  # BL: sum 12
    a[0, 0, :2, :2] = 2.0  # TL: sum 8
    a[0, 0, 2:, 2:] = 1.0  # BR: sum 4
    a[0, 0, :2, 2:] = torch.tensor([[5.0, -5.0], [-5.0, 0.0]])  # TR: largest pixel, lowest sum (-5)
    result = ev.pixel_flipping(model, x, 0, a, region=2, baseline=0.0)
    torch.testing.assert_close(result.drops[0], torch.tensor([0.0, 12.0, 16.0, 32.0, 40.0]))
    assert result.mean_aopc == pytest.approx(20.0)


def test_pixel_flipping_uneven_regions_and_seeded_noise():
    model = small_cnn().eval()
    x, a = torch.rand(2, 3, 10, 10), torch.rand(2, 3, 10, 10)
    first = ev.pixel_flipping(model, x, None, a, region=4, seed=3)  # 3 x 3 regions, the last ones smaller
    assert first.regions.tolist() == list(range(10))
    again = ev.pixel_flipping(model, x, None, a, region=4, seed=3)
    torch.testing.assert_close(first.scores, again.scores)
    other = ev.pixel_flipping(model, x, None, a, region=4, seed=4)
    assert not torch.allclose(first.scores[:, 1:], other.scores[:, 1:])
    assert ev.pixel_flipping(model, x, None, a, region=4, steps=2).scores.shape == (2, 3)
    with pytest.raises(ValueError, match="steps"):
        ev.pixel_flipping(model, x, None, a, region=4, steps=10)


# ----------------------------------------------------------------------------- localization


def test_attribution_equal_to_mask_scores_one():
    shapes = data.shapes(3, seed=0)
    a = shapes.masks[:, None].float().expand(3, 3, 64, 64)
    for metric in (ev.relevance_mass_accuracy, ev.relevance_rank_accuracy, ev.pointing_game):
        assert metric(a, shapes.masks).tolist() == [1.0, 1.0, 1.0]


def test_random_attribution_scores_the_mask_area():
    shapes = data.shapes(4, seed=1)
    a = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    area = shapes.masks.float().mean(dim=(1, 2))
    torch.testing.assert_close(ev.relevance_mass_accuracy(a, shapes.masks), area, atol=0.02, rtol=0)
    torch.testing.assert_close(ev.relevance_rank_accuracy(a, shapes.masks), area, atol=0.06, rtol=0)


def test_all_zero_attribution_scores_the_mask_area_exactly():
    shapes = data.shapes(2, seed=2)
    a = torch.zeros(2, 3, 64, 64)
    area = shapes.masks.float().mean(dim=(1, 2))
    for metric in (ev.relevance_mass_accuracy, ev.relevance_rank_accuracy, ev.pointing_game):
        torch.testing.assert_close(metric(a, shapes.masks), area)


def test_poolings_by_hand():
    a = torch.tensor([[1.0, -2.0, 3.0, -4.0], [1.0, 1.0, -1.0, -1.0]]).view(1, 2, 1, 4)  # channel sum 2, -1, 2, -5
    mask = torch.tensor([[[True, True, False, False]]])
    assert ev.relevance_mass_accuracy(a, mask).item() == pytest.approx(0.5)  # (2 + 0) / 4
    assert ev.relevance_mass_accuracy(a, mask, pooling="sum,abs").item() == pytest.approx(0.3)  # 3 / 10
    assert ev.relevance_mass_accuracy(a, mask, pooling="sum").item() == pytest.approx(-0.5)  # 1 / -2, signed
    with pytest.raises(ValueError, match="pooling"):
        ev.relevance_mass_accuracy(a, mask, pooling="max")


def test_rank_accuracy_and_pointing_game_share_ties():
    mask = torch.tensor([[[True, False, True, False]]])
    a = torch.tensor([3.0, 2.0, 2.0, 0.0]).view(1, 1, 1, 4)
    # K = 2: pixel 0 is in the mask, the second place is shared by pixels 1 (out) and 2 (in)
    assert ev.relevance_rank_accuracy(a, mask).item() == pytest.approx(0.75)
    assert ev.pointing_game(a, mask).item() == 1.0
    assert ev.pointing_game(torch.tensor([0.0, 5.0, 1.0, 0.0]).view(1, 1, 1, 4), mask).item() == 0.0
    assert ev.pointing_game(torch.tensor([5.0, 5.0, 1.0, 0.0]).view(1, 1, 1, 4), mask).item() == 0.5


def test_empty_mask_gives_nan_and_bad_masks_are_named():
    a = torch.rand(2, 3, 8, 8)
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    mask[0, :4] = True
    for metric in (ev.relevance_mass_accuracy, ev.relevance_rank_accuracy, ev.pointing_game):
        result = metric(a, mask)
        assert not math.isnan(result[0].item()) and math.isnan(result[1].item())
    with pytest.raises(ValueError, match="mask.*\\(2, 8, 8\\)"):
        ev.relevance_mass_accuracy(a, torch.ones(2, 16, 16, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        ev.relevance_rank_accuracy(a, torch.full((2, 8, 8), 0.5))
    with pytest.raises(TypeError, match="attribution"):
        ev.pointing_game(a.numpy(), mask)


# ----------------------------------------------------------------------------- sanity checks


def test_randomizing_a_linear_model_gives_the_new_weight_row():
    torch.manual_seed(0)
    model = linear_model(torch.randn(3, 256))
    x = torch.rand(2, 1, 16, 16)
    before, rng = state(model), torch.get_rng_state()
    result = ev.randomization_check(signed_saliency, model, x, 2, seed=7)
    assert_same_state(before, state(model))
    assert torch.equal(rng, torch.get_rng_state())
    assert result.stages == ["1"]
    old = model[1].weight[2].detach()
    layer = copy.deepcopy(model[1])
    torch.manual_seed(7)  # the documented rule: stage 0 after torch.manual_seed(seed + 0)
    layer.reset_parameters()
    new = layer.weight[2].detach()
    torch.testing.assert_close(result.attributions[0, :, 0].flatten(1), old.expand(2, 256))
    torch.testing.assert_close(result.attributions[1, :, 0].flatten(1), new.expand(2, 256))
    expected = stats.spearmanr(old.numpy(), new.numpy()).statistic
    torch.testing.assert_close(result.spearman[0], torch.tensor([expected, expected], dtype=torch.float64))
    assert abs(expected) < 0.25
    assert result.mean_spearman_abs.shape == result.mean_ssim.shape == (1,)


class TwoLayer(nn.Module):
    """Registers its top layer first, so only the forward pass tells the order."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(8, 2)
        self.body = nn.Linear(16, 8)
        self.unused = nn.Linear(3, 3)

    def forward(self, x):
        return self.head(torch.relu(self.body(x.flatten(1))))


def test_stages_are_in_top_down_forward_order():
    torch.manual_seed(0)
    model = TwoLayer()
    x = torch.rand(3, 1, 4, 4)
    result = ev.randomization_check(signed_saliency, model, x)
    assert result.stages == ["head", "body"]
    assert result.spearman.shape == result.ssim.shape == (2, 3)
    assert result.attributions.shape == (3, 3, 1, 4, 4)
    assert ev.randomization_check(signed_saliency, model, x, layers=["body"]).stages == ["body"]
    with pytest.raises(ValueError, match="layers"):
        ev.randomization_check(signed_saliency, model, x, layers=["nope"])


def test_a_method_that_ignores_the_model_fails_the_check():
    model = small_cnn()
    x = torch.rand(2, 3, 12, 12)
    result = ev.randomization_check(lambda m, x, t: x.clone(), model, x)
    assert len(result.stages) == 2
    torch.testing.assert_close(result.spearman_abs, torch.ones(2, 2, dtype=torch.float64))
    torch.testing.assert_close(result.ssim, torch.ones(2, 2, dtype=torch.float64))


def test_layer_without_reset_parameters_is_named():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.s = nn.Parameter(torch.ones(1))

        def forward(self, x):
            return x * self.s

    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2), Scale())
    with pytest.raises(NotImplementedError, match="2 \\(Scale\\)"):
        ev.randomization_check(signed_saliency, model, torch.rand(1, 1, 2, 2))


# ----------------------------------------------------------------------------- stability and completeness


def test_stability_spread_and_max_sensitivity_by_hand():
    model, x, _ = toy()

    def offset(model, x, target=None, *, seed=0):
        return torch.ones_like(x) + seed

    result = ev.stability(offset, model, x, seeds=(0, 1, 2, 3))
    # values 1, 2, 3, 4 at every pixel: population std sqrt(1.25), mean 2.5
    assert result.spread[0].item() == pytest.approx(math.sqrt(1.25) / 2.5)
    assert result.max_sensitivity[0].item() == 0.0
    saliency = ev.stability(signed_saliency, model, x)  # gradient of a linear model: constant
    assert math.isnan(saliency.mean_spread) and saliency.mean_max_sensitivity == 0.0
    gxi = ev.stability(gradient.gradient_x_input, model, x, 1, noise=0.01)
    w = model[1].weight[1]
    bound = 0.01 * w.norm() / (w * x.flatten()).norm()  # ||w * delta|| / ||w * x||
    assert 0 < gxi.max_sensitivity[0].item() <= bound.item() + 1e-6


def test_stability_bad_arguments():
    model, x, _ = toy()
    with pytest.raises(ValueError, match="seeds"):
        ev.stability(signed_saliency, model, x, seeds=(0,))
    with pytest.raises(ValueError, match="noise"):
        ev.stability(signed_saliency, model, x, noise=0.0)
    with pytest.raises(TypeError, match="method"):
        ev.stability("saliency", model, x)


def test_completeness_of_gradient_x_input_on_a_linear_model():
    w, b = torch.tensor([[1.0, 2.0, -1.0, 0.5], [0.5, -1.0, 2.0, 1.0]]), torch.tensor([0.3, -0.2])
    model = linear_model(w, b)
    x = torch.rand(3, 1, 2, 2)
    a = gradient.gradient_x_input(model, x, 1)
    result = ev.completeness_error(a, model, x, 1)  # reference 0: f(x) - f(0) = w.x
    torch.testing.assert_close(result.error, torch.zeros(3), atol=1e-6, rtol=0)
    conservation = ev.completeness_error(a, model, x, 1, baseline="zero-output")  # promise f(x) = w.x + b
    torch.testing.assert_close(conservation.error, torch.full((3,), 0.2))
    reference = torch.rand(1, 2, 2)
    shifted = a - gradient.saliency(model, x, 1, abs=False) * reference  # w * (x - reference)
    torch.testing.assert_close(ev.completeness_error(shifted, model, x, 1, baseline=reference).error,
                               torch.zeros(3), atol=1e-6, rtol=0)  # fmt: skip
    with pytest.raises(ValueError, match="baseline"):
        ev.completeness_error(a, model, x, 1, baseline="zeros")


# ----------------------------------------------------------------------------- compare


def test_compare_table():
    shapes = data.shapes(4, seed=0)
    model = small_cnn(classes=4)

    def oracle(model, x, target):
        return shapes.masks[:, None].float().expand_as(x).clone()

    rows = ev.compare(
        {"saliency": gradient.saliency, "oracle": oracle, "gxi": gradient.gradient_x_input},
        model, shapes.images, masks=shapes.masks, steps=4, baselines={"gxi": 0.0}, progress=False,
    )  # fmt: skip
    assert [row.method for row in rows] == ["random", "saliency", "oracle", "gxi"]
    random, saliency, oracle_row, gxi = rows
    assert oracle_row.mass_accuracy == oracle_row.rank_accuracy == oracle_row.pointing_game == 1.0
    assert random.mass_accuracy == pytest.approx(shapes.masks.float().mean().item(), abs=0.02)
    assert all(math.isfinite(v) for v in (saliency.deletion_auc, saliency.insertion_auc, saliency.aopc))
    assert saliency.seconds_per_image > 0
    assert math.isfinite(gxi.completeness_error) and math.isnan(saliency.completeness_error)
    assert "oracle" in str(rows) and "deletion_auc" in repr(rows)
    try:
        import pandas  # noqa: F401  (optional: the course does not depend on it)
    except ImportError:
        with pytest.raises(ImportError):
            rows.to_frame()
    else:
        assert list(rows.to_frame().index) == ["random", "saliency", "oracle", "gxi"]


def test_compare_optional_columns_and_bad_arguments():
    model = small_cnn()
    x = torch.rand(2, 3, 12, 12)
    rows = ev.compare({"saliency": gradient.saliency}, model, x, steps=2, region=6, progress=False,
                      with_stability=True, with_randomization=True)  # fmt: skip
    random, saliency = rows
    assert math.isnan(random.mass_accuracy)
    assert random.spread > 0 and random.max_sensitivity == 0.0 and random.randomized_spearman == 1.0
    assert math.isnan(saliency.spread) and math.isfinite(saliency.max_sensitivity)
    with pytest.raises(ValueError, match="methods"):
        ev.compare({"random": gradient.saliency}, model, x, progress=False)
    with pytest.raises(ValueError, match="baselines"):
        ev.compare({"a": gradient.saliency}, model, x, baselines={"b": 0.0}, progress=False)
    with pytest.raises(ValueError, match="masks"):
        ev.compare({"a": gradient.saliency}, model, x, masks=torch.ones(2, 5, 5, dtype=torch.bool), progress=False)
    with pytest.raises(ValueError, match="methods\\['bad'\\]"):
        ev.compare({"bad": lambda m, x, t: x[:, :, :3]}, model, x, progress=False)

    def failing(m, x, t):
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory") as raised:
        ev.compare({"lrp": failing}, model, x, progress=False)
    assert "raised by methods['lrp'] in evaluate.compare" in raised.value.__notes__


# ----------------------------------------------------------------------------- bad input and the model guard


def test_bad_inputs_get_named_errors():
    model, x, a = toy()
    with pytest.raises(ValueError, match="attribution.*\\(1, 1, 2, 2\\)"):
        ev.deletion(model, x, 1, torch.zeros(1, 1, 2, 3))
    with pytest.raises(TypeError, match="attribution"):
        ev.insertion(model, x, 1, a.numpy())
    with pytest.raises(ValueError, match="attribution.*NaN"):
        ev.deletion(model, x, 1, torch.full_like(x, math.nan))
    with pytest.raises(ValueError, match="steps"):
        ev.deletion(model, x, 1, a, steps=0)
    with pytest.raises(ValueError, match="baseline"):
        ev.deletion(model, x, 1, a, baseline="uniform")
    with pytest.raises(ValueError, match="baseline"):
        ev.insertion(model, x, 1, a, baseline=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="batch_size"):
        ev.deletion(model, x, 1, a, batch_size=0)
    with pytest.raises(ValueError, match="target"):
        ev.deletion(model, x, 5, a)
    with pytest.raises(ValueError, match="attribution"):
        ev.completeness_error(torch.zeros(2, 1, 2, 2), model, x)


def test_unbatched_sample_and_single_channel_attribution():
    model = small_cnn().eval()
    x = torch.rand(3, 12, 12)
    result = ev.deletion(model, x, None, torch.rand(1, 12, 12), steps=2)
    assert result.scores.shape == (1, 3)


def _raising_method(model, x, target):
    model.train()
    model[0].weight.requires_grad_(False)
    raise RuntimeError("method failed")


CALLS = {
    "deletion": lambda m, x, a: ev.deletion(m, x, None, a, steps=3),
    "insertion": lambda m, x, a: ev.insertion(m, x, None, a, steps=3),
    "pixel_flipping": lambda m, x, a: ev.pixel_flipping(m, x, None, a, region=4),
    "randomization_check": lambda m, x, a: ev.randomization_check(signed_saliency, m, x),
    "stability": lambda m, x, a: ev.stability(signed_saliency, m, x, n_noise=2),
    "completeness_error": lambda m, x, a: ev.completeness_error(a, m, x),
    "compare": lambda m, x, a: ev.compare({"s": signed_saliency}, m, x, steps=2, region=4, progress=False),
    "deletion raising": lambda m, x, a: ev.deletion(m, x, 9, a),
    "randomization raising": lambda m, x, a: ev.randomization_check(_raising_method, m, x),
    "stability raising": lambda m, x, a: ev.stability(_raising_method, m, x),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_model_is_unchanged(name):
    model = guarded_cnn()
    x, a = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    before = state(model)
    if "raising" in name:
        with pytest.raises((RuntimeError, ValueError)):
            CALLS[name](model, x, a)
    else:
        CALLS[name](model, x, a)
    assert_same_state(before, state(model))
    assert model.training


def test_spearman_matches_scipy_row_by_row_and_gives_nan_for_a_constant_row():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 30, generator=g), torch.randn(4, 30, generator=g)
    b[1] = a[1] ** 3  # monotone: rho = 1
    b[2, :10] = 0.0  # ties
    a[3] = 7.0  # constant
    rho = ev.spearman(a, b)
    for n in range(3):
        assert rho[n].item() == pytest.approx(stats.spearmanr(a[n], b[n]).statistic, abs=1e-12)
    assert rho[1].item() == pytest.approx(1.0) and math.isnan(rho[3].item())


# ----------------------------------------------------------------------------- generality sweep


class WritesIntoInput(nn.Module):
    """A model whose first layer is an in-place ReLU: it writes into the tensor it is given."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 3 * 3, 3))

    def forward(self, x):
        return self.net(x)


def test_methods_see_the_input_a_model_writing_into_its_input_was_given():
    torch.manual_seed(0)
    model, x = WritesIntoInput().eval(), torch.rand(2, 3, 5, 5) * 2 - 1
    seen = []

    def method(m, inputs, target):
        seen.append(inputs.clone())
        return torch.ones_like(inputs)

    ev.stability(method, model, x, n_noise=1)
    ev.randomization_check(method, model, x, layers=["net.3"])
    ev.compare({"m": method}, model, x, steps=2, progress=False)
    assert len(seen) == 5 and all(torch.equal(seen[i], x) for i in (0, 2, 3, 4))  # seen[1] is x + noise
    reference, kept = x - 0.5, x - 0.5
    result = ev.completeness_error(torch.zeros_like(x), model, x, baseline=reference)
    assert torch.equal(reference, kept), "the caller's reference is not written into"
    with torch.no_grad():
        c = model(x.clone()).argmax(1, keepdim=True)
        expected = (model(x.clone()) - model(kept.clone())).gather(1, c).squeeze(1)
    assert torch.allclose(result.promise, expected)
    per_sample = ev.completeness_error(torch.zeros_like(x), model, x, baseline=x[0] - 0.5)  # expanded: no crash
    assert torch.isfinite(per_sample.promise).all()
    assert math.isfinite(ev.completeness_error(torch.zeros_like(x), model, x, baseline="mean").mean_error)


def test_gaussian_blur_keeps_the_shape_and_refuses_bad_arguments():
    x = torch.rand(1, 2, 5, 4)
    assert core.gaussian_blur(x, klen=3, sigma=1.0).shape == x.shape
    for kwargs, error in [({"klen": 4}, ValueError), ({"klen": 0}, ValueError), ({"sigma": 0.0}, ValueError)]:
        with pytest.raises(error, match=next(iter(kwargs))):
            core.gaussian_blur(x, **kwargs)
    with pytest.raises(TypeError, match="x: expected a float tensor"):
        core.gaussian_blur(torch.rand(1, 1, 3, 3, 3))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m, x, a: ev.deletion(m, x, None, a, baseline=math.nan), "baseline"),
        (lambda m, x, a: ev.deletion(m, x, None, a, baseline=torch.full_like(x, math.inf)), "baseline"),
        (lambda m, x, a: ev.completeness_error(a, m, x, baseline=math.nan), "baseline"),
        (lambda m, x, a: ev.pixel_flipping(m, x, None, a, region=1, seed="0"), "seed"),
        (lambda m, x, a: ev.random_attribution(m, x, seed=1.5), "seed"),
        (lambda m, x, a: ev.stability(ev.random_attribution, m, x, noise=math.inf), "noise"),
        (lambda m, x, a: ev.stability(ev.random_attribution, m, x, seeds=[0, "1"]), "seed"),
        (lambda m, x, a: ev.auc(torch.rand(3, 1)), "scores"),
    ],
)
def test_bad_arguments_are_named(call, match):
    model, x, attribution = toy()
    with pytest.raises((ValueError, TypeError), match=match):
        call(model, x, attribution)
