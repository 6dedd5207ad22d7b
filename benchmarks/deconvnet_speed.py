"""Speed of ``deconvnet.deconvnet`` and ``deconvnet.guided_backprop`` against Captum, on 1, 8 and 32 course images.

For each method and batch size, both libraries explain the predicted class (given to both) of the same images with
ShapesCNN (the shipped weights if present, else a random initialisation); their maps are first checked to agree
(largest absolute difference below 1e-6), then both are timed alternately (median of ``--repeats``, after one
warm-up call each).
The requirement is time(ours) / time(Captum) <= 1.0 for both. Run: ``python benchmarks/deconvnet_speed.py``.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import torch
from _common import absolute_error, course_model, race
from captum.attr import Deconvolution, GuidedBackprop

from xai_course import data, deconvnet

BATCH_SIZES = (1, 8, 32)
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
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads (set OMP_NUM_THREADS to change)")
    model = course_model()
    x = data.shapes(max(BATCH_SIZES), seed=0).images
    with torch.no_grad():
        target = model(x).argmax(1)  # given to both, so neither needs an extra forward pass
    cases = [f"{name}, {n} images" for n in BATCH_SIZES for name in METHODS]

    def run(case: str, captum: bool) -> torch.Tensor:
        name, n = case.split(", ")[0], int(case.split(", ")[1].split()[0])
        if captum:
            return captum_explain(model, x[:n], target[:n], METHODS[name][1])
        return METHODS[name][0](model, x[:n], target[:n])

    print(f"median of {args.repeats}:")
    return race(
        cases,
        lambda case: run(case, captum=False),
        lambda case: run(case, captum=True),
        rival="Captum",
        error=absolute_error,
        tolerance=1e-6,
        repeats=args.repeats,
    )


if __name__ == "__main__":
    sys.exit(main())
