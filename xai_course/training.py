"""Training and shipping: every network the course trains, and how its shipped weights are rebuilt bit for bit.

Trained are the course models (``models.RECIPES``: cross-entropy on new data every epoch, ``DATASETS``) and
chapter 04's decoders (``inversion.DECODERS``, ``train_decoder``) and prediction-vector attacks
(``inversion.ATTACKS``, ``train_attack``; pixel MSE on fixed images, ``recipe_data``), all by ``fit``, the one
training loop (Adam, one-cycle schedule). A seed fixes the initial weights (``torch.manual_seed`` inside
``torch.random.fork_rng``: the caller's global random stream is left as it was), the order of the samples and
any random occlusion (generators of their own); the data come from ``data``'s seeded generators; training runs
with ``torch.use_deterministic_algorithms``. The same seed gives the same bits on the same CPU, PyTorch build
and thread count (decoders and attacks set their recipe's).

``ship(name)`` saves the ``state_dict`` of ``train(name)`` as ``data/<name>.pt`` and records its SHA-256, size
and rebuilding command in ``data/manifest.json`` (``data.ship``): ``python -m xai_course train NAME`` (course
models) or ``train-inversion NAME`` (decoders, attacks). ``models.load`` and ``inversion.load`` check size and
hash before reading the weights (``torch.load(..., weights_only=True)``). Introduced in chapter 00.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import data, inversion, models
from .core import batch_slices, check_model, check_number, check_positive_int, check_seed, describe, model_guard
from .layers import output, submodule


def _shapes(recipe: models.Recipe, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    batch = data.shapes(recipe.n_train, "train", seed=seed, clever_hans=recipe.clever_hans)
    return batch.images, batch.labels


def _timeseries(recipe: models.Recipe, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    batch = data.timeseries(recipe.n_train, "train", seed=seed)
    return batch.series, batch.labels


def _loans(recipe: models.Recipe, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    batch = data.loans(recipe.n_train, "train", seed=seed)
    return batch.features, batch.labels


# name -> (recipe, seed) -> the inputs and labels of one epoch
DATASETS = {"shapes": _shapes, "timeseries": _timeseries, "loans": _loans}


@contextlib.contextmanager
def _deterministic():
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def fit(
    build: Callable[[], nn.Module],
    samples,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    loss: Callable = F.mse_loss,
    augment: Callable | None = None,
    drop_last: bool = False,
    progress: bool = True,
    desc: str = "fit",
) -> tuple[nn.Module, list[float]]:
    """The network ``build()``, its initial weights drawn from ``seed``, trained with Adam on ``loss(net(inputs),
    targets)``; returns it in eval mode and the mean loss of each epoch.

    ``samples`` is a pair (inputs, targets), or a function epoch -> (inputs, targets) that gives as many new
    samples every epoch. Each epoch visits them in a new random order (a generator seeded with ``seed``) in
    batches of ``batch_size``, without the last, smaller one if ``drop_last``; ``augment`` maps each batch of
    inputs (random occlusion). The step size follows a one-cycle schedule peaking at ``lr``. Runs with
    deterministic algorithms; the global random stream is left as it was. Chapter 00.
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        check_positive_int(name, value)
    check_number("lr", lr, 0.0, strict=True)
    seed = check_seed(seed)
    epoch_samples = samples if callable(samples) else lambda epoch: samples
    history = []
    with torch.random.fork_rng(devices=[]), _deterministic(), torch.enable_grad():
        torch.manual_seed(seed)
        net = build().train()
        optimizer = torch.optim.Adam(net.parameters(), lr=lr)
        g = torch.Generator().manual_seed(seed)
        inputs, targets = epoch_samples(0)
        n = len(inputs)
        batches = n // batch_size if drop_last else math.ceil(n / batch_size)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=epochs * batches)
        with tqdm(total=epochs * batches, desc=desc, disable=not progress) as bar:
            for epoch in range(epochs):
                if epoch:
                    inputs, targets = epoch_samples(epoch)
                order, total = torch.randperm(n, generator=g), 0.0
                for i in range(batches):
                    idx = order[i * batch_size : (i + 1) * batch_size]
                    x = inputs[idx] if augment is None else augment(inputs[idx])
                    value = loss(net(x), targets[idx])
                    optimizer.zero_grad()
                    value.backward()
                    optimizer.step()
                    schedule.step()
                    total += value.item() * len(idx)
                    bar.update()
                    bar.set_postfix(loss=f"{value.item():.4f}")
                history.append(total / min(n, batches * batch_size))
    return net.eval(), history


def train_decoder(
    model,
    layer: str,
    data,
    *,
    epochs: int = 10,
    upsampling: str = "resize_conv",
    kernel_size: int = 3,
    width: int = 32,
    batch_size: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
    progress: bool = True,
) -> inversion.Decoder:
    """Train a decoder from the features at ``layer`` to the image (Dosovitskiy & Brox 2016).

    Minimizes the pixel MSE ||x - f(phi(x), w)||^2 over the images of ``data`` (a tensor (N, C, H, W) in
    [0, 1] or a ``data.Shapes`` batch) with ``fit`` (Adam, one-cycle schedule peaking at ``lr``), the encoder
    phi fixed; phi is computed once for all images. Deterministic for a ``seed`` (its own random streams; the
    global one is left as it was). See ``inversion.Decoder`` for ``upsampling``, ``kernel_size`` and ``width``;
    ``inversion.decode`` applies it. Returns the decoder in eval mode. Chapter 04.
    """
    check_model(model)
    submodule(model, layer)
    images = inversion.images_of(data, model, "data")
    with model_guard(model), torch.no_grad():
        phi = torch.cat([output(model, images[s], layer) for s in batch_slices(len(images), 256)])

    def build() -> inversion.Decoder:
        decoder = inversion.Decoder(
            phi.shape[1:], images.shape[1:], upsampling=upsampling, kernel_size=kernel_size, width=width
        ).to(images)
        decoder.layer = layer
        decoder.scale.fill_(1 / phi.std().clamp(min=1e-12).item())
        return decoder

    decoder, decoder.history = fit(
        build, (phi, images), epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, progress=progress,
        desc=f"decoder {layer}",
    )  # fmt: skip
    return decoder


