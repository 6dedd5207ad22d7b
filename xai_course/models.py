"""The course models: small CNNs trained on the course data, shipped with hash-checked weights.

- ``shapes_cnn``: VGG-style (conv/ReLU/max-pool blocks, then linear layers).
- ``shapes_resnet``: the habits of torchvision ResNets (BatchNorm, residual
  additions written ``out += identity``, one ``ReLU(inplace=True)`` reused inside a block).
- ``shapes_cnn_clever_hans``: ``shapes_cnn`` trained on data where a corner tag
  accompanies one class, so it learns a shortcut.

``load(name)`` returns the shipped weights; ``train(name)`` reproduces them
deterministically on CPU. Introduced in chapter 00.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from . import data
from .core import predict


class ShapesCNN(nn.Module):
    """VGG-style classifier for 64x64 RGB images: three conv blocks, then two linear layers. Chapter 00."""

    def __init__(self, n_classes: int = len(data.CLASSES)):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 32x32
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 16x16
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 8x8
        )  # fmt: skip
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(nn.Linear(64 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.features(x)))


class BasicBlock(nn.Module):
    """A torchvision-style residual block: one ReLU module used twice, in-place residual sum. Chapter 00."""

    def __init__(self, channels_in: int, channels_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels_out)
        self.downsample = None
        if stride != 1 or channels_in != channels_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(channels_in, channels_out, 1, stride, bias=False), nn.BatchNorm2d(channels_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class ShapesResNet(nn.Module):
    """A small ResNet for 64x64 RGB images with the architecture habits of torchvision's. Chapter 00."""

    def __init__(self, n_classes: int = len(data.CLASSES)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(2)  # 32x32
        self.layer1 = BasicBlock(16, 16)
        self.layer2 = BasicBlock(16, 32, stride=2)  # 16x16
        self.layer3 = BasicBlock(32, 64, stride=2)  # 8x8
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@dataclass(frozen=True)
class Recipe:
    """How a course model is built and trained."""

    build: Callable[[], nn.Module]
    clever_hans: bool = False
    epochs: int = 4
    n_train: int = 10000
    lr: float = 2e-3
    batch_size: int = 64


RECIPES = {
    "shapes_cnn": Recipe(ShapesCNN),
    "shapes_resnet": Recipe(ShapesResNet),
    "shapes_cnn_clever_hans": Recipe(ShapesCNN, clever_hans=True),
}


def _check_name(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"name: expected one of the course models {sorted(RECIPES)}, got {name!r}")
    return RECIPES[name]


def load(name: str) -> nn.Module:
    """The course model ``name`` in eval mode, with its shipped weights (hash-checked). Chapter 00."""
    model = _check_name(name).build()
    state = torch.load(data.path(f"{name}.pt"), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


@contextlib.contextmanager
def _deterministic():
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def train(name: str, seed: int = 0, progress: bool = True) -> nn.Module:
    """Train the course model ``name`` from scratch, deterministically on CPU; returns it in eval mode.

    Each epoch sees freshly generated training images (a new seed per epoch), so
    the model never sees the same image twice. Chapter 00.
    """
    recipe = _check_name(name)
    with _deterministic():
        torch.manual_seed(seed)
        model = recipe.build()
        optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr)
        steps = recipe.epochs * (recipe.n_train // recipe.batch_size)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, recipe.lr, total_steps=steps)
        g = torch.Generator().manual_seed(seed)
        bar = tqdm(total=steps, desc=f"train {name}", disable=not progress)
        for epoch in range(recipe.epochs):
            batch = data.shapes(recipe.n_train, "train", seed=1000 * seed + epoch, clever_hans=recipe.clever_hans)
            order = torch.randperm(recipe.n_train, generator=g)
            model.train()
            for i in range(recipe.n_train // recipe.batch_size):
                idx = order[i * recipe.batch_size : (i + 1) * recipe.batch_size]
                loss = nn.functional.cross_entropy(model(batch.images[idx]), batch.labels[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                bar.update()
                bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()
    return model.eval()


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of ``images`` that ``model`` classifies as ``labels``. Chapter 00."""
    return (predict(model, images).argmax(1) == labels).float().mean().item()


def ship(name: str, seed: int = 0) -> dict:
    """Train ``name``, write its weights to ``data/`` and record them in the manifest. Chapter 00."""
    model = train(name, seed=seed)
    folder = data.data_dir()
    file = folder / f"{name}.pt"
    torch.save(model.state_dict(), file)
    entries = data.manifest()
    entries[file.name] = {
        "sha256": data.sha256(file),
        "size": file.stat().st_size,
        "command": f"python -m xai_course train {name} --seed {seed}",
    }
    (folder / "manifest.json").write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")
    return entries[file.name]
