"""Chapter 04: optimization-based inversion, trained decoders, checkerboard artifacts, the prediction-vector attack."""

import math

import pytest
import torch
from conftest import TinyNet, assert_unchanged, state_of
from skimage.metrics import structural_similarity
from torch import nn

from xai_course import data, inversion, layers, models, training

FAST = dict(steps=30, progress=False)


@pytest.fixture(scope="module")
def cnn():
    return models.load("shapes_cnn")


@pytest.fixture(scope="module")
def images():
    return data.canonical(2).images


def linear_map(d_in=48, d_out=12) -> nn.Module:
    """phi(x) = W x on 3 x 4 x 4 images: fewer features than pixels, so many images share them."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(d_in, d_out, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(d_out, d_in) / math.sqrt(d_in))
    return model.eval()


# ----------------------------------------------------------------------------- layers and features


def test_blocks_of_course_models(cnn, tiny, images):
    expected = ["features.2", "features.5", "features.7", "features.10", "classifier.1", "classifier.2"]
    assert inversion.blocks(cnn, images) == expected
    assert inversion.blocks(tiny, torch.rand(1, 3, 8, 8)) == ["pool", "fc"]
    resnet = models.ShapesResNet().eval()
    assert inversion.blocks(resnet, images) == ["maxpool", "layer1", "layer2", "avgpool", "fc"]


def test_features_are_the_layer_output(cnn, images):
    phi = layers.features(cnn, images, "features.5")
    with torch.no_grad():
        assert torch.equal(phi, cnn.features[:6](images))
        assert torch.equal(layers.features(cnn, images, "classifier.2"), cnn(images))
    assert layers.features(cnn, images[0], "features.5").shape == (32, 16, 16)


def test_unknown_layer_lists_valid_names(cnn, images):
    with pytest.raises(ValueError, match="layer") as error:
        inversion.optimize(cnn, images, "features.99", **FAST)
    message = str(error.value)
    assert "'features.99'" in message and "'features.0'" in message and "'classifier.2'" in message
    with pytest.raises(TypeError, match="layer: expected the name of a sub-module"):
        inversion.optimize(cnn, images, 3, **FAST)


# ----------------------------------------------------------------------------- priors and metrics


def test_priors_by_hand():
    x = torch.tensor([[[[0.5, 0.75], [1.0, 0.25]]]])
    # alpha: |(x - 1/2) / (1/2)|^6 = 0, 1/64, 1, 1/64
    assert inversion.alpha_prior(x, 6).item() == pytest.approx((1 + 2 / 64) / 4)
    assert inversion.alpha_prior(x, 2).item() == pytest.approx((0 + 0.25 + 1 + 0.25) / 4)
    # TV, forward differences with replicate boundary: (0,0): .25^2 + .5^2, (0,1): 0 + .5^2, (1,0): .75^2 + 0
    squared = [0.3125, 0.25, 0.5625, 0.0]
    assert inversion.total_variation(x, 2).item() == pytest.approx(sum(squared) / 4)
    assert inversion.total_variation(x, 1).item() == pytest.approx(sum(math.sqrt(s) for s in squared) / 4, abs=1e-4)
    assert inversion.total_variation(torch.full((2, 3, 5, 5), 0.3)).tolist() == [0.0, 0.0]
    assert inversion.alpha_prior(x[0]).ndim == 0 and inversion.total_variation(x.expand(3, 1, 2, 2)).shape == (3,)


def test_ssim_agrees_with_scikit_image():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 3, 20, 24, generator=g)
    b = (a + 0.2 * torch.randn(3, 3, 20, 24, generator=g)).clamp(0, 1)
    ours = inversion.ssim(a, b)
    reference = [
        structural_similarity(p.numpy(), q.numpy(), data_range=1.0, channel_axis=0)
        for p, q in zip(a.double(), b.double())
    ]
    assert torch.allclose(ours.double(), torch.tensor(reference, dtype=torch.float64), atol=1e-6)
    assert inversion.ssim(a, a).tolist() == pytest.approx([1.0] * 3)
    assert 0.0 < ours.min() < 0.9


def test_region_error_by_hand():
    x = torch.tensor([[1.0, 0.0], [0.0, 0.0]]).expand(1, 3, 2, 2)
    mask = torch.tensor([[[True, True], [False, False]]])
    guess = torch.full_like(x, 0.5)
    inside, outside = inversion.region_error(guess, x, mask)
    assert inside.tolist() == pytest.approx([0.5]) and outside.tolist() == pytest.approx([0.5])
    # the flat guess (mean colour 1/4) errs by sqrt((0.75^2 + 0.25^2) / 2) inside and 0.25 outside
    inside, outside = inversion.region_error(guess, x, mask, relative=True)
    assert inside.tolist() == pytest.approx([0.5 / math.sqrt(0.3125)]) and outside.tolist() == pytest.approx([2.0])
    assert inversion.region_error(x, x, mask)[0].tolist() == [0.0]
    assert inversion.region_error(guess[0], x[0], mask[0])[1].ndim == 0
    with pytest.raises(ValueError, match="mask: expected a bool tensor of shape"):
        inversion.region_error(guess, x, mask[:, :1])


# ----------------------------------------------------------------------------- optimization


def test_optimize_reaches_first_block_of_shapes_cnn(cnn, images):
    first = inversion.blocks(cnn, images)[0]
    result = inversion.optimize(cnn, images, first, progress=False)  # default steps
    assert result.images.shape == images.shape and result.layer == first
    assert result.images.min() >= 0 and result.images.max() <= 1
    assert (result.feature_error < 0.1).all(), result.feature_error
    assert result.history.shape == (inversion.STEPS, 2) and (result.history[0] > 5 * result.history[-1]).all()
    assert torch.allclose(result.history[-1], result.feature_error, rtol=0.2)  # the last step is the result
    assert (result.ssim > 0.7).all() and (result.pixel_error < 0.1).all()  # the first block keeps the image


def test_linear_map_without_priors_reaches_the_nearest_solution():
    model = linear_map()
    g = torch.Generator().manual_seed(1)
    x = 0.5 + 0.1 * torch.randn(1, 3, 4, 4, generator=g)
    w = model[1].weight.detach()
    # the closed form: of all images with W x* = W x, the one nearest to the start 1/2 (minimum norm of x* - 1/2)
    nearest = 0.5 + (torch.linalg.pinv(w) @ (w @ (x - 0.5).flatten())).view_as(x)
    assert torch.allclose(w @ nearest.flatten(), w @ x.flatten(), atol=1e-5)
    assert nearest.min() > 0 and nearest.max() < 1  # the box [0, 1] is not active
    free = dict(tv_weight=0, alpha_weight=0, init="gray", progress=False)
    sgd = inversion.optimize(model, x, "1", steps=300, lr=0.5, optimizer="sgd", **free)
    assert sgd.feature_error.item() < 1e-4
    assert torch.allclose(sgd.images, nearest, atol=1e-4)
    assert (x - nearest).norm() > 0.1  # not the original: the features do not determine the image
    adam = inversion.optimize(model, x, "1", steps=300, lr=0.02, **free)
    assert adam.feature_error.item() < 1e-3  # zero feature error too, at another solution
    assert (adam.images - 0.5).norm() >= (nearest - 0.5).norm() - 1e-4


def test_priors_change_the_solution_and_smooth_it():
    model = linear_map()
    x = 0.5 + 0.1 * torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    plain = inversion.optimize(model, x, "1", tv_weight=0, alpha_weight=0, **FAST)
    smooth = inversion.optimize(model, x, "1", tv_weight=10, alpha_weight=0, **FAST)
    assert inversion.total_variation(smooth.images) < 0.5 * inversion.total_variation(plain.images)
    assert smooth.feature_error > plain.feature_error


def test_seeds(cnn, images):
    x = images[0]
    a = inversion.optimize(cnn, x, "features.2", seed=0, **FAST)
    b = inversion.optimize(cnn, x, "features.2", seed=0, **FAST)
    c = inversion.optimize(cnn, x, "features.2", seed=1, **FAST)
    assert a.images.shape == x.shape and a.feature_error.ndim == 0  # unbatched in, unbatched out
    assert torch.equal(a.images, b.images) and torch.equal(a.history, b.history)
    assert (a.images - c.images).abs().max() > 0.05
    gray = inversion.optimize(cnn, x, "features.2", init="gray", seed=0, **FAST)
    assert torch.equal(gray.images, inversion.optimize(cnn, x, "features.2", init="gray", seed=5, **FAST).images)


def test_many_solutions(cnn, images):
    solutions = inversion.many_solutions(cnn, images[:1], "features.10", seeds=3, **FAST)
    assert solutions.images.shape == (3, 1, 3, 64, 64) and solutions.spread.shape == (1, 3, 64, 64)
    assert solutions.seeds == [0, 1, 2] and len(solutions.results) == 3
    assert torch.allclose(solutions.spread, solutions.images.std(0))
    assert solutions.spread.mean() > 0.02  # the deep layer leaves much of the image open
    alone = inversion.optimize(cnn, images[:1], "features.10", seed=2, **FAST)
    assert torch.equal(solutions.results[2].images, alone.images)
    assert torch.equal(solutions.results[2].feature_error, alone.feature_error)
    with pytest.raises(TypeError, match="seeds"):
        inversion.many_solutions(cnn, images, "features.10", seeds=[3], **FAST)


def test_reconstruct_layers(tiny):
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    results = inversion.reconstruct_layers(tiny, x, steps=20, progress=False)
    assert list(results) == ["pool", "fc"]
    assert all(r.images.shape == x.shape for r in results.values())
    results = inversion.reconstruct_layers(tiny, x, ["conv", "bn"], tv_weight=[0.0, 1.0], steps=20, progress=False)
    assert list(results) == ["conv", "bn"]
    with pytest.raises(ValueError, match="tv_weight: expected one weight per layer"):
        inversion.reconstruct_layers(tiny, x, ["conv", "bn"], tv_weight=[0.0], steps=20, progress=False)


def test_bad_arguments(cnn, images):
    with pytest.raises(ValueError, match=r"x: expected pixel values in \[0.0, 1.0\]"):
        inversion.optimize(cnn, images * 2, "features.2", **FAST)
    with pytest.raises(TypeError, match="x: expected a float tensor"):
        inversion.optimize(cnn, images.numpy(), "features.2", **FAST)
    with pytest.raises(ValueError, match="steps: expected an int >= 1, got 0"):
        inversion.optimize(cnn, images, "features.2", steps=0, progress=False)
    with pytest.raises(ValueError, match="lr: expected a number > 0.0, got -1"):
        inversion.optimize(cnn, images, "features.2", lr=-1, **FAST)
    with pytest.raises(TypeError, match="tv_weight: expected a finite number"):
        inversion.optimize(cnn, images, "features.2", tv_weight="big", **FAST)
    with pytest.raises(ValueError, match="init: expected 'noise', 'gray'"):
        inversion.optimize(cnn, images, "features.2", init="zeros", **FAST)
    with pytest.raises(ValueError, match="optimizer"):
        inversion.optimize(cnn, images, "features.2", optimizer="lbfgs", **FAST)
    with pytest.raises(ValueError, match="seed"):
        inversion.optimize(cnn, images, "features.2", seed=-1, **FAST)
    with pytest.raises(ValueError, match="upsampling: expected one of"):
        inversion.Decoder((4, 8, 8), (3, 64, 64), upsampling="bilinear")
    with pytest.raises(ValueError, match="kernel_size: expected 3 or 5"):
        inversion.Decoder((4, 8, 8), (3, 64, 64), upsampling="transposed", kernel_size=4)
    with pytest.raises(ValueError, match="truncation: expected at most the number of classes 4, got 5"):
        inversion.align(torch.full((1, 4), 0.25), 5)


# ----------------------------------------------------------------------------- the model is never changed


def test_model_unchanged_and_in_eval_mode_during_the_call():
    torch.manual_seed(0)
    model = TinyNet().train()  # a model left in training mode by its user
    seen = []
    model.bn.register_forward_pre_hook(lambda m, args: seen.append(m.training))
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    before = state_of(model)
    inversion.optimize(model, x, "bn", steps=5, progress=False)
    inversion.many_solutions(model, x, "fc", seeds=2, steps=5, progress=False)
    layers.features(model, x, "pool")
    inversion.blocks(model, x)
    assert_unchanged(before, model)
    assert seen and not any(seen)
    assert all(p.grad is None for p in model.parameters())


def test_model_unchanged_when_the_call_raises():
    torch.manual_seed(0)
    model = TinyNet().eval()
    calls = []

    def bomb(module, args):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("boom")

    model.register_forward_pre_hook(bomb)
    before = state_of(model)
    with pytest.raises(RuntimeError, match="boom"):
        inversion.optimize(model, torch.rand(1, 3, 8, 8), "relu", steps=10, progress=False)
    assert_unchanged(before, model)

    class Pair(nn.Module):
        def forward(self, x):
            return x, x

    class Splitter(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.pair, self.fc = nn.Conv2d(3, 2, 3), Pair(), nn.Linear(2, 2)

        def forward(self, x):
            return self.fc(self.pair(self.conv(x))[0].mean((2, 3)))

    model = Splitter()
    before = state_of(model)
    with pytest.raises(NotImplementedError, match="layer pair"):
        inversion.optimize(model, torch.rand(1, 3, 8, 8), "pair", steps=3, progress=False)
    assert_unchanged(before, model)


def test_training_leaves_the_model_unchanged(cnn, images):
    before = state_of(cnn)
    decoder = training.train_decoder(cnn, "classifier.2", images, epochs=1, progress=False)
    inversion.decode(cnn, decoder, images)
    attack = training.train_attack(cnn, images, epochs=1, progress=False)
    inversion.invert_predictions(cnn, attack, images)
    inversion.class_mean_baseline(cnn, images, images)
    assert_unchanged(before, cnn)


# ----------------------------------------------------------------------------- decoders and checkerboards


@pytest.fixture(scope="module")
def train_images():
    return data.shapes(128, "train", seed=7).images


def test_decoder_shapes():
    for feature_shape in [(16, 32, 32), (64, 8, 8), (128,), (4,), (3, 64, 64)]:
        for upsampling in inversion.UPSAMPLING:
            decoder = inversion.Decoder(feature_shape, (3, 64, 64), upsampling=upsampling)
            out = decoder(torch.rand(2, *feature_shape))
            assert out.shape == (2, 3, 64, 64) and out.min() >= 0 and out.max() <= 1
    with pytest.raises(NotImplementedError, match="power of two"):
        inversion.Decoder((4, 24, 24), (3, 64, 64))


def test_checkerboard_measure():
    i, j = torch.meshgrid(torch.arange(8), torch.arange(10), indexing="ij")
    board = 0.5 + 0.2 * (-1.0) ** (i + j)
    stripes = 0.5 + 0.1 * (-1.0) ** i
    ramp = (i + 2 * j) / 40.0
    blob = torch.exp(-((i - 4.0) ** 2 + (j - 5.0) ** 2) / 8)
    images = torch.stack([board, stripes, ramp, torch.full((8, 10), 0.3), blob, ramp + board - 0.5])
    images = images.unsqueeze(1).expand(6, 3, 8, 10)
    amplitude = inversion.checkerboard(images)
    assert amplitude[[0, 1, 5]].tolist() == pytest.approx([0.2, 0.1, 0.2])
    assert amplitude[2:4].tolist() == pytest.approx([0, 0], abs=1e-7)  # ramps and constants: none
    assert 0 < amplitude[4] < 0.01  # a smooth blob: little
    residual = inversion.checkerboard(images + 0.1 * (board - 0.5), reference=images)
    assert residual.tolist() == pytest.approx([0.02] * 6)
    assert inversion.checkerboard(images[0]).ndim == 0
    course = data.canonical(4).images
    assert inversion.checkerboard(course).max() < 0.002  # the course images have next to none


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_checkerboard_of_decoders_at_initialization(kernel_size):
    """Odena et al.: a constant input already gives a checkerboard through stride-2 transposed convolutions."""
    amplitudes = {}
    for upsampling in inversion.UPSAMPLING:
        values = []
        for seed in range(3):
            torch.manual_seed(seed)
            decoder = inversion.Decoder((8, 8, 8), (3, 64, 64), upsampling=upsampling, kernel_size=kernel_size)
            with torch.no_grad():
                values.append(inversion.checkerboard(decoder(torch.ones(1, 8, 8, 8))).item())
        amplitudes[upsampling] = max(values) if upsampling == "resize_conv" else min(values)
    assert amplitudes["transposed"] > 1e-3
    assert amplitudes["transposed"] > 10 * amplitudes["resize_conv"], amplitudes


def test_checkerboard_of_trained_decoders(cnn, train_images):
    """After a short training the artifact persists in the transposed decoder's output, not in the resize-conv one."""
    kw = dict(epochs=3, batch_size=32, progress=False)
    test = data.shapes(16, "test", seed=0).images
    amplitude = {}
    for upsampling in inversion.UPSAMPLING:
        decoder = training.train_decoder(cnn, "features.10", train_images, upsampling=upsampling, **kw)
        amplitude[upsampling] = inversion.checkerboard(inversion.decode(cnn, decoder, test).images).mean().item()
    assert amplitude["transposed"] > 2 * amplitude["resize_conv"], amplitude


