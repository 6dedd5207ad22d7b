"""lrp: every rule against explicit matrices, LRP-0 against gradient x input, the presets against Zennit,
canonization, the model report, and the calling contract (model unchanged, also on errors)."""

import copy
import math

import pytest
import torch
import torchvision
from conftest import assert_unchanged, state_of
from torch import nn
from torch.nn import functional as F
from zennit import attribution as zattribution
from zennit import composites as zcomposites
from zennit import rules as zrules
from zennit import torchvision as ztorchvision
from zennit.layer import Sum as ZennitSum

from xai_course import data, gradient, lrp, models

DOUBLE = torch.float64


# ----------------------------------------------------------------------------- helpers


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max |got - expected| / max |expected|."""
    return ((got - expected).abs().max() / expected.abs().max()).item()


def with_batchnorm_statistics(model: nn.Module, seed: int = 0, eps: float | None = None) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters; eval mode."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
            m.running_var.copy_(0.5 + torch.rand(n, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(n, generator=g))
            m.bias.data.copy_(0.2 * torch.randn(n, generator=g))
            m.eps = m.eps if eps is None else eps
    return model.eval()


def course_model(name: str) -> nn.Module:
    """The shipped course model, or (until the weights exist) its architecture with random weights."""
    try:
        return models.load(name)
    except (FileNotFoundError, OSError, ValueError):
        torch.manual_seed(0)
        return with_batchnorm_statistics(models.RECIPES[name].build())


def zennit_composite(preset: str, x: torch.Tensor, canonizers=()):
    """Zennit's composite corresponding to one of lrp.PRESETS."""
    kwargs = {"canonizers": list(canonizers)}
    if preset == "epsilon":
        layer_map = [(nn.Conv2d, zrules.Epsilon()), (nn.Linear, zrules.Epsilon())] + zcomposites.layer_map_base()
        return zcomposites.LayerMapComposite(layer_map, **kwargs)
    if preset == "epsilon_gamma_box":
        return zcomposites.EpsilonGammaBox(low=torch.zeros_like(x), high=torch.ones_like(x), **kwargs)
    return {"epsilon_plus": zcomposites.EpsilonPlus, "epsilon_alpha2_beta1": zcomposites.EpsilonAlpha2Beta1}[preset](
        **kwargs
    )


def zennit_relevance(model, x, preset, target, canonizers=()) -> torch.Tensor:
    """Zennit's LRP, started from the target's logit as lrp.explain is."""
    with zattribution.Gradient(model, zennit_composite(preset, x, canonizers)) as attributor:
        _, relevance = attributor(x, lambda out: out * F.one_hot(target, out.shape[1]).to(out))
    return relevance


class StackSum(nn.Module):
    """lrp.Sum in the form Zennit's Norm rule expects: one stacked input."""

    def __init__(self):
        super().__init__()
        self.sum = ZennitSum()

    def forward(self, a, b):
        return self.sum(torch.stack([a, b], dim=-1))


def for_zennit(canonical: nn.Module) -> nn.Module:
    """A copy of a canonized model whose Sum modules Zennit recognizes."""
    model = copy.deepcopy(canonical)
    for name, module in list(model.named_modules()):
        if isinstance(module, lrp.Sum):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, StackSum())
    return model


@pytest.fixture(scope="module")
def vgg11() -> nn.Module:
    """torchvision's vgg11 (features, adaptive pooling, functional flatten, dropout) with a narrow classifier."""
    torch.manual_seed(0)
    model = torchvision.models.vgg11(num_classes=4)
    model.classifier = nn.Sequential(
        nn.Linear(512 * 7 * 7, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, 64), nn.ReLU(True), nn.Dropout(),
        nn.Linear(64, 4),
    )  # fmt: skip
    return model.eval()


# ----------------------------------------------------------------------------- rules against explicit matrices


def dense(layer: nn.Module, weight: torch.Tensor, shape: tuple) -> torch.Tensor:
    """The matrix (inputs, outputs) of a conv or linear layer with ``weight``, on inputs of ``shape``."""
    basis = torch.eye(math.prod(shape), dtype=DOUBLE).view(-1, *shape)
    if isinstance(layer, nn.Linear):
        return basis @ weight.T
    return F.conv2d(basis, weight, None, layer.stride, layer.padding).flatten(1)


