"""models: the shipped course models load, reach their accuracies, and train deterministically."""

import pytest
import torch
from torch import nn

from xai_course import data, models


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
    "name, minimum", [("shapes_cnn", 0.98), ("shapes_resnet", 0.97), ("shapes_cnn_clever_hans", 0.97)]
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


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="shapes_cnn_clever_hans"):
        models.load("resnet50")


def test_training_is_deterministic(monkeypatch):
    tiny = models.Recipe(models.ShapesCNN, epochs=1, n_train=128, batch_size=64)
    monkeypatch.setitem(models.RECIPES, "tiny", tiny)
    a = models.train("tiny", seed=0, progress=False)
    b = models.train("tiny", seed=0, progress=False)
    c = models.train("tiny", seed=1, progress=False)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert not torch.equal(a.features[0].weight, c.features[0].weight)
    assert not a.training


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