@pytest.fixture(scope="module")
def mean_train_image():
    return data.shapes(500, "train", seed=100).images.mean(0, keepdim=True)


@pytest.mark.parametrize("name", sorted(inversion.DECODERS) + sorted(inversion.ATTACKS))
def test_shipped_networks_load_and_invert(cnn, name, mean_train_image):
    """The shipped weights (hash-checked by load) on held-out images, against the mean training image.

    The decoders from the last convolutional block beat it; from the four logits or probabilities (the logit
    decoder, the attacks) they match it, as chapter 04 reports: four class scores say almost nothing about
    where the pixels of a course image are.
    """
    network = inversion.load(name)
    recipe = inversion._recipe(name)
    test = data.shapes(64, "test", seed=5).images
    mean_mse = (mean_train_image - test).pow(2).mean()
    if isinstance(network, inversion.Decoder):
        assert network.layer == recipe.layer and network.upsampling == recipe.upsampling and not network.training
        mse = inversion.decode(cnn, network, test).pixel_error.pow(2).mean()
    else:
        assert network.truncation == recipe.truncation and not network.training
        mse = inversion.invert_predictions(cnn, network, test).pixel_error.pow(2).mean()
    if getattr(recipe, "layer", None) == "features.10":
        assert mse < 0.6 * mean_mse, (mse, mean_mse)
    else:
        assert abs(mse - mean_mse) < 0.05 * mean_mse, (mse, mean_mse)


