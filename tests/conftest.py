"""Shared fixtures: small models and the canonical images."""

import matplotlib
import pytest
import torch
from torch import nn

matplotlib.use("Agg")


class TinyNet(nn.Module):
    """A small conv net with a functional call, an in-place ReLU reused twice and a hook-free head."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        x = self.relu(self.bn(self.conv(x)))
        return self.fc(self.relu(self.pool(x)).flatten(1))


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return TinyNet().eval()


def state_of(model: nn.Module) -> dict:
    """Everything about a model that an explanation must leave untouched."""
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
        "inplace": [getattr(m, "inplace", None) for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad for p in model.parameters()],
        "hooks": [
            len(getattr(m, name))
            for m in model.modules()
            for name in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
        ],
        "modules": [id(m) for m in model.modules()],
    }


def assert_unchanged(before: dict, model: nn.Module) -> None:
    after = state_of(model)
    assert before.keys() == after.keys()
    for key in before["state"]:
        assert torch.equal(before["state"][key], after["state"][key]), key
    for key in ("training", "inplace", "requires_grad", "hooks", "modules"):
        assert before[key] == after[key], key
    assert all(a is b for a, b in zip(before["grads"], after["grads"]))


class UnrolledBlock(nn.Module):
    """A ResNet BasicBlock with one ReLU module per use and an out-of-place residual sum: the same function, in the
    form Captum's DeepLIFT needs (tests/test_shap.py, tests/test_photos_224.py)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block, self.relu1, self.relu2 = block, nn.ReLU(), nn.ReLU()

    def forward(self, x):
        b = self.block
        shortcut = x if b.downsample is None else b.downsample(x)
        return self.relu2(b.bn2(b.conv2(self.relu1(b.bn1(b.conv1(x))))) + shortcut)
