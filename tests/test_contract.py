"""The calling contract, swept over every public method of the package.

The methods are discovered, not listed: every public function of a module of ``xai_course`` (outside ``core``,
which holds the contract's own building blocks) with arguments ``model`` and ``x``. Each is called with bad
inputs (an ``x`` that does not fit the model, a model that does not return logits, bad targets, non-finite or
wrong-typed parameters) and must answer with a ``ValueError`` or ``TypeError`` that names the argument, leave
the model exactly as it was, and never return a NaN map. On good input, attributions are ordinary writable
tensors, and a model whose first operation is an in-place ReLU gets the same answer as its non-in-place twin.
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
import re

import pytest
import torch
from conftest import assert_unchanged, state_of
from torch import nn

import xai_course as xc

METHODS = {
    f"{module}.{name}": function
    for module in xc.__all__
    if module != "core"
    for name, function in vars(getattr(xc, module)).items()
    if not name.startswith("_")
    and inspect.isfunction(function)
    and function.__module__ == f"xai_course.{module}"
    and {"model", "x"} <= set(inspect.signature(function).parameters)
}
FAST = {"n_masks": 8, "n_samples": 32, "steps": 2, "seeds": 2, "n_noise": 2, "progress": False}
BAD_VALUES = {"nan": math.nan, "inf": math.inf, "text": "a", "nan tensor": "nan tensor", "short tensor": "short"}


def test_the_sweep_finds_the_methods():
    assert {"gradient.saliency", "lrp.explain", "shap.kernel", "occlusion.rise", "evaluate.random_attribution",
            "deconvnet.project", "inversion.optimize", "deep_taylor.explain", "rules.concept_activations"} <= set(
        METHODS)  # fmt: skip
    assert len(METHODS) >= 35


WORLDS = {  # the course's two kinds of input: images and time series, each with its model
    "images": (lambda: xc.models.load("shapes_cnn"), lambda: xc.data.canonical(2).images),
    "series": (lambda: xc.models.load("timeseries_cnn"), lambda: xc.data.timeseries(2, seed=3).series),
}


@functools.cache
def _world(name: str) -> tuple[nn.Module, torch.Tensor]:
    load_model, load_x = WORLDS[name]
    return load_model(), load_x()


@functools.cache
def _home(name: str) -> str:
    """The first world in which method ``name`` runs on good input (RISE on images, TimeREISE on series)."""
    for world in WORLDS:
        model, x = _world(world)
        try:
            _call(name, _arguments(name, model, x, x))
            return world
        except (ValueError, TypeError, NotImplementedError):
            continue
    raise AssertionError(f"{name} runs in none of the worlds {list(WORLDS)}: the sweep cannot check it")


@pytest.fixture
def base(name):
    return _world(_home(name))[0]


@pytest.fixture
def x(name):
    return _world(_home(name))[1]


@functools.cache
def _shipped(name: str):
    return xc.inversion.load(name)


def _variant(base: nn.Module, forward, **children) -> nn.Module:
    """A copy of ``base`` whose forward is ``forward(self, x, base_forward)``, with the same layer names."""
    cls = type(base)

    class Variant(cls):
        def forward(self, inputs):
            return forward(self, inputs, lambda z: cls.forward(self, z))

    model = copy.deepcopy(base)
    model.__class__ = Variant
    for name, child in children.items():
        model.add_module(name, child)
    return model


def _grid_segments(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    return (torch.arange(h)[:, None] * 2 // h) * 2 + torch.arange(w)[None] * 2 // w


def _arguments(name: str, model: nn.Module, x, good_x: torch.Tensor) -> dict:
    """The required arguments of method ``name`` (and fast settings), built for ``model`` and ``x``.

    Arguments shaped like ``x`` (an attribution, segments, an occluder, a background) follow ``x`` when it is a
    float tensor of another shape, so that the error is about ``x`` itself."""
    like = x if isinstance(x, torch.Tensor) and x.is_floating_point() else good_x
    g = torch.Generator().manual_seed(0)  # the same arguments on every call: results compare
    needed = {
        "method": lambda: xc.gradient.saliency,
        "explain": lambda: lambda model, x, target=None, **settings: xc.gradient.gradient_x_input(model, x, target),
        "target": lambda: None,
        "attribution": lambda: torch.rand(like.shape, generator=g),
        "segments": lambda: _grid_segments(like),
        "layer": lambda: xc.guide.last_conv(model),
        "layers": lambda: [xc.guide.last_conv(model)],
        "channel": lambda: 0,
        "occluder": lambda: torch.rand(like.shape[1:] if like.ndim == good_x.ndim else like.shape, generator=g),
        "background": lambda: like,
        "shift": lambda: 0.1,
        "decoder": lambda: _shipped("decoder_shapes_cnn_features.10"),
        "attack": lambda: _shipped("attack_shapes_cnn_top1"),
        "auxiliary": lambda: xc.data.shapes(8, seed=5),
        "random": lambda: like.flip(0),  # concept examples against "random" ones (TCAV)
        "concept": lambda: like,
        "randoms": lambda: [like.flip(0), like * 0.5],
        "direction": lambda: xc.concepts.cav(model, good_x, good_x * 0.5, layer=xc.guide.last_conv(model)),
    }
    parameters = inspect.signature(METHODS[name]).parameters
    required = lambda p, v: v.default is v.empty or p == "segments"  # segments=None: only for table rows
    kwargs = {p: needed[p]() for p, v in parameters.items() if p not in ("model", "x") and required(p, v)
              and v.kind is not v.VAR_KEYWORD}  # fmt: skip
    if any(v.kind is v.VAR_KEYWORD for v in parameters.values()):
        kwargs.update(steps=2)
    kwargs.update({p: v for p, v in FAST.items() if p in parameters and type(parameters[p].default) is type(v)})
    return {"model": model, "x": x, **kwargs}


def _call(name: str, arguments: dict):
    return METHODS[name](**arguments)


def _tensors(result) -> list[torch.Tensor]:
    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, (tuple, list)):
        return [t for r in result for t in _tensors(r)]
    if isinstance(result, dict):
        return [t for r in result.values() for t in _tensors(r)]
    if hasattr(result, "__dataclass_fields__"):
        return [t for f in result.__dataclass_fields__ for t in _tensors(getattr(result, f))]
    return []


def _names(error: Exception, argument: str) -> bool:
    """Whether the message opens with the argument's name, "x: expected ..." (or "low, high: ...")."""
    return re.match(rf"[\w, ]*\b{re.escape(argument)}\b[\w, ]*: ", str(error)) is not None


