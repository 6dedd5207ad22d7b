"""deep_taylor: the Taylor expansion of one neuron against the rules' closed forms, an explicit neuron-by-neuron
decomposition against ``explain``, conservation on the course models, agreement with LRP and Zennit where the
definitions coincide, an explicit dense reference for the residual network, input invariance, the contract."""

import math

import pytest
import torch
from conftest import assert_unchanged, state_of
from torch import nn
from torch.nn import functional as F
from zennit import attribution as zattribution
from zennit import composites as zcomposites
from zennit import rules as zrules
from zennit import types as ztypes

from xai_course import data, deep_taylor, gradient, lrp, models

DOUBLE = torch.float64


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max |got - expected| / max |expected|."""
    return ((got - expected).abs().max() / expected.abs().max()).item()


def course(name: str) -> nn.Module:
    model = models.load(name)
    return lrp.canonize(model) if name == "shapes_resnet" else model


def logit(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).gather(1, target[:, None])[:, 0]


# ----------------------------------------------------------------------------- one neuron


def rule_form(x, w, b, rule, low=0.0, high=1.0) -> torch.Tensor:
    """The rules' closed forms for one neuron: R_i = v_i w_i / sum_i' v_i' w_i' max(0, x . w + b)."""
    v = {"zplus": x * (w > 0), "zb": x - torch.where(w > 0, low, high), "w2": w}[rule]
    value = F.relu(x @ w + b)
    return v * w / (v @ w) * value if value > 0 else torch.zeros_like(x)


@pytest.mark.parametrize("rule", deep_taylor.DIRECTIONS)
def test_taylor_expansion_of_one_neuron_is_the_rule(rule):
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        x, w = torch.rand(7, generator=g, dtype=DOUBLE), torch.randn(7, generator=g, dtype=DOUBLE)
        b = -0.3 * torch.rand((), generator=g, dtype=DOUBLE)  # b <= 0, as DTD assumes
        expansion = deep_taylor.taylor_neuron(x, w, b, rule=rule)
        value = F.relu(x @ w + b).item()
        assert expansion.value == pytest.approx(value, abs=1e-15)
        torch.testing.assert_close(expansion.relevance, rule_form(x, w, b, rule), rtol=0, atol=1e-12)
        assert expansion.relevance.sum().item() == pytest.approx(value, abs=1e-12)
        assert (expansion.root @ w + b).item() == pytest.approx(0.0, abs=1e-12) or value == 0
        assert expansion.in_domain
        torch.testing.assert_close(deep_taylor.root_point(x, w, b, rule=rule), expansion.root)
        if value > 0:
            torch.testing.assert_close(expansion.gradient, w)  # the one-sided gradient of an active neuron


@pytest.mark.parametrize("rule", [deep_taylor.ZPlusNoBias(), lrp.ZBox(0.0, 1.0), lrp.WSquare()], ids=str)
def test_the_engines_rule_for_one_neuron_is_its_taylor_expansion(rule):
    """lrp.relevance_step on a one-output linear layer against taylor_neuron (the engine's stabilizer is 1e-6)."""
    g = torch.Generator().manual_seed(1)
    name = {deep_taylor.ZPlusNoBias: "zplus", lrp.ZBox: "zb", lrp.WSquare: "w2"}[type(rule)]
    layer = nn.Linear(9, 1).to(DOUBLE)
    layer.weight.data = 3 * torch.randn(1, 9, generator=g, dtype=DOUBLE)
    layer.bias.data.fill_(-0.5)
    x = torch.rand(1, 9, generator=g, dtype=DOUBLE)
    layer.weight.data *= torch.sign(layer(x)).detach()  # an active neuron
    relevance = F.relu(layer(x)).detach()
    assert relevance.item() > 0
    expansion = deep_taylor.taylor_neuron(x[0], layer.weight[0], layer.bias[0], rule=name)
    torch.testing.assert_close(lrp.relevance_step(rule, layer, x, relevance)[0], expansion.relevance, rtol=1e-6, atol=0)


def test_root_points_leave_the_domain_when_a_positive_bias_keeps_the_neuron_active():
    x, w = torch.tensor([0.5, 1.0, 0.2], dtype=DOUBLE), torch.tensor([1.0, -1.0, 2.0], dtype=DOUBLE)
    assert deep_taylor.taylor_neuron(x, w, -0.1).in_domain
    outside = deep_taylor.taylor_neuron(x, w, 2.0)  # z = 1.9 > 0.9, the sum of the positive contributions
    assert not outside.in_domain and outside.t > 1 and (outside.root < 0).any()
    assert outside.relevance.sum().item() == pytest.approx(1.9, abs=1e-12)  # still an exact expansion
    assert not deep_taylor.taylor_neuron(x, -w.abs(), 5.0, rule="zb").in_domain  # active everywhere in [0, 1]^3
    with pytest.raises(ValueError, match="no root point"):
        deep_taylor.root_point(torch.ones(3, dtype=DOUBLE), -w.abs(), 5.0, rule="zb")  # at the box's lowest corner
    inactive = deep_taylor.taylor_neuron(x, w, -5.0)
    assert inactive.value == 0 and inactive.t == 0 and torch.equal(inactive.relevance, torch.zeros_like(x))


def test_one_neuron_inputs_are_checked():
    x, w = torch.rand(4), torch.randn(4)
    with pytest.raises(TypeError, match="x: expected a non-empty 1-D float tensor"):
        deep_taylor.taylor_neuron(x[None], w)
    with pytest.raises(ValueError, match="w: expected a tensor of the shape of x"):
        deep_taylor.taylor_neuron(x, w[:3])
    with pytest.raises(TypeError, match="b: expected a number"):
        deep_taylor.root_point(x, w, "0")
    with pytest.raises(ValueError, match="rule: expected one of"):
        deep_taylor.taylor_neuron(x, w, rule="z+")
    with pytest.raises(ValueError, match="x: expected values within"):
        deep_taylor.taylor_neuron(x + 1.5, w, rule="zb")


def test_bounds_given_as_numbers_are_not_rounded_to_float32():
    """In a float64 run, zB's bounds 0.1 and 0.9 (not float32 numbers) as Python floats give what float64 tensors
    give: in the search direction of one neuron and in the engine's constant inputs "low" and "high" (before the
    fix, both rounded them to float32: errors of 1e-8)."""
    low, high = (torch.tensor(v, dtype=DOUBLE) for v in (0.1, 0.9))
    x, w = torch.tensor([0.5, 0.3, 0.7], dtype=DOUBLE), torch.tensor([1.0, -2.0, 0.5], dtype=DOUBLE)
    expected = x - torch.where(w > 0, low, high)
    assert relative_error(deep_taylor.search_direction(x, w, "zb", 0.1, 0.9), expected) < 1e-15
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3)).to(DOUBLE)
    images = 0.1 + 0.8 * torch.rand(2, 3, 8, 8, dtype=DOUBLE)
    numbers = deep_taylor.explain(model, images, 0, low=0.1, high=0.9)
    assert relative_error(numbers, deep_taylor.explain(model, images, 0, low=low, high=high)) < 1e-13


