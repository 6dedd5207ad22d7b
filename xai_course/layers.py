"""The output of a layer: the one place where the methods reach inside a model.

A layer is a sub-module of the model, named as in ``model.named_modules()`` ("features.3"). Its output
phi(x) is caught by a forward hook (``backward.modified``): ``output`` keeps gradients and stops the
forward pass at the layer (inversion, chapter 04; the fuzzy head, chapter 05), ``features`` detaches it,
``feature_maps`` runs the whole model in batches and returns the logits with the layer's output (SIDU,
chapter 03; dissection, chapter 05); ``gradients`` adds the gradient of the target's logit with respect to
that output (Grad-CAM and concept sensitivities, chapter 10). Introduced in chapter 03.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from .backward import modified
from .core import (
    Target,
    check_differentiable,
    check_input,
    check_logits,
    check_model,
    contract,
    describe,
    model_guard,
    predict,
    resolve_target,
)


def names(model: nn.Module) -> list[str]:
    """The names a ``layer`` argument accepts: every sub-module of ``model``. Chapter 03."""
    check_model(model)
    return [name for name, _ in model.named_modules() if name]


def submodule(model: nn.Module, layer) -> nn.Module:
    """The sub-module ``layer`` (its name, or the module itself), or a clear error listing the names. Chapter 03."""
    if isinstance(layer, nn.Module) and any(layer is m for m in model.modules()):
        return layer
    if isinstance(layer, str) and layer:
        with contextlib.suppress(AttributeError):  # not a name of a sub-module
            return model.get_submodule(layer)
    expected = f"expected the name of a sub-module of model, one of {names(model)}, or the sub-module"
    if isinstance(layer, str):
        raise ValueError(f"layer: {expected}, got {layer!r}")
    raise TypeError(f"layer: {expected}, got {describe(layer)}")


class _Caught(Exception):
    """Raised by the hook of ``output``: it carries the layer's output and stops the forward pass."""

    def __init__(self, phi):
        super().__init__()
        self.phi = phi


@contract
def output(model, x, layer) -> torch.Tensor:
    """phi(x), the output of ``layer`` at its first call, the rest of the forward pass skipped.

    Gradients are kept and the model is used as it is (no guard; ``features`` has one): for use inside
    a larger computation, such as an optimization over x. Chapter 04.
    """
    module = submodule(model, layer)
    check_input(model, x.detach() if isinstance(x, torch.Tensor) else x)

    def catch(m, args, phi):
        raise _Caught(phi)

    try:
        with modified(model, {module: catch}):
            model(x.clone())  # a copy: a model may write into its input (an in-place ReLU first)
    except _Caught as caught:
        if not isinstance(caught.phi, torch.Tensor):
            raise NotImplementedError(f"layer {layer}: returns {describe(caught.phi)}; expected one tensor") from None
        return caught.phi
    raise ValueError(f"layer: {layer!r} is never called in the model's forward pass")


@contract
def features(model, x, layer) -> torch.Tensor:
    """phi(x), the output of ``layer`` on ``x``, detached (model in eval mode, left unchanged). Chapter 04."""
    submodule(check_model(model), layer)
    x, unbatched = check_input(model, x)
    with model_guard(model), torch.no_grad():
        phi = output(model, x, layer).detach()
    return phi[0] if unbatched else phi


@contract
def feature_maps(model, x, layer, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits of ``model`` on ``x`` and the output of ``layer``, in batches of ``batch_size``.

    The layer must run once per forward pass and return maps (N, K, *spatial) like x. Chapter 03.
    """
    module = submodule(check_model(model), layer)
    x, _ = check_input(model, x)
    caught = []
    # a copy: a later in-place operation (ReLU(inplace=True), out += identity) would change the output kept
    catch = lambda m, args, phi: caught.append(phi.clone() if isinstance(phi, torch.Tensor) else phi)  # noqa: E731
    with model_guard(model), torch.no_grad(), modified(model, {module: catch}):
        logits = predict(model, x, batch_size)
    if len(caught) != math.ceil(x.shape[0] / batch_size):
        raise ValueError(f"layer: expected a layer run once per forward pass, got one run {len(caught)} times")
    if not all(isinstance(a, torch.Tensor) and a.ndim == x.ndim for a in caught):
        raise ValueError(f"layer: expected an output of shape (N, K, *spatial) like x's, got {describe(caught[0])}")
    return logits, torch.cat(caught)


@contract
def gradients(model, x, layer, target: Target = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """phi(x), the output of ``layer`` (run once), the gradient dS_c/dphi of the target's logit, and the target.

    phi is kept as a new leaf of the autograd graph (nothing before the layer is differentiated) and the
    forward pass goes on with a copy, so that a later in-place operation cannot change it. Chapter 10.
    """
    module = submodule(check_model(model), layer)
    x, _ = check_input(model, x)
    kept = []

    def keep(m, args, phi):
        kept.append(phi.detach().requires_grad_(True) if isinstance(phi, torch.Tensor) else phi)
        return kept[-1].clone() if isinstance(phi, torch.Tensor) else None

    with model_guard(model), torch.enable_grad(), modified(model, {module: keep}):
        logits = check_logits(model(x))
        target = resolve_target(target, logits)
        if len(kept) != 1 or not isinstance(kept[0], torch.Tensor):
            got = f"one run {len(kept)} times" if len(kept) != 1 else f"one returning {describe(kept[0])}"
            raise ValueError(f"layer: expected a layer run once per forward pass that returns a tensor, got {got}")
        check_differentiable(logits)
        (grad,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), kept, allow_unused=True)
    if grad is None:
        raise ValueError(f"layer: expected a layer the logits depend on, got {layer!r}")
    return kept[0].detach(), grad, target
