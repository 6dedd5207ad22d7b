"""Explanations from several threads at once: results equal to sequential runs, models unchanged afterwards.

Widgets, data loaders and servers call the package from threads. Each method guards the model it explains
(``core.model_guard``) and holds ``core.EXPLAINING`` while it does, so that two threads never see each other's
hooks, frozen parameters or eval mode. Nothing outside the model is patched: forward passes of other models
in other threads run undisturbed beside every method. Chapter 00.
"""

from __future__ import annotations

import threading

import pytest
import torch

import xai_course as xc
from xai_course import deconvnet, deep_taylor, gradient, lrp, occlusion, shap

THREADS, ROUNDS = 4, 3


def _state(model: torch.nn.Module) -> dict:
    """Everything an explanation may change temporarily: values, flags, hooks."""
    return {
        "values": {k: v.clone() for k, v in model.state_dict().items()},
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "inplace": [getattr(m, "inplace", None) for m in model.modules()],
        "hooks": [len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()],
    }


def _assert_same_state(before: dict, after: dict) -> None:
    assert before["values"].keys() == after["values"].keys()
    for k, v in before["values"].items():
        assert torch.equal(v, after["values"][k]), k
    for key in ("requires_grad", "grads", "training", "inplace", "hooks"):
        assert before[key] == after[key], key


@pytest.fixture(scope="module")
def world():
    torch.manual_seed(0)
    cnn = xc.models.load("shapes_cnn")
    resnet = xc.models.load("shapes_resnet")
    x = xc.data.canonical().images[:2]
    background = xc.data.shapes(8, split="train", seed=3).images
    methods = {
        "saliency": lambda m: gradient.saliency(m, x),
        "gradient x input": lambda m: gradient.gradient_x_input(m, x),
        "deep shap": lambda m: shap.deep(m, x, background=background),
        "sliding window": lambda m: occlusion.sliding_window(m, x, window=16, stride=16),
        "rise": lambda m: occlusion.rise(m, x, n_masks=32, seed=1),
        "guided backprop": lambda m: deconvnet.guided_backprop(m, x),
    }
    canonical = lrp.canonize(resnet)  # LRP needs its BatchNorm merged; a second model of its own
    methods["lrp"] = lambda m: lrp.explain(canonical if m is resnet else m, x)
    methods["deep taylor"] = lambda m: deep_taylor.explain(m, x)  # no rule for the ResNet's BatchNorm
    return cnn, resnet, methods


def _run_threads(jobs: list) -> list:
    """Run every (model, method) job in each of THREADS threads, ROUNDS times; the results and errors."""
    results, errors = [], []
    start = threading.Barrier(THREADS)

    def work() -> None:
        start.wait()
        try:
            for _ in range(ROUNDS):
                for name, model, method in jobs:
                    results.append((name, model, method(model)))
        except Exception as error:  # noqa: BLE001 - reported by the test
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


def _check(jobs: list, models: list) -> None:
    before = [_state(m) for m in models]
    expected = {(name, id(model)): method(model) for name, model, method in jobs}  # sequential
    for name, model, result in _run_threads(jobs):
        want = expected[name, id(model)]
        torch.testing.assert_close(result, want, rtol=1e-4, atol=1e-5 * want.abs().max().item(), msg=name)
    for model, state in zip(models, before):
        _assert_same_state(state, _state(model))


def test_every_method_on_one_model_from_several_threads(world):
    cnn, _, methods = world
    _check([(name, cnn, method) for name, method in methods.items()], [cnn])


def test_two_models_from_several_threads(world):
    cnn, resnet, methods = world
    both = {name: method for name, method in methods.items() if name != "deep taylor"}
    jobs = [(name, model, method) for name, method in both.items() for model in (cnn, resnet)]
    _check(jobs, [cnn, resnet])


def test_forward_passes_of_another_model_beside_explanations(world):
    cnn, resnet, methods = world
    x = xc.data.canonical().images[:4]
    with torch.no_grad():
        want = resnet(x)
    outputs, stop = [], threading.Event()

    def forward() -> None:
        while not stop.is_set():
            with torch.no_grad():
                outputs.append(resnet(x))

    thread = threading.Thread(target=forward)
    thread.start()
    try:
        _check([(name, cnn, method) for name, method in methods.items()], [cnn])
    finally:
        stop.set()
        thread.join()
    assert outputs
    for out in outputs:
        torch.testing.assert_close(out, want)
