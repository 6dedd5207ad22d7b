"""lrp on residual networks: one torchvision BasicBlock written out as explicit matrices (BatchNorm folded by hand,
LRP-epsilon layer by layer, the residual sum split in proportion to its inputs), and Zennit on torchvision's vgg16,
resnet18 and resnet50 with random weights.

The finding these tests pin: Zennit's ResNetCanonizer folds each BatchNorm into the conv before it, then leaves the
BatchNorm computing x / sqrt(1 + eps_bn) instead of x (running variance reset to 1, eps kept). So Zennit explains a
network in which every BatchNorm output is multiplied once more by (1 + eps_bn)^(-1/2) = 1 - 5e-6, and LRP-epsilon,
whose map jumps where a pre-activation lies within about epsilon of zero, turns that into map differences of 1e-3
and more on a random resnet18. Everything else (the Sum, the reused in-place ReLU, average pooling, the linear head,
where epsilon applies) the two libraries treat alike, and like the explicit matrices.
"""

import copy
import math
from collections import OrderedDict

import pytest
import torch
import torchvision
from test_lrp import relative_error, with_batchnorm_statistics, zennit_composite, zennit_relevance
from torch import nn
from torch.nn import functional as F
from torchvision.models.resnet import BasicBlock
from zennit import attribution as zattribution
from zennit import composites as zcomposites
from zennit import rules as zrules
from zennit import torchvision as ztorchvision

from xai_course import lrp

DOUBLE = torch.float64


def stab(z: torch.Tensor, eps: float) -> torch.Tensor:
    return z + eps * torch.where(z >= 0, 1.0, -1.0).to(z)


def conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d, shape: tuple):
    """bn(conv(a)) in eval mode as z = a @ W + b on the flattened input of ``shape``, folded by hand.
    Returns W (inputs, outputs), b (outputs,) and the output shape."""
    basis = torch.eye(math.prod(shape), dtype=DOUBLE).view(-1, *shape)
    out = F.conv2d(basis, conv.weight, None, conv.stride, conv.padding)  # row j: the outputs of input j alone
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - scale * bn.running_mean
    weight = (out * scale.view(1, -1, 1, 1)).flatten(1)
    bias = shift.view(-1, 1, 1).expand(out.shape[1:]).flatten()
    return weight, bias, tuple(out.shape[1:])


def epsilon_step(a, weight, bias, relevance, eps):
    """R_j = sum_k a_j w_jk / (z_k + eps sign z_k) R_k, with z = a @ W + b."""
    return a * (weight @ (relevance / stab(a @ weight + bias, eps)))


@torch.no_grad()
def reference(model: nn.Module, x: torch.Tensor, target: int, eps: float, factor: float = 1.0) -> dict:
    """LRP-epsilon of fc(avgpool(block(x))) for one image x (C, H, W), every step an explicit matrix product.

    Epsilon in the conv and linear layers; the Sum and the average pooling split relevance in proportion to their
    inputs with the stabilizer 1e-6 (lrp's and Zennit's Norm); the ReLUs pass relevance on. ``factor`` multiplies
    every BatchNorm's output, as a layer of its own that passes relevance on (what Zennit's canonizer leaves).
    Returns the relevance of the pixels and at the inputs of conv2 and fc."""
    block, fc = model.block, model.fc
    a = x.flatten()
    w1, b1, shape1 = conv_bn(block.conv1, block.bn1, tuple(x.shape))
    z1 = factor * (a @ w1 + b1)
    h = z1.clamp(min=0)
    w2, b2, (c, height, width) = conv_bn(block.conv2, block.bn2, shape1)
    z2 = factor * (h @ w2 + b2)
    if block.downsample is None:
        d = a
    else:
        wd, bd, _ = conv_bn(block.downsample[0], block.downsample[1], tuple(x.shape))
        d = factor * (a @ wd + bd)
    s = z2 + d
    y = s.clamp(min=0)
    pool = torch.eye(c, dtype=DOUBLE).repeat_interleave(height * width, 0) / (height * width)  # (C H W, C)
    p = y @ pool
    logits = p @ fc.weight.T + fc.bias
    r_logits = F.one_hot(torch.tensor(target), len(logits)).to(logits) * logits
    r_p = epsilon_step(p, fc.weight.T, fc.bias, r_logits, eps)  # fc
    r_s = epsilon_step(y, pool, 0.0, r_p, 1e-6)  # average pooling; the final ReLU passes it on
    r_z2, r_d = z2 * r_s / stab(s, 1e-6), d * r_s / stab(s, 1e-6)  # the Sum
    r_h = epsilon_step(h, w2, b2, r_z2, eps)  # conv2 + bn2; the ReLU after conv1 passes it on
    r_x = epsilon_step(a, w1, b1, r_h, eps)  # conv1 + bn1
    r_x = r_x + (r_d if block.downsample is None else epsilon_step(a, wd, bd, r_d, eps))  # the shortcut
    return {"pixels": r_x.view(x.shape), "block.conv2": r_h.view(shape1), "fc": r_p}


