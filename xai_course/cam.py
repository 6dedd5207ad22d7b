"""Class activation maps: a layer's feature maps, weighted by the gradient of the target's logit.

A convolutional layer's output A (N, K, h, w) holds K feature maps A_k; g_k = dS_c / dA_k is the gradient of
the target logit S_c with respect to them. Both methods sum the maps with one weight per map, keep the positive
part and upsample the coarse map (h, w) to the input's size:

- **Grad-CAM** (Selvaraju et al. 2017): alpha_k = 1 / (h w) sum_ij g_k,ij, L = ReLU(sum_k alpha_k A_k).
- **Grad-CAM++** (Chattopadhay, Sarkar, Howlader & Balasubramanian 2018) weights each position by
  a_k,ij = g_k,ij^2 / (2 g_k,ij^2 + sum_ab A_k,ab g_k,ij^3): w_k = sum_ij a_k,ij ReLU(g_k,ij),
  L = ReLU(sum_k w_k A_k).
  This is the paper's closed form for the score Y_c = exp(S_c) behind a network that is piecewise linear after
  the layer (ReLU, max-pooling, linear layers: the second and third derivatives of S_c vanish), whose
  derivatives are then exp(S_c) g, exp(S_c) g^2 and exp(S_c) g^3. The factor exp(S_c) cancels in a and, in the
  weights, scales the whole map: it is left out, as the ``grad-cam`` package does, so the map is the paper's
  divided by exp(S_c). a is 0 where g is 0 or its denominator vanishes.

The upsampling is bilinear (linear for series) with ``align_corners=False``, the half-pixel convention of Captum's
``LayerAttribution.interpolate`` and OpenCV's ``resize``. ``last_feature_map`` picks a default layer by a rule.
Introduced in chapter 10.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backward import modified
from .core import Target, check_input, contract, describe, model_guard, output_like, sample_ndim
from .layers import gradients


def _is_feature_map(a, x: torch.Tensor) -> bool:
    """Whether ``a`` is a feature map (N, K, *spatial) with the spatial dimensions of ``x`` and more than one
    position."""
    return isinstance(a, torch.Tensor) and a.ndim == x.ndim and a.shape[2:].numel() > 1


@contract
def last_feature_map(model, x) -> str:
    """The name of the last layer whose output is a feature map: Grad-CAM's default layer.

    One sample of ``x`` runs through the model; among the sub-modules run once, the one that
    finishes last with an output (1, K, *spatial) like x's, of more than one position (a 1 x 1
    map after global pooling does not count). For ``ShapesCNN`` it is ``"features"``, for
    ``ShapesResNet`` its last block ``"layer3"``. Chapter 10.
    """
    x, _ = check_input(model, x)
    finished = []  # (name, output) in the order the modules finish
    record = {m: (lambda m, args, out, name=name: finished.append((name, out)))
              for name, m in model.named_modules() if m is not model}  # fmt: skip
    with model_guard(model), torch.no_grad(), modified(model, record):
        model(x[:1])
    calls = [name for name, _ in finished]
    found = [name for name, out in finished if _is_feature_map(out, x) and calls.count(name) == 1]
    if not found:
        layout = "(N, K, H, W)" if x.ndim == 4 else "(N, K, L)"
        raise ValueError(
            f"model: expected a layer whose output is a feature map {layout} with more than one "
            f"position, like x {describe(x)}; {type(model).__name__} has none"
        )
    return found[-1]


def _maps_and_gradients(
    model, x: torch.Tensor, target, layer
) -> tuple[torch.Tensor, bool, torch.Tensor, torch.Tensor]:
    """x batched, whether it came unbatched, A, the output of ``layer``, and dS_c/dA (``layers.gradients``,
    which checks x); a clear error unless A is a feature map."""
    a, g, _ = gradients(model, x, layer, target)
    unbatched = x.ndim == sample_ndim(model, x)
    x = x.unsqueeze(0) if unbatched else x
    if not _is_feature_map(a, x):
        layout = "(N, K, H, W)" if x.ndim == 4 else "(N, K, L)"
        raise ValueError(
            f"layer: expected a layer whose output is a feature map {layout} with more than one position, "
            f"got {layer if isinstance(layer, str) else type(layer).__name__!r}: {describe(a)}; "
            "cam.last_feature_map picks one"
        )
    return x, unbatched, a, g


def _upsampled(coarse: torch.Tensor, x: torch.Tensor, unbatched: bool) -> torch.Tensor:
    """The coarse map (N, 1, h, w) resized to x's positions, the same on every channel, shaped like x."""
    mode = "bilinear" if x.ndim == 4 else "linear"
    fine = F.interpolate(coarse, size=x.shape[2:], mode=mode, align_corners=False)
    return output_like(fine.expand_as(x), x, unbatched)


@contract(signed=False, needs="layers", random=False)
def grad_cam(model: nn.Module, x: torch.Tensor, target: Target = None, *, layer) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017): ReLU(sum_k alpha_k A_k), alpha_k the mean of dS_c/dA_k.

    ``layer`` is a sub-module of ``model`` or its name (``layers.names``), run once, whose output
    is a feature map A (N, K, h, w) (or (N, K, l) for series); the paper uses the last
    convolutional layer (``last_feature_map``). The coarse map is upsampled bilinearly (linearly
    for series) with ``align_corners=False`` to x's size, the same map on every channel. Equal to
    Captum's ``LayerGradCam`` with ``relu_attributions=True`` followed by
    ``LayerAttribution.interpolate(..., "bilinear")``, and to the ``grad-cam`` package's
    ``GradCAM``, which also scales each map to [0, 1] (min-max) and resizes it with OpenCV's
    ``resize`` (the same half-pixel convention). Chapter 10.
    """
    x, unbatched, a, g = _maps_and_gradients(model, x, target, layer)
    alpha = g.mean(dim=tuple(range(2, a.ndim)), keepdim=True)
    return _upsampled((alpha * a).sum(1, keepdim=True).relu(), x, unbatched)


def plus_plus_weights(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++'s weights w_k = sum_ij a_k,ij ReLU(g_k,ij), shape (N, K, 1, 1), from the feature
    maps ``a`` and the gradient ``g`` of the target logit with respect to them (module docstring).
    Chapter 10."""
    spatial = tuple(range(2, a.ndim))
    g2 = g * g
    denominator = 2 * g2 + a.sum(spatial, keepdim=True) * g2 * g
    alpha = torch.where((g != 0) & (denominator != 0), g2 / denominator, 0.0)
    return (alpha * g.relu()).sum(spatial, keepdim=True)


@contract(signed=False, needs="layers", random=False)
def grad_cam_plus_plus(model: nn.Module, x: torch.Tensor, target: Target = None, *, layer):
    """Grad-CAM++ (Chattopadhay et al. 2018): ReLU(sum_k w_k A_k) with ``plus_plus_weights``.

    ``layer`` and the upsampling as in ``grad_cam``. The weights are the paper's closed form for a
    network piecewise linear after the layer, without the common factor exp(S_c) (module
    docstring); equal to the ``grad-cam`` package's ``GradCAMPlusPlus`` before its min-max scaling
    and resizing, up to the 1e-6 it adds to the denominator. Chapter 10.
    """
    x, unbatched, a, g = _maps_and_gradients(model, x, target, layer)
    return _upsampled((plus_plus_weights(a, g) * a).sum(1, keepdim=True).relu(), x, unbatched)