def train_attack(
    model,
    auxiliary,
    *,
    truncation: int | None = None,
    epochs: int = 10,
    width: int = 8,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    progress: bool = True,
) -> inversion.Attack:
    """Train the inversion attack of Yang et al. 2019 on the attacker's ``auxiliary`` images.

    The target ``model`` releases softmax vectors F(x) (top-``truncation`` only, if given); the network G is
    trained to minimize the pixel MSE ||G(F(x)) - x||^2 on the auxiliary images (a tensor (N, C, H, W) in
    [0, 1] or a ``data.Shapes`` batch) with ``fit`` (Adam, one-cycle schedule peaking at ``lr``). Deterministic
    for a ``seed``. Apply it with ``inversion.invert_predictions``. Returns G in eval mode. Chapter 04.
    """
    check_model(model)
    images = inversion.images_of(auxiliary, model, "auxiliary")
    check_positive_int("width", width)
    probabilities = inversion.prediction_vectors(model, images)
    inversion.align(probabilities[:1], truncation)  # checks truncation

    def build() -> inversion.Attack:
        return inversion.Attack(probabilities.shape[1], images.shape[1:], truncation=truncation, width=width).to(images)

    attack, attack.history = fit(
        build, (probabilities, images), epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, progress=progress,
        desc=f"attack top-{truncation or probabilities.shape[1]}",
    )  # fmt: skip
    return attack


def _recipe(name, course_models: bool = True) -> models.Recipe | inversion.DecoderRecipe | inversion.AttackRecipe:
    recipes = {**(models.RECIPES if course_models else {}), **inversion.DECODERS, **inversion.ATTACKS}
    if not isinstance(name, str) or name not in recipes:
        raise ValueError(f"name: expected one of the shipped networks {sorted(recipes)}, got {describe(name)}")
    return recipes[name]


def recipe_data(name: str) -> data.Shapes:
    """The images the decoder or attack ``name`` trains on (the attacker's auxiliary images). Chapter 04."""
    recipe = _recipe(name, course_models=False)
    return data.shapes(recipe.n_train, "train", seed=recipe.data_seed)


def train(name: str, seed: int = 0, progress: bool = True) -> nn.Module:
    """Train the shipped network ``name`` from scratch, deterministically on CPU; returns it in eval mode.

    A course model (``models.RECIPES``) sees new data every epoch (``DATASETS``, seed 1000 ``seed`` + epoch), never
    the same input twice; with ``recipe.occlude > 0`` that share of each batch gets a random patch (``data.occlude``,
    gray or black squares of side 8 to 24); with ``recipe.fold`` it trains with BatchNorm, folded in at the end
    (``models.fold_batch_norm``). A decoder or attack (``inversion.DECODERS``, ``inversion.ATTACKS``) is
    ``train_decoder`` or ``train_attack`` on ``recipe_data(name)`` on ``recipe.threads`` torch threads (restored
    afterwards): the same bits on the same CPU and PyTorch build whatever the machine's thread count, equal up to
    float rounding on another CPU. Chapter 00.
    """
    recipe = _recipe(name)
    if isinstance(recipe, models.Recipe):
        if recipe.dataset not in DATASETS:
            raise ValueError(f"recipe {name!r}: dataset expected one of {sorted(DATASETS)}, got {recipe.dataset!r}")
        occluder = torch.Generator().manual_seed(seed)  # its own stream: the other recipes stay as they were
        augment = (lambda x: data.occlude(x, p=recipe.occlude, seed=occluder)[0]) if recipe.occlude else None
        model, _ = fit(
            lambda: recipe.build(batch_norm=True) if recipe.fold else recipe.build(),
            lambda epoch: DATASETS[recipe.dataset](recipe, 1000 * seed + epoch), loss=F.cross_entropy,
            epochs=recipe.epochs, batch_size=recipe.batch_size, lr=recipe.lr, seed=seed, augment=augment,
            drop_last=True, progress=progress, desc=f"train {name}",
        )  # fmt: skip
        return models.fold_batch_norm(model) if recipe.fold else model
    images, model = recipe_data(name).images, models.load(recipe.model)
    threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    try:
        if isinstance(recipe, inversion.AttackRecipe):
            return train_attack(
                model, images, truncation=recipe.truncation, epochs=recipe.epochs, width=recipe.width, seed=seed,
                progress=progress,
            )  # fmt: skip
        return train_decoder(
            model, recipe.layer, images, epochs=recipe.epochs, upsampling=recipe.upsampling, seed=seed,
            progress=progress,
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)


def ship(name: str, seed: int = 0) -> dict:
    """Train ``name`` (``train``), write its weights to ``data/<name>.pt`` and record them in the manifest with the
    command that rebuilds them (``data.ship``); returns the manifest entry. Chapter 00."""
    command = "train" if isinstance(_recipe(name), models.Recipe) else "train-inversion"
    network = train(name, seed=seed)
    return data.ship(f"{name}.pt", network.state_dict(), f"python -m xai_course {command} {name} --seed {seed}")
