"""training: the course's networks train deterministically, ship with their hash and reproduce their bits."""

import json

import pytest
import torch
from torch import nn

from xai_course import data, inversion, models, training
from xai_course.__main__ import main


@pytest.fixture(scope="module")
def cnn():
    return models.load("shapes_cnn")


@pytest.fixture(scope="module")
def train_images():
    return data.shapes(128, "train", seed=7).images


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


@pytest.fixture
def data_folder(tmp_path, monkeypatch):
    """A temporary data/ with the shipped shapes_cnn only, so that shipping leaves data/ alone."""
    (tmp_path / "shapes_cnn.pt").write_bytes(data.path("shapes_cnn.pt").read_bytes())
    (tmp_path / "manifest.json").write_text(json.dumps({"shapes_cnn.pt": data.manifest()["shapes_cnn.pt"]}))
    monkeypatch.setenv("XAI_COURSE_DATA", str(tmp_path))
    return tmp_path


# ----------------------------------------------------------------------------- the training loop


def test_fit_is_seeded_and_drops_the_last_batch_on_request():
    x, y = torch.rand(10, 3), torch.rand(10, 2)
    torch.manual_seed(5)
    state = torch.random.get_rng_state()
    kw = dict(epochs=2, batch_size=4, lr=0.01, seed=3, progress=False)
    a, history = training.fit(lambda: nn.Linear(3, 2), (x, y), **kw)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global random stream is left alone
    b, _ = training.fit(lambda: nn.Linear(3, 2), (x, y), **kw)
    assert_same_weights(a, b)
    assert not a.training and len(history) == 2
    torch.manual_seed(3)
    assert not torch.equal(a.weight, nn.Linear(3, 2).weight), "seeded like this, then trained"
    seen = []
    count = lambda out, t: seen.append(len(t)) or out.sum() * 0  # the batch sizes
    training.fit(lambda: nn.Linear(3, 2), (x, y), loss=count, **kw)
    assert seen == [4, 4, 2, 4, 4, 2]
    seen.clear()
    training.fit(lambda: nn.Linear(3, 2), lambda epoch: (x, y), loss=count, drop_last=True, **kw)
    assert seen == [4, 4, 4, 4]
    with pytest.raises(ValueError, match="epochs"):
        training.fit(lambda: nn.Linear(3, 2), (x, y), **{**kw, "epochs": 0})
    with pytest.raises(ValueError, match="lr"):
        training.fit(lambda: nn.Linear(3, 2), (x, y), **{**kw, "lr": -1.0})


# ----------------------------------------------------------------------------- course models


def test_training_handles_series_and_occlusion(monkeypatch):
    recipes = {
        "tiny_series": models.Recipe(models.TimeSeriesCNN, dataset="timeseries", epochs=1, n_train=128),
        "tiny_occluded": models.Recipe(models.ShapesCNN, occlude=1.0, epochs=1, n_train=128),
        "tiny_clean": models.Recipe(models.ShapesCNN, epochs=1, n_train=128),
        "tiny_unknown": models.Recipe(models.ShapesCNN, dataset="mnist"),
    }
    for name, recipe in recipes.items():
        monkeypatch.setitem(models.RECIPES, name, recipe)
    for name in ("tiny_series", "tiny_occluded"):
        a, b = training.train(name, progress=False), training.train(name, progress=False)
        assert_same_weights(a, b)
    assert isinstance(a, models.ShapesCNN) and isinstance(
        training.train("tiny_series", progress=False), models.TimeSeriesCNN
    )
    clean = training.train("tiny_clean", progress=False)
    assert not torch.equal(clean.features[0].weight, a.features[0].weight), "the occluding patches change training"
    with pytest.raises(ValueError, match="dataset"):
        training.train("tiny_unknown", progress=False)


def test_training_handles_the_loan_table(monkeypatch):
    monkeypatch.setitem(
        models.RECIPES, "tiny_loans", models.Recipe(models.LoanMLP, dataset="loans", epochs=1, n_train=256)
    )
    a, b = training.train("tiny_loans", progress=False), training.train("tiny_loans", progress=False)
    assert isinstance(a, models.LoanMLP) and not a.training
    assert_same_weights(a, b)
    torch.manual_seed(0)  # train() seeds the initial weights the same way
    assert not torch.equal(a.net[0].weight, models.LoanMLP().net[0].weight), "training changed the weights"


def test_training_is_deterministic(monkeypatch):
    tiny = models.Recipe(models.ShapesCNN, fold=True, epochs=1, n_train=128, batch_size=64)
    monkeypatch.setitem(models.RECIPES, "tiny", tiny)
    a = training.train("tiny", seed=0, progress=False)
    b = training.train("tiny", seed=0, progress=False)
    c = training.train("tiny", seed=1, progress=False)
    assert_same_weights(a, b)
    assert not torch.equal(a.features[0].weight, c.features[0].weight)
    assert not a.training and not any(isinstance(m, nn.BatchNorm2d) for m in a.modules()), "folded"


