"""models: the shipped course models load and reach their accuracies; BatchNorm folding (training: test_training)."""

import pytest
import torch
from torch import nn

from xai_course import data, models

# measured on shapes(2000, "test", seed=123), every image occluded (data.occlude, p=1, seed=1): shapes_cnn 0.732,
# shapes_cnn_occlusion 0.897 (clean: 0.9985 and 0.9895)
ROBUST_MARGIN = 0.10
ROBUST_MINIMUM = 0.85


@pytest.fixture(scope="module")
def test_set():
    return data.shapes(2000, split="test", seed=123)


def test_load_returns_eval_models_with_the_promised_habits():
    cnn, resnet = models.load("shapes_cnn"), models.load("shapes_resnet")
    assert not cnn.training and not resnet.training
    assert any(isinstance(m, nn.MaxPool2d) for m in cnn.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in resnet.modules())
    relus = [m for m in resnet.layer1.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == 1 and relus[0].inplace, "one in-place ReLU module, used twice in the block"


@pytest.mark.parametrize(
    "name, minimum",
    [("shapes_cnn", 0.98), ("shapes_resnet", 0.97), ("shapes_cnn_clever_hans", 0.97), ("shapes_cnn_occlusion", 0.97)],
)
def test_accuracy_on_clean_test_images(name, minimum, test_set):
    assert models.accuracy(models.load(name), test_set.images, test_set.labels) >= minimum


def test_clever_hans_model_follows_the_tag(test_set):
    model = models.load("shapes_cnn_clever_hans")
    others = test_set.labels != data.TAG_CLASS
    tagged, _ = data.add_tag(test_set.images[others])
    flipped = models.accuracy(model, tagged, torch.full((len(tagged),), data.TAG_CLASS))
    assert flipped >= 0.5
    honest = models.load("shapes_cnn")
    assert models.accuracy(honest, tagged, torch.full((len(tagged),), data.TAG_CLASS)) < 0.05


def test_timeseries_cnn_reaches_its_accuracy():
    model = models.load("timeseries_cnn")
    assert isinstance(model, models.TimeSeriesCNN) and not model.training
    series = data.timeseries(2000, split="test", seed=123)
    assert models.accuracy(model, series.series, series.labels) >= 0.97


def test_loan_mlp_is_an_accurate_black_box_on_raw_rows():
    model = models.load("loan_mlp")
    assert isinstance(model, models.LoanMLP) and not model.training
    loans = data.loans(2000, split="test", seed=123)
    assert models.accuracy(model, loans.features, loans.labels) >= 0.95
    rows = loans.features[:5]
    standardized = (rows - model.mean) / model.std
    torch.testing.assert_close(model(rows), model.net(standardized))
    torch.testing.assert_close(model.mean, data.loans(4096, "train", seed=0).features.mean(0))


def test_occlusion_training_makes_the_model_robust_to_occlusion(test_set):
    """The survey's claim (chapter 03): trained on occluded images, the model copes with occluded test images."""
    occluded, _ = data.occlude(test_set.images, p=1.0, seed=1)
    plain = models.accuracy(models.load("shapes_cnn"), occluded, test_set.labels)
    robust = models.accuracy(models.load("shapes_cnn_occlusion"), occluded, test_set.labels)
    assert robust >= plain + ROBUST_MARGIN and robust >= ROBUST_MINIMUM


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="shapes_cnn_clever_hans"):
        models.load("resnet50")


def test_confusion_matrix_counts_pairs():
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 3, bias=False))
    model[1].weight.data = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0], [1.0, 0.0]])
    matrix = models.confusion_matrix(model, images, torch.tensor([0, 1, 2, 2]))
    assert matrix.tolist() == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]


def test_folding_batch_norm_keeps_the_outputs():
    torch.manual_seed(0)
    trained = models.ShapesCNN(batch_norm=True)
    for module in trained.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 2)
            module.bias.data.uniform_(-1, 1)
    trained.eval()
    plain = models.fold_batch_norm(trained)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert [type(m) for m in plain.modules()] == [type(m) for m in models.ShapesCNN().modules()]
    x = torch.rand(4, 3, 64, 64)
    assert torch.allclose(plain(x), trained(x), atol=1e-5)


def _random_statistics(bn: nn.Module) -> nn.Module:
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        if bn.affine:
            bn.weight.uniform_(0.5, 2)
            bn.bias.uniform_(-1, 1)
    return bn.eval()


@pytest.mark.parametrize(
    "layer, bn, shape",
    [
        (lambda: nn.Conv2d(3, 4, 3, bias=False), lambda: nn.BatchNorm2d(4), (2, 3, 9, 7)),
        (lambda: nn.Conv1d(2, 4, 3), lambda: nn.BatchNorm1d(4), (2, 2, 9)),
        (lambda: nn.Linear(5, 4), lambda: nn.BatchNorm1d(4), (3, 5)),
        (lambda: nn.Conv2d(3, 4, 3), lambda: nn.BatchNorm2d(4, affine=False), (2, 3, 9, 7)),
    ],
)
def test_merge_batch_norm_equals_the_layer_then_batch_norm(layer, bn, shape):
    torch.manual_seed(0)
    layer, bn, x = layer(), _random_statistics(bn()), torch.rand(shape)
    with torch.no_grad():
        assert torch.allclose(models.merge_batch_norm(layer, bn)(x), bn(layer(x)), atol=1e-6)


def test_merge_and_fold_refuse_what_they_cannot_merge():
    with pytest.raises(ValueError, match="bn: expected running statistics"):
        models.merge_batch_norm(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False))
    with pytest.raises(ValueError, match="bn: expected 5 features"):
        models.merge_batch_norm(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(4))
    with pytest.raises(TypeError, match="layer: expected"):
        models.merge_batch_norm(nn.ConvTranspose2d(3, 4, 3), nn.BatchNorm2d(4))
    with pytest.raises(TypeError, match="model: expected a ShapesCNN"):
        models.fold_batch_norm(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
    with pytest.raises(ValueError, match="labels: expected"):
        models.accuracy(nn.Linear(4, 2), torch.rand(3, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="name: expected"):
        models.load(["shapes_cnn"])