# ----------------------------------------------------------------------------- the prediction-vector attack


def test_align_is_yang_et_al():
    p = torch.tensor([[0.2, 0.7, 0.0, 0.1]])
    top2 = inversion.align(p, 2)
    assert top2[0].tolist() == pytest.approx([math.log(0.2) + 50, math.log(0.7) + 50, 0, 0])
    full = inversion.align(p)  # log 0 -> -1000, + 50 = -950: everything shifted up by 950
    assert full[0].tolist() == pytest.approx([math.log(0.2) + 1000, math.log(0.7) + 1000, 0, math.log(0.1) + 1000])
    top1 = inversion.align(p, 1)
    assert top1[0].tolist() == pytest.approx([0, math.log(0.7) + 50, 0, 0])


def test_attack_with_truncation(cnn):
    auxiliary = data.shapes(256, "train", seed=8).images
    victims = data.shapes(64, "test", seed=3).images
    attack = training.train_attack(cnn, auxiliary, truncation=1, epochs=6, progress=False)
    assert attack.truncation == 1 and not attack.training
    assert attack.history[-1] < 0.9 * attack.history[0]
    result = inversion.invert_predictions(cnn, attack, victims)
    assert result.images.shape == victims.shape and result.layer == "prediction vector"
    assert result.images.min() >= 0 and result.images.max() <= 1
    mse = lambda r: r.pixel_error.pow(2).mean().item()
    baseline = inversion.class_mean_baseline(cnn, auxiliary, victims)
    assert baseline.images.shape == victims.shape
    # nothing trivially wrong: far better than black or noise, about as good as the class mean
    black = inversion.rmse(torch.zeros_like(victims), victims).pow(2).mean().item()
    noise = inversion.rmse(torch.rand(victims.shape, generator=torch.Generator().manual_seed(0)), victims)
    assert mse(result) < 0.2 * black and mse(result) < 0.5 * noise.pow(2).mean().item()
    assert mse(result) < 1.1 * mse(baseline)
    # the reconstruction depends on the released vector: different predicted classes, different images
    predicted = layers.features(cnn, victims, "classifier.2").argmax(1)
    a, b = result.images[predicted == 0][0], result.images[predicted == 1][0]
    assert (a - b).abs().mean() > 1e-3
    # top-1: the vector of an image of class c is all zeros except at c
    released = inversion.align(layers.features(cnn, victims, "classifier.2").softmax(1), attack.truncation)
    assert ((released > 0).sum(1) <= 1).all()