def test_ship_trains_and_records_through_the_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(models.RECIPES, "tiny", models.Recipe(models.ShapesCNN, epochs=1, n_train=64, batch_size=64))
    (tmp_path / "manifest.json").write_text("{}")
    monkeypatch.setenv("XAI_COURSE_DATA", str(tmp_path))
    main(["train", "tiny", "--seed", "1"])
    entry = data.manifest()["tiny.pt"]
    assert entry["command"] == "python -m xai_course train tiny --seed 1" and entry["sha256"] in capsys.readouterr().out
    assert data.verify() == ["tiny.pt"]
    assert_same_weights(models.load("tiny"), training.train("tiny", seed=1, progress=False))


def test_unknown_names_list_the_shipped_networks():
    with pytest.raises(ValueError, match="expected one of the shipped networks .*attack_shapes_cnn_top1.*loan_mlp"):
        training.train("decoder_of_nothing")
    with pytest.raises(ValueError, match="name: expected one of the shipped networks"):
        training.ship(["shapes_cnn"])
    with pytest.raises(ValueError, match="name: expected one of the shipped networks"):
        training.recipe_data("shapes_cnn")  # a course model trains on new data every epoch


# ----------------------------------------------------------------------------- decoders and attacks


def test_decoder_training_is_deterministic(cnn, train_images):
    kw = dict(epochs=2, batch_size=32, progress=False)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = training.train_decoder(cnn, "features.10", train_images[:64], **kw)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global random stream is left alone
    torch.manual_seed(456)  # and does not matter
    b = training.train_decoder(cnn, "features.10", train_images[:64], **kw)
    c = training.train_decoder(cnn, "features.10", train_images[:64], seed=1, **kw)
    assert a.history == b.history and len(a.history) == 2
    assert_same_weights(a, b)
    assert a.history != c.history
    assert not a.training and a.layer == "features.10"
    with pytest.raises(ValueError, match="layer"):
        training.train_decoder(cnn, "conv", train_images, progress=False)


def test_attack_training_is_deterministic(cnn, train_images):
    kw = dict(truncation=2, epochs=1, batch_size=32, progress=False)
    torch.manual_seed(1)
    a = training.train_attack(cnn, train_images[:64], **kw)
    torch.manual_seed(2)
    b = training.train_attack(cnn, train_images[:64], **kw)
    c = training.train_attack(cnn, train_images[:64], seed=1, **kw)
    assert a.history == b.history and a.history != c.history
    assert_same_weights(a, b)


def test_decoder_recipes_ship_and_load(cnn, monkeypatch, data_folder, capsys):
    """Shipping path without touching data/: ship a tiny recipe to a temporary folder, load it back."""
    assert set(inversion.DECODERS) >= {"decoder_shapes_cnn_features.10", "decoder_shapes_cnn_features.10_transposed"}
    monkeypatch.setitem(inversion.DECODERS, "tiny", inversion.DecoderRecipe(layer="features.10", n_train=32, epochs=1))
    with pytest.raises(ValueError, match="name: expected one of the shipped files"):
        inversion.load("tiny")  # not shipped yet
    threads = torch.get_num_threads()
    main(["train-inversion", "tiny"])
    assert torch.get_num_threads() == threads  # the recipe's thread count is restored
    entry = data.manifest()["tiny.pt"]
    assert entry["command"] == "python -m xai_course train-inversion tiny --seed 0"
    assert entry["sha256"] in capsys.readouterr().out and set(data.verify()) == {"shapes_cnn.pt", "tiny.pt"}
    decoder = training.train("tiny", progress=False)  # the recipe reproduces the shipped bits
    assert decoder.layer == "features.10" and decoder.scale.item() != 1.0
    loaded = inversion.load("tiny")
    assert_same_weights(loaded, decoder)
    x = data.canonical(2).images
    assert torch.equal(inversion.decode(cnn, loaded, x).images, inversion.decode(cnn, decoder, x).images)


def test_attack_recipes_ship_and_load(cnn, monkeypatch, data_folder):
    assert sorted(inversion.ATTACKS) == [f"attack_shapes_cnn_top{k}" for k in range(1, 5)]
    recipe = inversion.AttackRecipe(truncation=2, n_train=64, epochs=1)
    monkeypatch.setitem(inversion.ATTACKS, "tiny_attack", recipe)
    entry = training.ship("tiny_attack")
    assert entry["command"] == "python -m xai_course train-inversion tiny_attack --seed 0"
    loaded, trained = inversion.load("tiny_attack"), training.train("tiny_attack", progress=False)
    assert isinstance(loaded, inversion.Attack) and loaded.truncation == 2 and not loaded.training
    assert_same_weights(loaded, trained)
    auxiliary = training.recipe_data("tiny_attack")
    assert torch.equal(auxiliary.images, data.shapes(64, "train", seed=recipe.data_seed).images)
    victims = data.shapes(8, "test", seed=3).images
    rows = inversion.attack_table(cnn, auxiliary, victims, [loaded])
    expected = inversion.invert_predictions(cnn, trained, victims).pixel_error.pow(2).mean().item()
    assert [row["k"] for row in rows] == [2] and rows[0]["attack_mse"] == pytest.approx(expected)