def _assert_clear(name: str, arguments: dict, argument: str, model: nn.Module) -> None:
    """The call raises a ValueError or TypeError naming ``argument``, and leaves the model as it was."""
    before = state_of(model)
    with pytest.raises((ValueError, TypeError)) as info:
        _call(name, arguments)
    assert _names(info.value, argument), f"{name}: the error does not name {argument!r}: {info.value!r}"
    assert_unchanged(before, model)


BAD_X = {
    "wrong channels": lambda x: torch.cat([x, x], dim=1),
    "wrong size": lambda x: x[..., :40, :40],
    "one sample of the wrong rank": lambda x: x[0, 0],
    "one channel as one sample": lambda x: x[0, :1],
    "NaN": lambda x: x.clone().fill_(math.nan),
    "integer": lambda x: (x * 255).long(),
    "a list": lambda x: x.tolist(),
}


@pytest.mark.parametrize("case", BAD_X)
@pytest.mark.parametrize("name", METHODS)
def test_an_x_that_does_not_fit_gets_a_clear_error(name, case, base, x):
    bad = BAD_X[case](x)
    arguments = _arguments(name, base, bad, x)
    partial = case == "wrong size" and "target" not in inspect.signature(METHODS[name]).parameters
    if partial or _model_takes(base, bad):  # a method that stops at a convolution; a fully convolutional model
        try:
            result = _call(name, arguments)
        except (ValueError, TypeError) as error:
            assert _names(error, "x"), f"{name}: {error!r}"
        else:
            assert all(torch.isfinite(t).all() for t in _tensors(result) if t.is_floating_point()), name
        return
    _assert_clear(name, arguments, "x", base)


