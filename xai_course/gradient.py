"""The plain gradient (saliency) and gradient x input: the baselines every chapter compares with.

Saliency (Simonyan, Vedaldi & Zisserman 2014) is the derivative of the target's
logit S_c with respect to each input value; gradient x input multiplies it by the
input, a first-order Taylor term that sums to S_c(x) for a bias-free ReLU network.
Introduced in chapter 00.
"""

from __future__ import annotations

import torch

from .core import Target, contract, output_like, target_gradient


@contract(signed=lambda abs: not abs, needs="gradients", random=False)  # |gradient| unsigned, the gradient signed
def saliency(model, x, target: Target = None, *, abs: bool = True) -> torch.Tensor:
    """Gradient of the target logit with respect to the input.

    With ``abs=True`` (Simonyan et al.) the magnitude |dS_c/dx|; with ``abs=False``
    the signed gradient. Same shape as ``x``. Chapter 00.
    """
    x, grad, unbatched = target_gradient(model, x, target)
    return output_like(grad.abs() if abs else grad, x, unbatched)


@contract(signed=True, needs="gradients", random=False)
def gradient_x_input(model, x, target: Target = None) -> torch.Tensor:
    """Gradient of the target logit times the input, x * dS_c/dx. Same shape as ``x``. Chapter 00.
    """
    x, grad, unbatched = target_gradient(model, x, target)
    return output_like(grad * x, x, unbatched)
