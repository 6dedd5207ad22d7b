"""Speed of ``deep_taylor.explain`` against Zennit's equivalent composite, on a batch of 32 course images.

Deep Taylor decomposition leaves the biases out of its rules; Zennit's ZPlus and ZBox rules keep them. Where the two
definitions coincide, on a copy of ShapesCNN whose biases are 0 (the shipped weights if present, else a random
initialisation), both explain the predicted class of the same 32 images, for each input rule: ``explain`` with zB
(or w^2) at the input and z+ everywhere else, Zennit with a hand-built composite (ZBox or WSquare on the first
convolution, ZPlus on every other conv and linear layer). The maps are first checked to agree (relative error below
1e-5), then both are timed alternately (median of ``--repeats``, after one warm-up call each). The requirement is
time(explain) / time(Zennit) <= 1.0. Run: ``python benchmarks/deep_taylor_speed.py``.
"""

from __future__ import annotations

import argparse
import sys

import torch
from _common import course_model, race, relative_error, zennit_relevance
from torch import nn
from zennit import composites, rules, types

from xai_course import data, deep_taylor

N_IMAGES = 32


def zennit_composite(x: torch.Tensor, input_rule: str) -> composites.Composite:
    """Zennit's DTD composite: ZBox or WSquare on the first convolution, ZPlus on every other layer."""
    first = rules.ZBox(torch.zeros_like(x), torch.ones_like(x)) if input_rule == "zb" else rules.WSquare()
    layer_map = composites.layer_map_base() + [(types.Convolution, rules.ZPlus()), (nn.Linear, rules.ZPlus())]
    return composites.SpecialFirstLayerMapComposite(layer_map, [(types.Convolution, first)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads (set OMP_NUM_THREADS to change)")
    model = deep_taylor.zero_biases(course_model())
    x = data.shapes(N_IMAGES, seed=0).images
    print(f"{N_IMAGES} images, biases set to 0, median of {args.repeats}:")
    return race(
        ("zb", "w2"),
        lambda input_rule: deep_taylor.explain(model, x, input_rule=input_rule),
        lambda input_rule: zennit_relevance(model, x, zennit_composite(x, input_rule)),  # built per call, as ours
        rival="Zennit",
        error=relative_error,
        tolerance=1e-5,
        repeats=args.repeats,
    )


if __name__ == "__main__":
    sys.exit(main())