def stab(d: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return d + eps * torch.where(d >= 0, 1.0, -1.0).to(d)


def explicit(rule, layer, a: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """R_j of one layer by the papers' formulas, contributions as explicit (j, k) matrices; a and R flattened."""
    shape = a.shape
    a, relevance = a.flatten(), relevance.flatten()
    w = dense(layer, layer.weight, shape)
    b = layer(torch.zeros(1, *shape, dtype=DOUBLE)).flatten()  # the bias of every output
    z = a @ w + b
    if isinstance(rule, lrp.Epsilon):
        c = a[:, None] * w
        r = c / stab(c.sum(0) + b, rule.epsilon) * relevance
    elif isinstance(rule, lrp.Gamma):
        g, up, down = rule.gamma, w + rule.gamma * w.clamp(min=0), w + rule.gamma * w.clamp(max=0)
        c_up = a.clamp(min=0)[:, None] * up + a.clamp(max=0)[:, None] * down
        c_down = a.clamp(min=0)[:, None] * down + a.clamp(max=0)[:, None] * up
        r = c_up / stab(c_up.sum(0) + b + g * b.clamp(min=0)) * (z > 0) * relevance
        r = r + c_down / stab(c_down.sum(0) + b + g * b.clamp(max=0)) * (z < 0) * relevance
    elif isinstance(rule, (lrp.AlphaBeta, lrp.ZPlus)):
        alpha, beta = (rule.alpha, rule.beta) if isinstance(rule, lrp.AlphaBeta) else (1.0, 0.0)
        c = a[:, None] * w
        p, n = c.clamp(min=0), c.clamp(max=0)  # (a_j w_jk)^+ and (a_j w_jk)^-
        r = alpha * p / stab(p.sum(0) + b.clamp(min=0)) * relevance
        r = r - beta * n / stab(n.sum(0) + b.clamp(max=0)) * relevance
    elif isinstance(rule, lrp.ZBox):
        low, high = (torch.as_tensor(v, dtype=DOUBLE).expand(1, *shape).reshape(-1, 1) for v in (rule.low, rule.high))
        c = a[:, None] * w - low * w.clamp(min=0) - high * w.clamp(max=0)
        r = c / stab(c.sum(0)) * relevance
    else:
        c = dense(layer, layer.weight**2 if isinstance(rule, lrp.WSquare) else torch.ones_like(layer.weight), shape)
        r = c / stab(c.sum(0)) * relevance
    return r.sum(1).view(shape)


RULES = {
    "epsilon": lrp.Epsilon(),
    "epsilon_0.5": lrp.Epsilon(0.5),
    "gamma": lrp.Gamma(),
    "alpha2_beta1": lrp.AlphaBeta(),
    "alpha1_beta0": lrp.AlphaBeta(1.0, 0.0),
    "zplus": lrp.ZPlus(),
    "zbox": lrp.ZBox(-1.0, 1.0),
    "zbox_per_channel": lrp.ZBox(torch.tensor([-1.0, -2.0]).view(1, 2, 1, 1), torch.tensor([1.0, 1.5]).view(2, 1, 1)),
    "wsquare": lrp.WSquare(),
    "flat": lrp.Flat(),
}
FIRST_LAYER_ONLY = (lrp.ZBox, lrp.WSquare, lrp.Flat)


@pytest.fixture
def two_layers():
    """conv (with bias) -> ReLU -> linear (with bias) in float64, and inputs of both signs in [-1, 1]."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 3))
    for p in model.parameters():
        p.data.normal_()
    return model.to(DOUBLE).eval(), 2 * torch.rand(2, 2, 4, 4, dtype=DOUBLE) - 1


@pytest.mark.parametrize("name", RULES)
def test_each_rule_equals_the_explicit_matrix_form(name, two_layers):
    model, x = two_layers
    rule = RULES[name]
    conv_rule = rule if not isinstance(rule, FIRST_LAYER_ONLY) else lrp.Epsilon()
    composite = lrp.Composite(first=rule, conv=conv_rule, linear=conv_rule)
    target = torch.tensor([0, 2])
    got = lrp.explain(model, x, target, composite=composite)
    for i in range(2):
        a1 = model[1](model[0](x[i : i + 1]))
        logits = model(x[i : i + 1])[0]
        r_top = torch.zeros(3, dtype=DOUBLE).index_fill(0, target[i], logits[target[i]].item())
        r_hidden = explicit(conv_rule, model[3], a1.flatten(), r_top)  # R at the ReLU = R at the conv output
        expected = explicit(rule, model[0], x[i], r_hidden)
        torch.testing.assert_close(got[i], expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", RULES)
def test_relevance_step_is_the_explicit_form_of_one_layer(name, two_layers):
    model, x = two_layers
    relevance = torch.randn(1, 3, 4, 4, dtype=DOUBLE)
    got = lrp.relevance_step(RULES[name], model[0], x[:1], relevance)
    torch.testing.assert_close(got[0], explicit(RULES[name], model[0], x[0], relevance), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("rule", [lrp.Epsilon(), lrp.Gamma(), lrp.AlphaBeta(), lrp.ZPlus(), lrp.Flat()])
def test_rules_agree_with_zennit_on_inputs_of_both_signs(rule, two_layers):
    model, x = two_layers
    theirs = {lrp.Epsilon: zrules.Epsilon(), lrp.Gamma: zrules.Gamma(), lrp.AlphaBeta: zrules.AlphaBeta(),
              lrp.ZPlus: zrules.ZPlus(), lrp.Flat: zrules.Flat()}[type(rule)]  # fmt: skip
    rest = lrp.Epsilon() if isinstance(rule, lrp.Flat) else rule
    layer_map = [(nn.Conv2d, theirs if rest is rule else zrules.Epsilon()), (nn.Linear, theirs if rest is rule else
                 zrules.Epsilon()), (nn.ReLU, zrules.Pass())]  # fmt: skip
    composite = zcomposites.SpecialFirstLayerMapComposite(layer_map, [(nn.Conv2d, theirs)])
    target = torch.tensor([1, 2])
    with zattribution.Gradient(model, composite) as attributor:
        _, expected = attributor(x, lambda out: out * F.one_hot(target, 3).to(out))
    got = lrp.explain(model, x, target, composite=lrp.Composite(first=rule, conv=rest, linear=rest))
    assert relative_error(got, expected) < 1e-9


# ----------------------------------------------------------------------------- LRP-0 and conservation


@pytest.fixture
def bias_free():
    """A bias-free ReLU network with max-pooling, in float64."""
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3, bias=False),
    )  # fmt: skip
    for p in model.parameters():
        p.data.normal_()
    return model.to(DOUBLE).eval(), torch.rand(3, 3, 8, 8, dtype=DOUBLE)


def test_lrp0_on_a_bias_free_relu_network_is_gradient_x_input(bias_free):
    model, x = bias_free
    lrp0 = lrp.Composite(conv=lrp.Epsilon(0.0), linear=lrp.Epsilon(0.0))
    torch.testing.assert_close(lrp.explain(model, x, 1, composite=lrp0), gradient.gradient_x_input(model, x, 1))


def test_conservation_holds_layer_by_layer(bias_free):
    model, x = bias_free
    relevance, layers = lrp.explain(model, x, composite="epsilon_plus", return_layers=True)
    assert list(layers) == ["0", "3", "6", "output"]
    totals = torch.stack([r.flatten(1).sum(1) for r in layers.values()])
    logit = model(x).max(1).values
    assert torch.allclose(totals, logit.expand_as(totals), rtol=1e-5, atol=0)
    assert torch.equal(layers["0"], relevance)


def test_bias_and_epsilon_absorb_relevance(two_layers):
    model, x = two_layers
    _, layers = lrp.explain(model, x, composite=lrp.Composite(conv=lrp.Epsilon(1.0), linear=lrp.Epsilon(1.0)),
                            return_layers=True)  # fmt: skip
    totals = [r.flatten(1).sum(1) for r in layers.values()]
    assert not torch.allclose(totals[0], totals[-1], rtol=1e-3)


def test_maxpool_as_average_in_the_backward_pass():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32, 3))
    model = model.to(DOUBLE).eval()
    x = torch.rand(1, 3, 8, 8, dtype=DOUBLE)
    got, layers = lrp.explain(model, x, 0, composite="epsilon", maxpool="average", return_layers=True)
    a = model[1](model[0](x))
    r_pool = layers["4"].view(1, 2, 4, 4)  # relevance of the max-pooling outputs (input of the linear layer)
    z = F.avg_pool2d(a, 2)  # the max-pooling as a linear layer with weights 1/4, then the epsilon rule
    r_conv = a / 4 * F.interpolate(r_pool / stab(z), scale_factor=2)
    expected = lrp.relevance_step(lrp.Epsilon(), model[0], x, r_conv)
    assert relative_error(got, expected) < 1e-9
    assert relative_error(lrp.explain(model, x, 0, composite="epsilon"), expected) > 1e-3  # winner-take-all differs


def test_pass_conserves_through_a_smooth_activation():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 6, bias=False), nn.Tanh(), nn.Linear(6, 2, bias=False))
    x = torch.randn(3, 3, 2, 2, dtype=DOUBLE)
    model = model.to(DOUBLE).eval()
    relevance = lrp.explain(model, x, composite=lrp.Composite(linear=lrp.Epsilon(0.0)))
    assert torch.allclose(relevance.flatten(1).sum(1), model(x).max(1).values, rtol=1e-5)


# ----------------------------------------------------------------------------- the presets against Zennit


@pytest.mark.parametrize("preset", lrp.PRESETS)
@pytest.mark.parametrize("name", ["shapes_cnn", "shapes_cnn_clever_hans"])
def test_presets_agree_with_zennit_on_the_course_cnn(preset, name):
    model, x = course_model(name), data.canonical(4).images
    target = torch.tensor([0, 1, 2, 3])
    expected = zennit_relevance(model, x, preset, target)
    assert relative_error(lrp.explain(model, x, target, composite=preset), expected) < 1e-5


@pytest.mark.parametrize("preset", lrp.PRESETS)
def test_presets_agree_with_zennit_on_the_canonized_course_resnet(preset):
    model, x = course_model("shapes_resnet"), data.canonical(4).images
    canonical = lrp.canonize(model, x)
    target = torch.tensor([3, 2, 1, 0])
    expected = zennit_relevance(for_zennit(canonical), x, preset, target)
    assert relative_error(lrp.explain(canonical, x, target, composite=preset), expected) < 1e-5


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    """torchvision's resnet18 in float64 with BatchNorm statistics, and BatchNorm eps = 0 (see below)."""
    torch.manual_seed(0)
    return with_batchnorm_statistics(torchvision.models.resnet18(num_classes=4), eps=0.0).to(DOUBLE)


@pytest.mark.parametrize("preset", lrp.PRESETS)
def test_resnet18_with_zennits_own_canonizer(preset, resnet18):
    """Zennit sets a merged BatchNorm to the identity but keeps its eps (a factor 1 / sqrt(1 + eps)),
    so the whole pipeline is compared with eps = 0, in float64 (18 random layers amplify rounding)."""
    model = resnet18
    x, target = data.canonical(2).images[:, :, :32, :32].to(DOUBLE), torch.tensor([1, 3])
    expected = zennit_relevance(model, x, preset, target, [ztorchvision.ResNetCanonizer()])
    assert relative_error(lrp.explain(lrp.canonize(model, x), x, target, composite=preset), expected) < 1e-8


@pytest.mark.parametrize("preset", ["epsilon", "epsilon_gamma_box"])
def test_vgg11_agrees_with_zennit(preset, vgg11):
    model, x = vgg11, data.canonical(2).images[:, :, :32, :32]
    target = torch.tensor([2, 0])
    expected = zennit_relevance(model, x, preset, target)
    assert relative_error(lrp.explain(model, x, target, composite=preset), expected) < 1e-5


# ----------------------------------------------------------------------------- canonize


@pytest.mark.parametrize("build", [models.ShapesResNet, lambda: torchvision.models.resnet18(num_classes=4)])
def test_canonize_merges_batchnorm_and_makes_sums_explicit(build):
    torch.manual_seed(0)
    model = with_batchnorm_statistics(build()).train()
    before = state_of(model)
    x = data.canonical(2).images
    canonical = lrp.canonize(model, x)
    assert_unchanged(before, model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in canonical.modules())
    assert sum(isinstance(m, lrp.Sum) for m in canonical.modules()) in (3, 8)
    assert lrp.check_model(canonical).ok and not lrp.check_model(model).ok
    with torch.no_grad():
        expected, got = model.eval()(x), canonical(x)
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()


class Aliased(nn.Module):
    """``c = a; a += x``: eager PyTorch changes c too, a traced graph does not."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 8 * 8, 2)

    def forward(self, x):
        a = self.conv(x)
        c = a
        a += x
        return self.fc(torch.flatten(c, 1))


def test_canonize_checks_the_outputs_and_merges_batchnorm_after_linear_layers():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2)).eval()
    mlp[2].running_mean.normal_()
    x = torch.rand(4, 3, 2, 2)
    canonical = lrp.canonize(mlp, x)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in canonical.modules())
    torch.testing.assert_close(canonical(x), mlp(x))
    with pytest.raises(RuntimeError, match="canonize: the canonized model's outputs differ"):
        lrp.canonize(Aliased().eval(), torch.rand(2, 3, 8, 8))
    with pytest.raises(NotImplementedError, match="canonize needs torch.fx"):
        lrp.canonize(DataDependent())


def test_canonized_model_explanations_use_readable_layer_names():
    _, layers = lrp.explain(lrp.canonize(course_model("shapes_resnet")), data.canonical(1).images, return_layers=True)
    assert list(layers)[:3] == ["conv1", "layer1.conv1", "layer1.conv2"]
    assert list(layers)[-2:] == ["fc", "output"]


# ----------------------------------------------------------------------------- what the engine cannot see


class FunctionalResidual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 8 * 8, 2)

    def forward(self, x):
        return self.fc(torch.flatten(F.relu(self.conv(x)) + x, 1))


class FunctionalLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(3, 3, 3, 3))
        self.fc = nn.Linear(3 * 8 * 8, 2)

    def forward(self, x):
        return self.fc(F.conv2d(x, self.kernel, padding=1).relu().flatten(1))


class Reused(nn.Module):
    """One bias-free linear layer applied twice."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(8, 8, bias=False)
        self.out = nn.Linear(8, 2, bias=False)

    def forward(self, x):
        return self.out(F.relu(self.hidden(F.relu(self.hidden(x.flatten(1))))))


class DataDependent(nn.Module):
    """Control flow on values: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)
        self.fc = nn.Linear(2 * 6 * 6, 2)

    def forward(self, x):
        h = self.conv(x).relu()
        return self.fc((h if x.sum() > 0 else -h).flatten(1))


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (FunctionalResidual(), "residual addition"),
        (FunctionalLayer(), "functional call conv2d"),
        (models.ShapesResNet(), "merge it into the layer before with lrp.canonize"),
        (nn.Sequential(nn.Conv2d(3, 2, 3), nn.ELU(inplace=True), nn.Flatten(), nn.Linear(72, 2)), "in-place ELU"),
    ],
)
def test_explain_refuses_what_it_would_explain_wrongly_with_the_report(model, expected):
    model.eval()
    before = state_of(model)
    with pytest.raises(NotImplementedError, match=expected) as error:
        lrp.explain(model, torch.rand(2, 3, 8, 8))
    assert "module" in str(error.value) and "LRP" in str(error.value)  # the report's table
    assert_unchanged(before, model)


def test_unsupported_layers_are_named_with_the_supported_ones():
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.LayerNorm([2, 6, 6]), nn.Flatten(), nn.Linear(72, 2)).eval()
    with pytest.raises(NotImplementedError, match=r"1: LayerNorm has no LRP rule; supported: Conv1d, Conv2d"):
        lrp.explain(model, torch.rand(1, 3, 8, 8))


def test_reused_modules_and_in_place_relus_are_reported_and_handled():
    torch.manual_seed(5)
    model = Reused().to(DOUBLE).eval()
    report = lrp.check_model(model, "epsilon")
    assert report.ok and any(note.startswith("called 2 times: hidden (Linear)") for note in report.notes)
    assert lrp.check_model(model).ok  # zB on the first call of hidden, which reads x.flatten(1): the input reshaped
    assert [row[0] for row in report.rows] == ["hidden", "hidden (call 2)", "out"]
    x = torch.rand(2, 2, 2, 2, dtype=DOUBLE)
    lrp0 = lrp.Composite(linear=lrp.Epsilon(0.0))
    torch.testing.assert_close(lrp.explain(model, x, 1, composite=lrp0), gradient.gradient_x_input(model, x, 1))
    notes = lrp.check_model(models.ShapesResNet()).notes
    assert any(note.startswith("called 2 times and in-place: layer1.relu (ReLU), layer2.relu") for note in notes)


def test_untraceable_models_are_explained_and_the_report_says_what_was_not_checked():
    model = DataDependent().eval()
    assert any("could not trace" in note for note in lrp.check_model(model).notes)
    relevance = lrp.explain(model, torch.rand(2, 3, 8, 8), composite="epsilon")
    assert relevance.shape == (2, 3, 8, 8)


def test_composite_layers_win_and_bad_composites_are_named():
    model = course_model("shapes_cnn")
    composite = lrp.Composite(conv=lrp.Gamma(), linear=lrp.Epsilon(), layers={"features.3": lrp.ZPlus()})
    rows = {name: what for name, _, what in lrp.check_model(model, composite).rows}
    assert rows["features.0"] == "Gamma(gamma=0.25)" and rows["features.3"] == "ZPlus()"
    rows = {name: what for name, _, what in lrp.check_model(model, lrp.Composite(linear=lrp.Epsilon())).rows}
    assert rows["features.0"] == "no rule: LRP-0 (the plain gradient)"
    with pytest.raises(ValueError, match="composite: layers names"):
        lrp.explain(model, data.canonical(1).images, composite=lrp.Composite(layers={"conv9": lrp.Epsilon()}))
    with pytest.raises(ValueError, match="Pass is the rule for element-wise"):
        lrp.check_model(model, lrp.Composite(layers={"features.0": lrp.Pass()}))
    with pytest.raises(ValueError, match="composite: expected one of"):
        lrp.explain(model, data.canonical(1).images, composite="gamma")
    with pytest.raises(ValueError, match="maxpool"):
        lrp.explain(model, data.canonical(1).images, maxpool="max")
    with pytest.raises(ValueError, match="alpha, beta"):
        lrp.AlphaBeta(2.0, 0.5)
    with pytest.raises(ValueError, match="epsilon: expected a number >= 0"):
        lrp.Epsilon(-1.0)
    with pytest.raises(ValueError, match="gamma: expected a number >= 0"):
        lrp.Gamma(float("nan"))


def test_first_layer_rules_need_the_model_input():
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3), nn.Flatten(), nn.Linear(32, 2)).eval()
    composite = lrp.Composite(layers={"2": lrp.Flat()})
    assert "Flat() needs the model input" in str(lrp.check_model(model, composite))


# ----------------------------------------------------------------------------- the calling contract


def test_contract_unbatched_dtype_targets_and_the_model_left_unchanged():
    model = course_model("shapes_cnn").train()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    before = state_of(model)
    x = data.canonical(3).images
    batched = lrp.explain(model, x, torch.tensor([0, 1, 2]))
    assert batched.shape == x.shape and batched.dtype == x.dtype and not batched.requires_grad
    torch.testing.assert_close(lrp.explain(model, x[1], 1), batched[1])
    single, layers = lrp.explain(model, x[2], return_layers=True)
    assert single.shape == x[2].shape and layers["output"].shape == (4,)
    assert_unchanged(before, model)
    bad_calls = [
        ({"x": x, "target": 9}, ValueError, "target: expected class indices"),
        ({"x": x[0, 0]}, ValueError, "x: expected a tensor of shape"),
        ({"x": x.long()}, TypeError, "x: expected a floating-point tensor"),
        ({"x": x, "low": 0.5}, ValueError, "x: expected values within the zB bounds"),  # raised inside the hooks
        ({"x": x, "composite": 3}, TypeError, "composite: expected one of"),
    ]
    for kwargs, error, message in bad_calls:
        with pytest.raises(error, match=message):
            lrp.explain(model, **kwargs)
        assert_unchanged(before, model)


def test_preset_bounds_accept_per_channel_tensors():
    model, x = course_model("shapes_cnn"), data.canonical(2).images
    per_channel = lrp.explain(model, x, 1, low=torch.zeros(1, 3, 1, 1), high=torch.ones(3, 1, 1))
    torch.testing.assert_close(per_channel, lrp.explain(model, x, 1))


def test_lrp0_passes_no_relevance_through_outputs_that_are_exactly_zero():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, bias=False), nn.ReLU(), nn.Linear(3, 2, bias=False)).eval()
    with torch.no_grad():
        model[1].weight[0] = 0.0  # the first hidden unit is exactly zero for every input
    x = torch.rand(2, 1, 2, 2)
    relevance = lrp.explain(model, x, 0, composite=lrp.Composite(linear=lrp.Epsilon(0.0)))
    assert torch.isfinite(relevance).all()
    torch.testing.assert_close(relevance, gradient.gradient_x_input(model, x, 0))


class SlicedInput(nn.Module):
    """A first layer that reads part of the input: not the model input, so zB must still be refused."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(30, 2)

    def forward(self, x):
        return self.fc(x.flatten(1)[:, :30])


def test_first_layer_rules_see_the_input_through_a_flatten():
    """An MLP on images: zB, w^2 and flat on the flattened pixels, explicitly layer by layer with relevance_step."""
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 5, 8), nn.ReLU(), nn.Linear(8, 3)).to(DOUBLE).eval()
    x = torch.rand(2, 3, 4, 5, dtype=DOUBLE) * 2 - 0.5
    low = torch.tensor([-0.5, -0.6, -0.7], dtype=DOUBLE).view(1, 3, 1, 1)
    high = low + 2.2
    pixels = x.flatten(1)
    hidden = mlp[2](mlp[1](pixels)).detach()
    top = lrp.relevance_step(lrp.Epsilon(), mlp[3], hidden, F.one_hot(torch.tensor([1, 1]), 3) * mlp(x).detach())
    per_pixel = lambda t: t.expand_as(x[:1]).flatten(1)  # noqa: E731
    for first in (lrp.ZBox(low, high), lrp.WSquare(), lrp.Flat()):
        got, layers = lrp.explain(mlp, x, 1, composite=lrp.Composite(first, linear=lrp.Epsilon()), return_layers=True)
        rule = lrp.ZBox(per_pixel(low), per_pixel(high)) if isinstance(first, lrp.ZBox) else first
        expected = lrp.relevance_step(rule, mlp[1], pixels, top).view_as(x)
        torch.testing.assert_close(got, expected)
        assert torch.equal(layers["1"], got)  # the first layer reads the pixels
    assert lrp.check_model(mlp).ok
    with pytest.raises(NotImplementedError, match="ZBox.*needs the model input, but fc reads another tensor"):
        lrp.explain(SlicedInput(), torch.rand(2, 3, 4, 5))