# ----------------------------------------------------------------------------- a whole network, neuron by neuron


def explicit_decomposition(model: nn.Sequential, x: torch.Tensor, target: int, input_rule: str) -> torch.Tensor:
    """DTD of an MLP, one taylor_neuron call per neuron: R_j = c_j max(0, z_j) with c_j = R_j / a_j held constant."""
    linears = [m for m in model if isinstance(m, nn.Linear)]
    activations = [x]
    for layer in linears[:-1]:
        activations.append(F.relu(layer(activations[-1])).detach())
    top = linears[-1]
    relevance = deep_taylor.taylor_neuron(activations[-1], top.weight[target], top.bias[target]).relevance
    for depth in reversed(range(len(linears) - 1)):
        layer, a = linears[depth], activations[depth]
        rule = input_rule if depth == 0 else "zplus"
        below = torch.zeros_like(a)
        for j in range(layer.out_features):
            if relevance[j] > 0:
                c = relevance[j] / activations[depth + 1][j]
                below += c * deep_taylor.taylor_neuron(a, layer.weight[j], layer.bias[j], rule=rule).relevance
        relevance = below
    return relevance


@pytest.mark.parametrize("input_rule", deep_taylor.INPUT_RULES)
def test_the_explicit_taylor_decomposition_of_a_relu_network_equals_explain(input_rule):
    """Weights scaled so that the engine's stabilizer (1e-6 in every denominator) stays below 1e-7 relative."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).to(DOUBLE).eval()
    for layer in model[::2]:
        layer.weight.data.normal_(0, 4)
        layer.bias.data = -layer.bias.data.abs()  # b <= 0
    x = torch.rand(8, dtype=DOUBLE)
    target = model(x).argmax().item()
    assert model(x)[target] > 0
    got = deep_taylor.explain(model, x, target, input_rule=input_rule)
    expected = explicit_decomposition(model, x, target, input_rule)
    assert relative_error(got, expected) < 1e-6
    assert got.sum().item() == pytest.approx(model(x)[target].item(), rel=1e-6)


# ----------------------------------------------------------------------------- the course models


@pytest.mark.parametrize("name", ["shapes_cnn", "shapes_resnet", "shapes_cnn_clever_hans"])
def test_relevance_is_conserved_and_positive_in_every_layer_of_the_course_models(name):
    model, x = course(name), data.canonical(4).images
    target = torch.tensor([0, 1, 2, 3])
    f = logit(model, x, target)
    assert (f > 0).all()
    relevance, layers = deep_taylor.explain(model, x, target, return_layers=True)
    assert ((relevance.flatten(1).sum(1) - f).abs() / f).max() < 1e-5
    for layer, r in layers.items():
        assert r.min() >= 0, layer
    assert relevance.min() >= 0


def test_a_negative_logit_scales_the_same_distribution():
    """DTD is linear in the starting relevance: for f_c < 0 the map is f_c times a distribution of positive evidence."""
    model, x = course("shapes_cnn"), data.canonical(4).images
    f = model(x).detach()
    target = f.argmin(1)
    f_c = f.gather(1, target[:, None])[:, 0]
    assert (f_c < 0).all()
    relevance = deep_taylor.explain(model, x, target).flatten(1)
    assert relevance.max() <= 0
    assert ((relevance.sum(1) - f_c).abs() / f_c.abs()).max() < 1e-5


def test_biases_are_what_separates_dtd_from_lrp_z_plus():
    """On the real model LRP's z+ lets positive biases absorb relevance; DTD does not, but the maps look alike."""
    model, x = course("shapes_cnn"), data.canonical(4).images
    target = torch.tensor([0, 1, 2, 3])
    dtd = deep_taylor.explain(model, x, target)
    lrp_map = lrp.explain(model, x, target, composite=lrp.Composite(first=lrp.ZBox(0.0, 1.0), conv=lrp.ZPlus(),
                                                                    linear=lrp.ZPlus()))  # fmt: skip
    f = logit(model, x, target)
    assert (lrp_map.flatten(1).sum(1) < 0.9 * f).all()
    assert relative_error(dtd, lrp_map) > 0.01
    for a, b in zip(dtd.sum(1).flatten(1), lrp_map.sum(1).flatten(1)):
        assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.9