def small_resnet(downsample: bool, seed: int = 0) -> nn.Module:
    """One BasicBlock (4 -> 4 channels, or 4 -> 6 at stride 2 with a 1x1 conv + BatchNorm shortcut), average pooling
    and a linear layer to 3 classes, BatchNorm with non-trivial statistics, in float64."""
    torch.manual_seed(seed)
    planes, stride = (6, 2) if downsample else (4, 1)
    shortcut = nn.Sequential(nn.Conv2d(4, 6, 1, 2, bias=False), nn.BatchNorm2d(6)) if downsample else None
    layers = OrderedDict(block=BasicBlock(4, planes, stride, shortcut), pool=nn.AdaptiveAvgPool2d(1))
    model = nn.Sequential(layers | {"flatten": nn.Flatten(), "fc": nn.Linear(planes, 3)})
    return with_batchnorm_statistics(model, seed).to(DOUBLE)


def epsilon_composites(eps: float):
    """lrp's and Zennit's composite with epsilon in the conv and linear layers (Zennit's layer map with its Sum)."""
    ours = lrp.Composite(conv=lrp.Epsilon(eps), linear=lrp.Epsilon(eps))
    layer_map = [(nn.Conv2d, zrules.Epsilon(eps)), (nn.Linear, zrules.Epsilon(eps))] + zcomposites.layer_map_base()
    return ours, zcomposites.LayerMapComposite(layer_map, canonizers=[ztorchvision.ResNetCanonizer()])


def zennit_map(model, x, target, composite) -> torch.Tensor:
    with zattribution.Gradient(model, composite) as attributor:
        _, relevance = attributor(x, lambda out: out * F.one_hot(target, out.shape[1]).to(out))
    return relevance


