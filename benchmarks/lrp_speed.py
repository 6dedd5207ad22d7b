"""Speed of ``lrp.explain`` against Zennit for the same composite, on a batch of 32 course images.

For each preset, both libraries explain the predicted class of the same 32 images with ShapesCNN (the shipped
weights if present, else a random initialisation); their maps are first checked to agree (relative error
below 1e-5), then both are timed alternately (median of ``--repeats``, after one warm-up call each). The
requirement is time(explain) / time(Zennit) <= 1.0 for every preset. Run: ``python benchmarks/lrp_speed.py``.
"""

from __future__ import annotations

import argparse
import sys

import torch
from _common import course_model, race, relative_error, zennit_relevance
from torch import nn
from zennit import composites, rules

from xai_course import data, lrp

N_IMAGES = 32


def zennit_composite(preset: str, x: torch.Tensor):
    """Zennit's composite for one of lrp.PRESETS (uniform epsilon is a LayerMapComposite)."""
    if preset == "epsilon":
        layer_map = [(nn.Conv2d, rules.Epsilon()), (nn.Linear, rules.Epsilon())] + composites.layer_map_base()
        return composites.LayerMapComposite(layer_map)
    if preset == "epsilon_gamma_box":
        return composites.EpsilonGammaBox(low=torch.zeros_like(x), high=torch.ones_like(x))
    return {"epsilon_plus": composites.EpsilonPlus, "epsilon_alpha2_beta1": composites.EpsilonAlpha2Beta1}[preset]()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads (set OMP_NUM_THREADS to change)")
    model = course_model()
    x = data.shapes(N_IMAGES, seed=0).images
    print(f"{N_IMAGES} images, median of {args.repeats}:")
    return race(
        lrp.PRESETS,
        lambda preset: lrp.explain(model, x, composite=preset),
        lambda preset: zennit_relevance(model, x, zennit_composite(preset, x)),  # composite built per call, as ours
        rival="Zennit",
        error=relative_error,
        tolerance=1e-5,
        repeats=args.repeats,
    )


if __name__ == "__main__":
    sys.exit(main())
