"""The course models: small CNNs trained on the course data, shipped with hash-checked weights.

- ``shapes_cnn``: VGG-style (conv/ReLU/max-pool blocks, then linear layers).
- ``shapes_resnet``: the habits of torchvision ResNets (BatchNorm, residual
  additions written ``out += identity``, one ``ReLU(inplace=True)`` reused inside a block).
- ``shapes_cnn_clever_hans``: ``shapes_cnn`` trained on data where a corner tag
  accompanies one class, so it learns a shortcut.
- ``shapes_cnn_occlusion``: ``shapes_cnn`` trained with random occluding patches on
  half of the training images (``data.occlude``), for the robustness claim of chapter 03.
- ``timeseries_cnn``: a 1-D CNN for the course time series (``data.timeseries``), chapter 03.
- ``loan_mlp``: a small MLP, the black box of the loan table (``data.loans``), chapter 05.

``load(name)`` returns the shipped weights; ``training.train(name)`` reproduces them
deterministically on CPU. Introduced in chapter 00.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from . import data
from .core import describe, predict


class ShapesCNN(nn.Module):
    """VGG-style classifier for 64x64 RGB images: conv/ReLU/max-pool blocks, then two linear layers.

    With ``batch_norm=True`` every convolution is followed by a BatchNorm layer; the course trains that variant (it
    learns several times faster) and ships it with the BatchNorm folded into the convolutions (``fold_batch_norm``),
    so the shipped model is a plain conv/ReLU/max-pool network. Chapter 00.
    """

    def __init__(self, n_classes: int = len(data.CLASSES), batch_norm: bool = False):
        super().__init__()

        def conv(channels_in: int, channels_out: int) -> list[nn.Module]:
            norm = [nn.BatchNorm2d(channels_out)] if batch_norm else []
            return [nn.Conv2d(channels_in, channels_out, 3, padding=1), *norm, nn.ReLU()]

        self.features = nn.Sequential(
            *conv(3, 16), nn.MaxPool2d(2),  # 32x32
            *conv(16, 32), nn.MaxPool2d(2),  # 16x16
            *conv(32, 64), *conv(64, 64), nn.MaxPool2d(2),  # 8x8
        )  # fmt: skip
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(nn.Linear(64 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.features(x)))


def _check_merge(layer, bn) -> None:
    """TypeError/ValueError unless ``bn`` (with running statistics) normalizes the outputs of ``layer``."""
    if not isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
        raise TypeError(f"layer: expected an nn.Conv1d, Conv2d, Conv3d or Linear, got {describe(layer)}")
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
        raise TypeError(f"bn: expected an nn.BatchNorm1d, 2d or 3d, got {describe(bn)}")
    if bn.running_mean is None:
        raise ValueError("bn: expected running statistics to merge, got track_running_stats=False")
    if bn.num_features != layer.weight.shape[0]:
        raise ValueError(f"bn: expected {layer.weight.shape[0]} features (layer's outputs), got {bn.num_features}")


def merge_batch_norm(layer: nn.Conv2d | nn.Linear, bn: nn.BatchNorm2d | nn.BatchNorm1d) -> nn.Module:
    """A copy of ``layer`` that computes ``bn(layer(x))`` in eval mode.

    With s = gamma / sqrt(running_var + eps): W' = s W (per output channel) and
    b' = s (b - running_mean) + beta; gamma = 1 and beta = 0 for ``affine=False``. ``layer`` is a
    convolution (1-d, 2-d, 3-d) or a linear layer. Chapter 00.
    """
    _check_merge(layer, bn)
    merged = copy.deepcopy(layer)
    gamma = bn.weight.detach() if bn.weight is not None else torch.ones_like(bn.running_var)
    beta = bn.bias.detach() if bn.bias is not None else torch.zeros_like(bn.running_mean)
    scale = gamma / torch.sqrt(bn.running_var + bn.eps)
    bias = layer.bias.detach() if layer.bias is not None else torch.zeros_like(bn.running_mean)
    with torch.no_grad():
        merged.weight.copy_(layer.weight * scale.view(-1, *[1] * (layer.weight.ndim - 1)))
        merged.bias = nn.Parameter(scale * (bias - bn.running_mean) + beta)
    return merged


def fold_batch_norm(model: ShapesCNN) -> ShapesCNN:
    """The plain ``ShapesCNN`` equal (in eval mode) to a ``ShapesCNN(batch_norm=True)``. Chapter 00."""
    if not isinstance(model, ShapesCNN):
        raise TypeError(f"model: expected a ShapesCNN (for another model use merge_batch_norm), got {describe(model)}")
    layers = []
    for module in model.features:
        if isinstance(module, nn.BatchNorm2d):
            layers[-1] = merge_batch_norm(layers[-1], module)
        else:
            layers.append(module)
    plain = ShapesCNN(model.classifier[-1].out_features)
    plain.features = nn.Sequential(*layers)
    plain.classifier = copy.deepcopy(model.classifier)
    return plain.eval()


class TimeSeriesCNN(nn.Module):
    """1-D classifier for the course time series (N, 1, 128): conv/ReLU/max-pool blocks, global average pooling.

    The global average over time makes the prediction independent of where the pattern sits. Chapter 03.
    """

    def __init__(self, n_classes: int = len(data.SERIES_CLASSES)):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, 16, 7, padding=3), nn.ReLU(), nn.MaxPool1d(2),  # 64
            nn.Conv1d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),  # 32
            nn.Conv1d(32, 64, 5, padding=2), nn.ReLU(),
            nn.Conv1d(64, 64, 5, padding=2), nn.ReLU(),  # 32
        )  # fmt: skip
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(64, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))


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


class LoanMLP(nn.Module):
    """A small black box for the loan table (``data.loans``): standardization, two hidden ReLU layers.

    It takes raw feature rows (N, F), categorical codes included, and standardizes them itself with the buffers ``mean``
    and ``std`` (by default those of 4096 training rows), so explainers can feed it the table as it is. Chapter 05.
    """

    def __init__(self, n_classes: int = len(data.LOAN_CLASSES), hidden: int = 64):
        super().__init__()
        rows = data.loans(4096, "train", seed=0).features
        self.register_buffer("mean", rows.mean(0))
        self.register_buffer("std", rows.std(0))
        self.net = nn.Sequential(
            nn.Linear(rows.shape[1], hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, n_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


@dataclass(frozen=True)
class Recipe:
    """How a course model is built (``load``) and trained (``training.train``). Chapter 00."""

    build: Callable[..., nn.Module]  # the shipped architecture
    fold: bool = False  # train build(batch_norm=True), ship it with the BatchNorm folded in
    clever_hans: bool = False
    dataset: str = "shapes"  # a key of training.DATASETS: the training data
    occlude: float = 0.0  # share of the training inputs that get a random occluding patch (data.occlude)
    epochs: int = 6
    n_train: int = 10000
    lr: float = 3e-3
    batch_size: int = 64


RECIPES = {
    "shapes_cnn": Recipe(ShapesCNN, fold=True),
    "shapes_resnet": Recipe(ShapesResNet),
    "shapes_cnn_clever_hans": Recipe(ShapesCNN, fold=True, clever_hans=True),
    "shapes_cnn_occlusion": Recipe(ShapesCNN, fold=True, occlude=0.5),
    "timeseries_cnn": Recipe(TimeSeriesCNN, dataset="timeseries", epochs=10),
    "loan_mlp": Recipe(LoanMLP, dataset="loans", epochs=40, n_train=20000, batch_size=128),
}


def load(name: str) -> nn.Module:
    """The course model ``name`` in eval mode, with its shipped weights (hash-checked). Chapter 00."""
    if not isinstance(name, str) or name not in RECIPES:
        raise ValueError(f"name: expected one of the course models {sorted(RECIPES)}, got {name!r}")
    model = RECIPES[name].build()
    model.load_state_dict(torch.load(data.path(f"{name}.pt"), map_location="cpu", weights_only=True))
    return model.eval()


def _predicted(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The predicted classes (N,), after checking that ``labels`` holds one class index per image."""
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor) or labels.is_floating_point():
        raise TypeError(f"images, labels: expected tensors, labels of ints, got {describe(images)}, {describe(labels)}")
    if labels.shape != images.shape[:1] or (labels < 0).any():
        raise ValueError(f"labels: expected class indices >= 0 of shape ({len(images)},), got {describe(labels)}")
    return predict(model, images).argmax(1)


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of ``images`` that ``model`` classifies as ``labels``. Chapter 00."""
    return (_predicted(model, images, labels) == labels).float().mean().item()


def confusion_matrix(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Counts ``C[true, predicted]`` of ``model`` on ``images``, a (K, K) int64 tensor. Chapter 00."""
    predicted = _predicted(model, images, labels)
    k = int(max(labels.max(), predicted.max())) + 1
    return torch.bincount(labels * k + predicted, minlength=k * k).view(k, k)
