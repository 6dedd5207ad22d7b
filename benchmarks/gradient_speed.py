"""Speed of ``cam.grad_cam``, ``gradient.integrated_gradients`` and ``gradient.smoothgrad`` against Captum.

Both libraries explain the same classes of the same course images with ShapesCNN (the shipped weights if present,
else a random initialisation) at the same settings:

- Grad-CAM at the layer ``features``: Captum's ``LayerGradCam`` (``relu_attributions=True``) followed by
  ``LayerAttribution.interpolate(..., "bilinear")``; 1, 8 and 32 images.
- Integrated Gradients from a black baseline, 50 steps of the Gauss-Legendre rule (Captum's default; the rules
  cost the same), 64 inputs per pass: 64 // N whole steps of the N images (Captum: ``internal_batch_size=64``,
  which it splits the same way); 1 and 8 images.
- SmoothGrad, 50 noisy copies at 15 % noise, 64 inputs per pass (Captum: ``NoiseTunnel(Saliency(model))`` with
  ``abs=False``, ``nt_samples_batch_size=64 // N``); 1 and 8 images.

Before timing, each case is checked: the two maps agree within 1e-5 of the reference's largest value, in float64
(in float32 the last bit of an input can move this ReLU network's gradient across a kink, see
tests/test_integrated_gradients.py); SmoothGrad in float32 given the same noise (Captum draws float32 noise; one
draw of all images per pass, its global generator seeded like ours, so the noisy inputs are the same). Then both
are timed in float32, alternately (median of ``--repeats`` after one warm-up call each). The requirement is
time(ours) / time(Captum) <= 1.0. Run with ``OMP_NUM_THREADS=1``:
``python benchmarks/gradient_speed.py``.
"""

from __future__ import annotations

import argparse
import functools
import sys
import warnings

import torch
from _common import alternating_medians, course_model, relative_error
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel, Saliency

from xai_course import cam, data, gradient

STEPS, BATCH = 50, 64  # IG steps and SmoothGrad copies; inputs per forward and backward pass
CASES = [("grad_cam", 1), ("grad_cam", 8), ("grad_cam", 32), ("integrated_gradients", 1),
         ("integrated_gradients", 8), ("smoothgrad", 1), ("smoothgrad", 8)]  # fmt: skip


def ours(name: str, model, x, target, same_noise: bool = False) -> torch.Tensor:
    if name == "grad_cam":
        return cam.grad_cam(model, x, target, layer="features")
    if name == "integrated_gradients":
        return gradient.integrated_gradients(model, x, target, steps=STEPS, method="gausslegendre", batch_size=BATCH)
    return gradient.smoothgrad(model, x, target, n=STEPS, seed=0, batch_size=len(x) if same_noise else BATCH)


def captum(name: str, model, x, target, same_noise: bool = False) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Captum announces its hooks
        if name == "grad_cam":
            coarse = LayerGradCam(model, model.features).attribute(x, target=target, relu_attributions=True)
            return LayerAttribution.interpolate(coarse, tuple(x.shape[2:]), "bilinear").expand_as(x)
        if name == "integrated_gradients":
            return IntegratedGradients(model).attribute(
                x, target=target, n_steps=STEPS, method="gausslegendre", internal_batch_size=BATCH
            )
        stdev = 0.15 * (x.max() - x.min()).item()  # one image's, or a batch whose images share their range
        torch.manual_seed(0)
        per_pass = 1 if same_noise else max(1, BATCH // len(x))
        return NoiseTunnel(Saliency(model)).attribute(
            x, target=target, nt_samples=STEPS, nt_samples_batch_size=per_pass, stdevs=stdev, abs=False
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads (set OMP_NUM_THREADS to change)")
    model = course_model()
    x = data.shapes(32, seed=0).images
    low, high = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
    x = (x - low) / (high - low)  # every image spans [0, 1]: Captum's one stdev is each image's 15 % of its range
    with torch.no_grad():
        target = model(x).argmax(1)  # given to both, so neither needs an extra forward pass
    model64, x64 = course_model().double(), x.double()
    print(f"median of {args.repeats}; error: largest difference / largest reference value")
    print(f"{'case':28s} {'ours (s)':>9s} {'Captum (s)':>11s} {'ratio':>6s} {'error':>9s}")
    worst = 0.0
    for name, n in CASES:
        m, inputs = (model, x[:n]) if name == "smoothgrad" else (model64, x64[:n])  # Captum's noise is float32
        error = relative_error(ours(name, m, inputs, target[:n], True), captum(name, m, inputs, target[:n], True))
        assert error < 1e-5, f"{name}, {n} images: ours and Captum disagree ({error:.1e})"
        run = {f: functools.partial(f, name, model, x[:n], target[:n]) for f in (ours, captum)}
        t_ours, t_captum = alternating_medians(run[ours], run[captum], args.repeats)
        worst = max(worst, t_ours / t_captum)
        print(f"{f'{name}, {n} images':28s} {t_ours:9.4f} {t_captum:11.4f} {t_ours / t_captum:6.2f} {error:9.1e}")
    print(f"largest ratio ours / Captum = {worst:.2f} (requirement <= 1.0: {'met' if worst <= 1.0 else 'NOT met'})")
    return 0 if worst <= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