def test_attack_table(cnn, train_images):
    victims = data.shapes(16, "test", seed=3).images
    attacks = [training.train_attack(cnn, train_images[:64], truncation=k, epochs=1, progress=False) for k in (1, 4)]
    rows = inversion.attack_table(cnn, train_images[:64], victims, attacks)
    assert [row["k"] for row in rows] == [1, 4]
    assert rows[0]["baseline_mse"] == rows[1]["baseline_mse"] > 0
    assert rows[0]["mean_mse"] == pytest.approx((train_images[:64].mean(0) - victims).pow(2).mean().item())
    assert all(0 < row["attack_mse"] < 0.25 for row in rows)
    with pytest.raises(TypeError, match="attacks: expected a non-empty list of Attack"):
        inversion.attack_table(cnn, train_images[:64], victims, attacks[0])


def test_class_means_and_the_table_agree_with_the_baseline(cnn, train_images):
    auxiliary, victims = train_images[:64], data.shapes(16, "test", seed=3).images
    means = inversion.class_means(cnn, auxiliary)
    assert means.shape == (4, 3, 64, 64)
    predicted = layers.features(cnn, auxiliary, "classifier.2").argmax(1)
    for k in range(4):  # grouped by the model's prediction; a class never predicted gets the mean of all
        expected = auxiliary[predicted == k].mean(0) if (predicted == k).any() else auxiliary.mean(0)
        assert torch.allclose(means[k], expected)
    baseline = inversion.class_mean_baseline(cnn, auxiliary, victims)
    assert torch.equal(baseline.images, means[layers.features(cnn, victims, "classifier.2").argmax(1)])
    attack = training.train_attack(cnn, auxiliary, truncation=3, epochs=1, progress=False)
    (row,) = inversion.attack_table(cnn, auxiliary, victims, [attack])
    result = inversion.invert_predictions(cnn, attack, victims)
    assert row["k"] == 3 and row["attack_mse"] == pytest.approx(result.pixel_error.pow(2).mean().item(), rel=1e-5)
    assert row["attack_ssim"] == pytest.approx(result.ssim.mean().item(), rel=1e-5)
    assert row["baseline_mse"] == pytest.approx(baseline.pixel_error.pow(2).mean().item(), rel=1e-5)
    assert row["baseline_ssim"] == pytest.approx(baseline.ssim.mean().item(), rel=1e-5)