# ----------------------------------------------------------------------------- against LRP and Zennit


def zennit_dtd(model: nn.Module, x: torch.Tensor, target: torch.Tensor, input_rule: str, zero_params=None):
    """Zennit's composite for DTD, built by hand: ZBox or WSquare on the first layer, ZPlus on every other
    conv and linear layer (the biases zeroed inside the rules with ``zero_params=["bias"]``)."""
    kwargs = {"zero_params": zero_params}
    box = zrules.ZBox(torch.zeros_like(x), torch.ones_like(x), **kwargs)
    first = box if input_rule == "zb" else zrules.WSquare(**kwargs)
    layer_map = zcomposites.layer_map_base() + [(ztypes.Convolution, zrules.ZPlus(**kwargs)),
                                                (nn.Linear, zrules.ZPlus(**kwargs))]  # fmt: skip
    composite = zcomposites.SpecialFirstLayerMapComposite(layer_map, [(ztypes.Convolution, first)])
    with zattribution.Gradient(model, composite) as attributor:
        _, relevance = attributor(x, lambda out: out * F.one_hot(target, out.shape[1]).to(out))
    return relevance


@pytest.mark.parametrize("name", ["shapes_cnn", "shapes_cnn_clever_hans"])
@pytest.mark.parametrize("input_rule", ["zb", "w2"])
def test_on_zero_biases_dtd_is_lrp_z_plus_with_zb_and_zennits_composite(name, input_rule):
    model, x = course(name), data.canonical(4).images
    target = torch.tensor([3, 2, 1, 0])
    bias_free = deep_taylor.zero_biases(model)
    got = deep_taylor.explain(bias_free, x, target, input_rule=input_rule)
    first = lrp.ZBox(0.0, 1.0) if input_rule == "zb" else lrp.WSquare()
    composite = lrp.Composite(first=first, conv=lrp.ZPlus(), linear=lrp.ZPlus())
    assert relative_error(got, lrp.explain(bias_free, x, target, composite=composite)) < 1e-5
    assert relative_error(got, zennit_dtd(bias_free, x, target, input_rule)) < 1e-5
    # Zennit's rules can also leave the biases out themselves: then the real model gives DTD's map
    got = deep_taylor.explain(model, x, target, input_rule=input_rule)
    assert relative_error(got, zennit_dtd(model, x, target, input_rule, zero_params=["bias"])) < 1e-5


