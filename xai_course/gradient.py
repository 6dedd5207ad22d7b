"""The plain gradient (saliency) and gradient x input: the baselines every chapter compares with.

Saliency (Simonyan, Vedaldi & Zisserman 2014) is the derivative of the target's
logit S_c with respect to each input value; gradient x input multiplies it by the
input, a first-order Taylor term that sums to S_c(x) for a bias-free ReLU network.
Introduced in chapter 00.
"""

from __future__ import annotations

import contextlib

import torch

from .core import check_differentiable, check_input, check_model, contract, model_guard, output_like, resolve_target


def _target_gradient(model, x, target, forward_mode=None) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """The batched input, the gradient of the target logit with respect to it, and whether x came unbatched.

    The model is evaluated in eval mode; the guard puts its flags back afterwards. ``forward_mode``, a
    context manager entered around the forward pass, lets a method change the backward pass of some
    operations (the deconvnet's ReLU rules).
    """
    check_model(model)
    x, unbatched = check_input(model, x)
    with model_guard(model):
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        with torch.enable_grad():
            inputs = x.requires_grad_(True)  # check_input's copy
            with forward_mode or contextlib.nullcontext():
                logits = model(inputs.clone())  # a model may write into its input; a leaf cannot be
            target = resolve_target(target, logits)
            check_differentiable(logits)
            score = logits.gather(1, target.unsqueeze(1)).sum()
            (grad,) = torch.autograd.grad(score, inputs)
    return x.detach(), grad, unbatched


@contract(signed=lambda abs: not abs)  # |gradient| is unsigned, the gradient signed
def saliency(model, x, target=None, *, abs: bool = True) -> torch.Tensor:
    """Gradient of the target logit with respect to the input.

    With ``abs=True`` (Simonyan et al.) the magnitude |dS_c/dx|; with ``abs=False``
    the signed gradient. Same shape as ``x``. Chapter 00.
    """
    x, grad, unbatched = _target_gradient(model, x, target)
    return output_like(grad.abs() if abs else grad, x, unbatched)


@contract(signed=True)
def gradient_x_input(model, x, target=None) -> torch.Tensor:
    """Gradient of the target logit times the input, x * dS_c/dx. Same shape as ``x``. Chapter 00."""
    x, grad, unbatched = _target_gradient(model, x, target)
    return output_like(grad * x, x, unbatched)