def test_layer_output_keeps_gradients_and_equals_features(cnn, images):
    x = images[:2].clone().requires_grad_(True)
    phi = layers.output(cnn, x, "features.3")
    assert torch.equal(phi.detach(), layers.features(cnn, images[:2], "features.3"))
    (grad,) = torch.autograd.grad(phi.sum(), x)
    assert grad.abs().sum() > 0
    with pytest.raises(ValueError, match="layer: expected the name of a sub-module"):
        layers.output(cnn, x, "features.99")


def test_optimize_a_model_that_writes_into_its_input():
    torch.manual_seed(0)
    model = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(3, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 5 * 5, 3))
    x = torch.rand(2, 3, 7, 7)
    before = state_of(model)
    result = inversion.optimize(model, x, "1", steps=3, progress=False)
    assert result.images.shape == x.shape and torch.isfinite(result.images).all()
    assert_unchanged(before, model)


def test_rmse_per_image_and_of_one_image():
    a, b = torch.rand(2, 3, 5, 4), torch.rand(2, 3, 5, 4)
    loop = torch.stack([((a[i] - b[i]) ** 2).mean().sqrt() for i in range(2)])
    assert torch.allclose(inversion.rmse(a, b), loop)
    assert inversion.rmse(a[1], b[1]).shape == () and torch.allclose(inversion.rmse(a[1], b[1]), loop[1])
    with pytest.raises(ValueError, match="b: expected the shape of a"):
        inversion.rmse(a, b[:1])
    assert inversion.ssim(a.double(), b.double()).dtype == torch.float64
    with pytest.raises(TypeError, match="c: expected"):
        inversion.align(torch.rand(2, 3).softmax(1), c="50")
