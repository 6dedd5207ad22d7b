"""Speed of ``deconvnet.deconvnet`` and ``deconvnet.guided_backprop`` against Captum, on 32 course images.

For each method, both libraries explain the predicted class (given to both) of the same 32 images with ShapesCNN
(the shipped weights if present, else a random initialisation); their maps are first checked to agree (largest
absolute difference below 1e-6), then both are timed alternately (median of ``--repeats``, after one warm-up call
each).
The requirement is time(ours) / time(Captum) <= 1.0 for both. Run: ``python benchmarks/deconvnet_speed.py``.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import torch
from _common import alternating_medians, course_model
from captum.attr import Deconvolution, GuidedBackprop

from xai_course import data, deconvnet

N_IMAGES = 32
METHODS = {
    "deconvnet": (deconvnet.deconvnet, Deconvolution),
    "guided_backprop": (deconvnet.guided_backprop, GuidedBackprop),
}


def captum_explain(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, method: type) -> torch.Tensor:
    """Captum's map for ``target``, the explainer built per call, as ours is."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Captum announces its hooks
        return method(model).attribute(x, target=target)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads (set OMP_NUM_THREADS to change)")
    model = course_model()
    x = data.shapes(N_IMAGES, seed=0).images
    with torch.no_grad():
        target = model(x).argmax(1)  # given to both, so neither needs an extra forward pass
    print(f"{N_IMAGES} images, median of {args.repeats}:")
    print(f"{'method':16s} {'ours (s)':>9s} {'Captum (s)':>10s} {'ratio':>6s} {'max |diff|':>10s}")
    worst = 0.0
    for name, (ours, theirs) in METHODS.items():
        error = (ours(model, x, target) - captum_explain(model, x, target, theirs)).abs().max().item()
        assert error < 1e-6, f"{name}: ours and Captum disagree (largest difference {error:.2e})"
        t_ours, t_theirs = alternating_medians(
            lambda f=ours: f(model, x, target), lambda m=theirs: captum_explain(model, x, target, m), args.repeats
        )
        worst = max(worst, t_ours / t_theirs)
        print(f"{name:16s} {t_ours:9.4f} {t_theirs:10.4f} {t_ours / t_theirs:6.2f} {error:10.1e}")
    print(f"largest ratio ours / Captum = {worst:.2f} (requirement <= 1.0: {'met' if worst <= 1.0 else 'NOT met'})")
    return 0 if worst <= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