def as_zennit_canonizes(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in which every BatchNorm's output is divided once more by sqrt(1 + eps): the network that
    Zennit explains after its ResNetCanonizer."""
    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data /= math.sqrt(1 + m.eps)
            m.bias.data /= math.sqrt(1 + m.eps)
    return model


@pytest.fixture
def image() -> torch.Tensor:
    return torch.randn(1, 4, 6, 6, generator=torch.Generator().manual_seed(1), dtype=DOUBLE)


# ----------------------------------------------------------------------------- one block, explicit matrices


@pytest.mark.parametrize("eps", [1e-6, 0.1])
@pytest.mark.parametrize("downsample", [False, True], ids=["identity", "downsample"])
def test_one_block_equals_the_explicit_reference_part_by_part(downsample, eps, image):
    """Pixels, the input of conv2 (after conv1, bn1, ReLU) and of fc (after the Sum, the ReLU and the pooling)."""
    model = small_resnet(downsample)
    ours, _ = epsilon_composites(eps)
    for target in range(3):
        expected = reference(model, image[0], target, eps)
        got, layers = lrp.explain(lrp.canonize(model, image), image, target, composite=ours, return_layers=True)
        assert relative_error(got[0], expected["pixels"]) < 1e-12
        for part in ("block.conv2", "fc"):
            assert relative_error(layers[part][0], expected[part]) < 1e-12, part
    # the test can fail: a large epsilon changes the map, and the reference with it
    large, small = (reference(model, image[0], 0, e)["pixels"] for e in (0.1, 1e-6))
    assert relative_error(large, small) > 1e-3


@pytest.mark.parametrize("downsample", [False, True], ids=["identity", "downsample"])
def test_zennit_explains_the_block_with_batchnorm_kept_as_a_factor(downsample, image):
    """Zennit equals the reference of the block whose BatchNorm outputs are multiplied by 1 / sqrt(1 + eps_bn), not
    the block's own reference; with eps_bn = 0 the factor is 1 and Zennit equals the block's own reference."""
    model = small_resnet(downsample)
    ours, zennit = epsilon_composites(1e-6)
    target = torch.tensor([1])
    factor = (1 + model.block.bn1.eps) ** -0.5
    got = zennit_map(model, image, target, zennit)[0]
    assert relative_error(got, reference(model, image[0], 1, 1e-6, factor)["pixels"]) < 1e-12
    assert relative_error(got, reference(model, image[0], 1, 1e-6)["pixels"]) > 1e-7
    with zennit.context(model):  # inside Zennit's canonizer: the merged BatchNorm is not the identity
        t = torch.randn(2, model.block.bn1.num_features, 6, 6, dtype=DOUBLE)
        torch.testing.assert_close(model.block.bn1(t), t * factor, rtol=1e-14, atol=0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 0.0
    expected = reference(model, image[0], 1, 1e-6)["pixels"]
    assert relative_error(zennit_map(model, image, target, zennit)[0], expected) < 1e-12
    assert relative_error(lrp.explain(lrp.canonize(model), image, target, composite=ours)[0], expected) < 1e-12


# ----------------------------------------------------------------------------- torchvision networks against Zennit


@pytest.fixture(scope="module")
def vgg16() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.vgg16(weights=None).eval()


@pytest.mark.parametrize("preset", lrp.PRESETS)
def test_vgg16_agrees_with_zennit(preset, vgg16):
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([3, 500])
    expected = zennit_relevance(vgg16, x, preset, target)
    assert relative_error(lrp.explain(vgg16, x, target, composite=preset), expected) < 1e-5


@pytest.mark.parametrize(
    "name, preset", [("resnet18", "epsilon"), ("resnet18", "epsilon_gamma_box"), ("resnet50", "epsilon")]
)
def test_resnets_agree_with_zennit_on_the_network_zennit_explains(name, preset):
    """torchvision's network with random weights (seed 0), in float64 and at 64 x 64 pixels to keep it fast. The
    rest, up to 3e-8, is where epsilon applies: Zennit adds it before the factor, lrp after."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval().to(DOUBLE)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0), dtype=DOUBLE)
    target = model(x).argmax(1)
    canonizer = [ztorchvision.ResNetCanonizer()]
    expected = zennit_relevance(model, x, preset, target, canonizer)
    got = lrp.explain(lrp.canonize(as_zennit_canonizes(model), x), x, target, composite=preset)
    assert relative_error(got, expected) < 1e-7
    exact = lrp.explain(lrp.canonize(model, x), x, target, composite=preset)  # the model itself: the factor matters
    assert relative_error(exact, expected) > 100 * relative_error(got, expected)
    with zattribution.Gradient(model, zennit_composite(preset, x, canonizer)) as attributor:
        zennit_logits, _ = attributor(x, torch.ones_like)
    with torch.no_grad():  # what Zennit's canonized network computes: the logits of the network with the factors
        torch.testing.assert_close(zennit_logits, as_zennit_canonizes(model)(x), rtol=1e-12, atol=1e-12)
        assert (zennit_logits - model(x)).abs().max() > 1e-6 * model(x).abs().max()


def test_resnet18_agrees_with_zennit_where_the_factor_is_one():
    """BatchNorm eps = 0: Zennit's leftover BatchNorm is the identity, and lrp.canonize(net) itself agrees."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval().to(DOUBLE)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 0.0
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0), dtype=DOUBLE)
    target = model(x).argmax(1)
    expected = zennit_relevance(model, x, "epsilon", target, [ztorchvision.ResNetCanonizer()])
    assert relative_error(lrp.explain(lrp.canonize(model, x), x, target, composite="epsilon"), expected) < 1e-9