def dense(layer: nn.Module, shape: tuple) -> torch.Tensor:
    """The matrix (inputs, outputs) of a conv or linear layer without its bias, on one sample of ``shape``."""
    basis = torch.eye(math.prod(shape), dtype=DOUBLE).view(-1, *shape)
    if isinstance(layer, nn.Linear):
        return basis @ layer.weight.T
    return layer._conv_forward(basis, layer.weight, None).flatten(1)


def ratio(relevance: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """relevance / p, and 0 where p is 0."""
    return torch.where(p > 0, relevance.flatten() / p.where(p > 0, 1.0), 0.0)


def zplus_step(w: torch.Tensor, a: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """R_j = sum_k (a_j w_jk)^+ / sum_j' (a_j' w_j'k)^+ R_k with the explicit matrix w (inputs, outputs)."""
    c = (a.flatten()[:, None] * w).clamp(min=0)
    return (c @ ratio(relevance, c.sum(0))).view(a.shape)


def block_forward(block: nn.Module, a: torch.Tensor) -> torch.Tensor:
    """A canonized BasicBlock (BatchNorm merged; torch.fx keeps the block as a container without forward)."""
    shortcut = block.get_submodule("downsample.0")(a) if hasattr(block, "downsample") else a
    return F.relu(block.conv2(F.relu(block.conv1(a))) + shortcut)


def dense_block(block: nn.Module, a: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """DTD through a residual block: conv2 and the shortcut are one linear layer before the ReLU (one z+ step)."""
    h = F.relu(block.conv1(a))
    c2 = (h.flatten()[:, None] * dense(block.conv2, h.shape[1:])).clamp(min=0)
    if hasattr(block, "downsample"):
        shortcut = dense(block.get_submodule("downsample.0"), a.shape[1:])
    else:
        shortcut = torch.eye(a.numel(), dtype=DOUBLE)
    c_shortcut = (a.flatten()[:, None] * shortcut).clamp(min=0)
    s = ratio(relevance, c2.sum(0) + c_shortcut.sum(0))
    r_h = (c2 @ s).view(h.shape)
    return zplus_step(dense(block.conv1, a.shape[1:]), a, r_h) + (c_shortcut @ s).view(a.shape)


def dense_resnet_dtd(model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """DTD of the canonized ShapesResNet on one image (1, 3, H, W) by explicit matrices, biases left out of the
    rules: z+ on fc, average pooling and the blocks, winner-take-all max-pooling, zB on [0, 1] at the pixels."""
    a1 = F.relu(model.conv1(x))
    pooled, where = F.max_pool2d(a1, 2, return_indices=True)
    blocks, inputs = [model.layer1, model.layer2, model.layer3], [pooled]
    for block in blocks:
        inputs.append(block_forward(block, inputs[-1]))
    features = inputs[-1].mean((-2, -1))
    top = torch.zeros(model.fc.out_features, dtype=DOUBLE)
    top[target] = model.fc(features)[0, target]
    relevance = zplus_step(model.fc.weight.T, features, top)
    size = inputs[-1][0, 0].numel()
    average = torch.eye(features.numel(), dtype=DOUBLE).repeat_interleave(size, 0) / size
    relevance = zplus_step(average, inputs[-1], relevance)
    for block, a in reversed(list(zip(blocks, inputs[:-1]))):
        relevance = dense_block(block, a, relevance)
    r_a1 = torch.zeros_like(a1).flatten(2).scatter_(2, where.flatten(2), relevance.flatten(2)).view(a1.shape)
    w = dense(model.conv1, x.shape[1:])
    low, high = 0.0, 1.0
    c = x.flatten()[:, None] * w - low * w.clamp(min=0) - high * w.clamp(max=0)
    return (c @ ratio(r_a1, c.sum(0))).view(x.shape)


def test_the_residual_network_matches_an_explicit_dense_reference():
    """Small images (16x16) keep the dense matrices small; float64."""
    model = course("shapes_resnet").to(DOUBLE)
    x = data.canonical(2).images[:, :, 24:40, 24:40].to(DOUBLE)
    target = torch.tensor([0, 1])
    got = deep_taylor.explain(model, x, target)
    with torch.no_grad():
        expected = torch.cat([dense_resnet_dtd(model, x[i : i + 1], target[i].item()) for i in range(2)])
    assert relative_error(got, expected) < 1e-5


# ----------------------------------------------------------------------------- input invariance


@pytest.mark.parametrize("shift", [-0.5, torch.tensor([0.2, -0.3, 0.5])], ids=["constant", "per_channel"])
def test_input_invariance_holds_for_zb_with_shifted_bounds_and_fails_for_a_zero_root_point(shift):
    model, x = course("shapes_cnn"), data.canonical(2).images
    before = state_of(model)
    result = deep_taylor.input_invariance(model, x, shift)
    assert_unchanged(before, model)
    assert result.output_difference < 1e-5
    assert result.difference["dtd_zb"] < 1e-5 and result.difference["dtd_w2"] < 1e-5
    assert result.difference["dtd_zplus"] > 0.1 and result.difference["gradient_x_input"] > 0.1
    f_map, g_map = result.maps["gradient_x_input"]
    assert f_map.shape == g_map.shape == (2, 3, 66, 66)  # the zero padding made explicit
    # the copy f with explicit padding is the model: its gradient x input, cropped, is the model's
    expected = gradient.gradient_x_input(model, x, model(x).argmax(1))
    torch.testing.assert_close(f_map[:, :, 1:-1, 1:-1], expected)


def test_input_invariance_of_a_network_without_padding_in_float64():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).to(DOUBLE).eval()
    for layer in model[::2]:
        layer.weight.data.normal_(0, 2)
        layer.bias.data = -layer.bias.data.abs()
    x = torch.rand(4, 6, dtype=DOUBLE)
    result = deep_taylor.input_invariance(model, x, torch.linspace(-1, 1, 6, dtype=DOUBLE), low=0.0, high=1.0)
    assert all(f_map.abs().max() > 0 for f_map, _ in result.maps.values())
    assert result.output_difference < 1e-12
    assert result.difference["dtd_zb"] < 1e-12 and result.difference["dtd_w2"] < 1e-12
    assert result.difference["dtd_zplus"] > 0.01 and result.difference["gradient_x_input"] > 0.01


def test_input_invariance_checks_its_arguments():
    model, x = course("shapes_cnn"), data.canonical(1).images
    with pytest.raises(TypeError, match="shift: expected a number or one value per channel"):
        deep_taylor.input_invariance(model, x, "0.5")
    with pytest.raises(ValueError, match=r"shift: expected one value per channel \(3\)"):
        deep_taylor.input_invariance(model, x, torch.zeros(2))
    with pytest.raises(ValueError, match="low <= 0 <= high"):
        deep_taylor.input_invariance(model, x.clamp(min=0.1), 0.5, low=0.1)


# ----------------------------------------------------------------------------- the contract and the engine's additions


def test_contract_unbatched_dtype_errors_and_the_model_left_unchanged():
    model, x = course("shapes_cnn"), data.canonical(2).images
    before = state_of(model)
    batched = deep_taylor.explain(model, x)
    single = deep_taylor.explain(model, x[1])
    assert single.shape == x[1].shape and single.dtype == x.dtype
    torch.testing.assert_close(single, batched[1])
    with pytest.raises(ValueError, match="input_rule: expected one of"):
        deep_taylor.explain(model, x, input_rule="z+")
    with pytest.raises(ValueError, match="x: expected values within the zB bounds"):
        deep_taylor.explain(model, x + 0.5)
    with pytest.raises(TypeError, match="low: expected a number or a float tensor"):
        deep_taylor.explain(model, x, low="0")
    with pytest.raises(ValueError, match="expected low < high"):
        deep_taylor.explain(model, x, low=1.0, high=0.0)
    with pytest.raises(TypeError, match="target"):
        deep_taylor.explain(model, x, target="circle")
    assert_unchanged(before, model)
    resnet = models.load("shapes_resnet")
    with pytest.raises(NotImplementedError, match="canonize"):
        deep_taylor.explain(resnet, x)


def test_the_composite_and_its_report():
    model = course("shapes_resnet")
    rows = {name: what for name, _, what in lrp.check_model(model, deep_taylor.composite("w2")).rows}
    assert rows["conv1"] == "WSquare()" and rows["layer2.conv2"] == "ZPlusNoBias()" and rows["fc"] == "ZPlusNoBias()"
    assert rows["layer2.residual"] == rows["avgpool"] == "Norm: split by zplus_norm"
    assert rows["maxpool"] == "winner-take-all (the gradient)"
    assert deep_taylor.composite("zplus").first is None
    with pytest.raises(TypeError, match="norm: expected None or a function norm.args, producers., got str"):
        lrp.Composite(norm="positive")


def test_zero_biases_is_a_copy_with_zero_biases():
    model = models.load("shapes_cnn")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    copied = deep_taylor.zero_biases(model)
    for key, value in copied.state_dict().items():
        expected = torch.zeros_like(value) if key.endswith("bias") else before[key]
        assert torch.equal(value, expected), key
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(TypeError, match="model"):
        deep_taylor.zero_biases("model")


def test_activations_that_can_be_negative_are_refused_because_z_plus_would_lose_their_relevance():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.LeakyReLU(0.1), nn.AvgPool2d(2),
                          nn.Flatten(), nn.Linear(8 * 9, 3, bias=False)).to(DOUBLE).eval()  # fmt: skip
    x = torch.rand(4, 3, 6, 6, dtype=DOUBLE)
    target = torch.tensor([0, 1, 2, 0])
    # what explain would return: the average of negative activations has no positive contribution to share by
    relevance = lrp.explain(model, x, target, composite=deep_taylor.composite())
    assert relative_error(relevance.flatten(1).sum(1), logit(model, x, target)) > 0.01
    before = state_of(model)
    with pytest.raises(NotImplementedError, match=r"model: .*activations >= 0.*1 \(LeakyReLU\); supported: ReLU"):
        deep_taylor.explain(model, x, target)
    assert_unchanged(before, model)
    model[1] = nn.Sigmoid()  # positive activations are fine: relevance is conserved
    relevance = deep_taylor.explain(model, x, target)
    assert relative_error(relevance.flatten(1).sum(1), logit(model, x, target)) < 1e-4


def test_an_mlp_on_images_is_the_same_mlp_on_vectors_and_input_invariant_with_zb():
    torch.manual_seed(3)
    layers = [nn.Linear(3 * 2 * 3, 5), nn.ReLU(), nn.Linear(5, 3)]
    for layer in layers[::2]:
        layer.weight.data.normal_(0, 2)
        layer.bias.data = -layer.bias.data.abs()
    mlp = nn.Sequential(nn.Flatten(), *layers).to(DOUBLE).eval()
    x = torch.rand(3, 2, 3, dtype=DOUBLE)
    target = mlp(x[None])[0].argmax().item()
    expected = explicit_decomposition(mlp[1:], x.flatten(), target, "zb")
    assert relative_error(deep_taylor.explain(mlp, x, target).flatten(), expected) < 1e-6
    result = deep_taylor.input_invariance(mlp, x[None], torch.tensor([0.3, -0.2, 0.5]))
    assert result.output_difference < 1e-12 and result.difference["dtd_zb"] < 1e-12
    assert result.difference["gradient_x_input"] > 0.01