class TwoBranches(nn.Module):
    """Two convolutions that both read the input, added by an explicit Sum."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 2, 3, padding=1), nn.Conv2d(3, 2, 3, padding=1)
        self.sum, self.fc = lrp.Sum(), nn.Linear(2 * 4 * 4, 2)

    def forward(self, x):
        return self.fc(F.relu(self.sum(self.a(x), self.b(x))).flatten(1))


def test_two_zb_layers_on_the_input_keep_their_own_bounds():
    torch.manual_seed(0)
    model = TwoBranches().to(DOUBLE).eval()
    x = torch.rand(2, 3, 4, 4, dtype=DOUBLE)
    rule_a, rule_b = lrp.ZBox(0.0, 1.0), lrp.ZBox(-1.0, 2.0)
    composite = lrp.Composite(linear=lrp.Epsilon(), layers={"a": rule_a, "b": rule_b})
    got, layers = lrp.explain(model, x, 1, composite=composite, return_layers=True)
    z_a, z_b = model.a(x).detach(), model.b(x).detach()
    share = layers["fc"].view_as(z_a) / lrp.stabilize(z_a + z_b, lrp.STABILIZER)  # the Sum's rule, R_k / z_k
    expected = lrp.relevance_step(rule_a, model.a, x, z_a * share) + lrp.relevance_step(rule_b, model.b, x, z_b * share)
    torch.testing.assert_close(got, expected)