def _model_takes(model: nn.Module, x) -> bool:
    """Whether the model itself runs on the finite float tensor ``x`` (one sample or a batch)."""
    if not (isinstance(x, torch.Tensor) and x.is_floating_point() and torch.isfinite(x).all()):
        return False
    try:
        with torch.no_grad():
            xc.core.predict(model, x if x.ndim == 1 + xc.core.sample_ndim(model, x) else x[None])
        return True
    except (RuntimeError, ValueError, TypeError):
        return False


def _not_logits(base):
    return {
        "a tuple": _variant(base, lambda self, z, f: (f(z), z)),
        "1-D logits": _variant(base, lambda self, z, f: f(z)[:, 0]),
    }


@pytest.mark.parametrize("case", ["a tuple", "1-D logits"])
@pytest.mark.parametrize("name", METHODS)
def test_a_model_without_logits_gets_a_clear_error_or_is_not_needed(name, case, base, x):
    model = _not_logits(base)[case]
    arguments = _arguments(name, model, x, x)
    before = state_of(model)
    try:
        result = _call(name, arguments)
    except (ValueError, TypeError, NotImplementedError) as error:
        assert _names(error, "model"), f"{name}: {error!r}"
    else:  # only methods that never read the logits may succeed
        assert "target" not in inspect.signature(METHODS[name]).parameters, f"{name} returned {type(result)}"
        assert all(torch.isfinite(t).all() for t in _tensors(result) if t.is_floating_point())
    assert_unchanged(before, model)


def _no_grad_model(base):
    def forward(self, z, f):
        with torch.no_grad():
            return f(z)

    return _variant(base, forward)


@pytest.mark.parametrize("name", METHODS)
def test_a_model_without_gradients_gets_a_clear_error_or_the_same_answer(name, base, x):
    model = _no_grad_model(base)
    before = state_of(model)
    try:
        result = _call(name, _arguments(name, model, x, x))
    except (ValueError, TypeError, NotImplementedError) as error:
        assert _names(error, "model"), f"{name}: {error!r}"
    else:
        expected = _call(name, _arguments(name, base, x, x))
        for a, b in zip(_tensors(result), _tensors(expected), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, equal_nan=True, msg=name)
    assert_unchanged(before, model)


BAD_TARGETS = [99, -5, "circle", 1.5, torch.tensor([0.5, 1.0]), torch.tensor([0, 1, 2])]


@pytest.mark.parametrize("target", BAD_TARGETS, ids=repr)
@pytest.mark.parametrize("name", [n for n, f in METHODS.items() if "target" in inspect.signature(f).parameters])
def test_a_bad_target_gets_a_clear_error(name, target, base, x):
    arguments = _arguments(name, base, x, x)
    arguments["target"] = target
    _assert_clear(name, arguments, "target", base)


def _tunable(function) -> list[str]:
    """Keyword parameters with a number or a string as default: the settings a student types."""
    return [p for p, v in inspect.signature(function).parameters.items()
            if isinstance(v.default, (int, float, str)) and not isinstance(v.default, bool)]  # fmt: skip


SETTINGS = [(n, p) for n, f in METHODS.items() for p in _tunable(f)]


@pytest.mark.parametrize("bad", BAD_VALUES)
@pytest.mark.parametrize("name, parameter", SETTINGS, ids=[f"{n}-{p}" for n, p in SETTINGS])
def test_a_bad_setting_gets_a_clear_error(name, parameter, bad, base, x):
    arguments = _arguments(name, base, x, x)
    value = BAD_VALUES[bad]
    tensors = {"nan tensor": torch.full(x.shape[1:], math.nan), "short": torch.zeros(5)}
    arguments[parameter] = tensors.get(value, value)
    _assert_clear(name, arguments, parameter, base)


ATTRIBUTIONS = [  # method(model, x, target=None, ...)
    n for n, f in METHODS.items()
    if list(inspect.signature(f).parameters)[:3] == ["model", "x", "target"]
    and inspect.signature(f).parameters["target"].default is None
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ATTRIBUTIONS)
def test_an_attribution_is_an_ordinary_tensor(name, dtype, base, x):
    model = copy.deepcopy(base).to(dtype)
    x = x.to(dtype)
    kept = x.clone()
    result = _call(name, _arguments(name, model, x, x))
    maps = _tensors(result)
    assert maps and maps[0].shape == x.shape and maps[0].dtype == dtype, name
    for a in maps:
        assert torch.isfinite(a).all(), name
        assert a.untyped_storage().data_ptr() != x.untyped_storage().data_ptr(), name
        a.add_(0)  # raises for an expanded view, whose elements share memory
        assert 0 not in a.stride() or a.numel() <= 1, f"{name}: stride {a.stride()}"
    assert torch.equal(x, kept)


def _first_relu(base, inplace: bool):
    return _variant(base, lambda self, z, f: f(self.first(z)), first=nn.ReLU(inplace=inplace))


@pytest.mark.parametrize("name", METHODS)
def test_an_inplace_first_relu_gives_the_same_answer_as_its_twin(name, base, x):
    x = x - 0.25  # some negative inputs, so that the first ReLU matters
    inplace, twin = _first_relu(base, True), _first_relu(base, False)
    kept, before = x.clone(), state_of(inplace)
    arguments = _arguments(name, inplace, x, x)
    if "background" in arguments:
        arguments["background"] = x.clone()
    try:
        result = _call(name, arguments)
    except (ValueError, TypeError, NotImplementedError) as error:  # then the twin is refused the same way
        with pytest.raises(type(error)):
            _call(name, {**arguments, "model": twin})
    else:
        expected = _call(name, {**arguments, "model": twin})
        for a, b in zip(_tensors(result), _tensors(expected), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, equal_nan=True, msg=name)
    assert torch.equal(x, kept), f"{name} wrote into x"
    assert_unchanged(before, inplace)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_maps_once_returned_as_views_are_writable(dtype):
    """sliding_window(window=16, stride=16), overlay, and RISE/SIDU in float64 used to return an expanded view:
    a.mul_(2) raised and writing one value changed three channels."""
    model, x = xc.models.load("shapes_cnn").to(dtype), xc.data.canonical(1).images.to(dtype)
    maps = [
        xc.occlusion.sliding_window(model, x, window=16, stride=16),
        xc.occlusion.overlay(model, x, occluder=x.flip(-1), window=16, stride=16),
        xc.occlusion.rise(model, x, n_masks=16),
        xc.occlusion.sidu(model, x, layer="features"),
    ]
    for a in maps:
        a.mul_(2)
        a[0, 0, 0, 0] = 12345.0
        assert (a == 12345.0).sum() == 1


OTHER_WORLDS = {  # other architectures and inputs: a residual network, a multilayer perceptron on a table
    "residual": (lambda: xc.models.load("shapes_resnet"), lambda: xc.data.canonical(2).images),
    "table": (lambda: xc.models.load("loan_mlp"), lambda: xc.data.loans(2, seed=4).features),
}


@pytest.mark.parametrize("world", OTHER_WORLDS)
@pytest.mark.parametrize("name", METHODS)
def test_other_models_and_inputs_get_the_same_contract(name, world):
    """The core of the sweep on a residual network and on a table: a method either refuses the kind of input
    clearly or runs, and then answers a bad x, a model without logits and a bad target with clear errors."""
    load_model, load_x = OTHER_WORLDS[world]
    model, x = load_model(), load_x()
    try:
        _call(name, _arguments(name, model, x, x))
    except (ValueError, TypeError, NotImplementedError) as refusal:
        assert re.match(r"[\w, ]+: ", str(refusal)), f"{name} on {world}: {refusal!r}"
        return
    signature = inspect.signature(METHODS[name]).parameters
    for case, make in BAD_X.items():
        bad = make(x)
        partial = case == "wrong size" and "target" not in signature
        if not (partial or _model_takes(model, bad)):
            _assert_clear(name, _arguments(name, model, bad, x), "x", model)
    for case, variant in _not_logits(model).items():
        try:
            _call(name, _arguments(name, variant, x, x))
        except (ValueError, TypeError, NotImplementedError) as error:
            assert _names(error, "model"), f"{name} on {world}, {case}: {error!r}"
        else:
            assert "target" not in signature, f"{name} on {world} took a model returning {case}"
    if "target" in signature:
        for target in BAD_TARGETS[:4]:
            _assert_clear(name, {**_arguments(name, model, x, x), "target": target}, "target", model)
