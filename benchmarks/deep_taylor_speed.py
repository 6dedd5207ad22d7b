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
from _common import alternating_medians, course_model
from torch import nn
from torch.nn import functional as F
from zennit import attribution, composites, rules, types

from xai_course import data, deep_taylor

N_IMAGES = 32


def zennit_explain(model: nn.Module, x: torch.Tensor, input_rule: str) -> torch.Tensor:
    """Zennit's DTD composite for the predicted class, started from its logit, built per call like explain."""
    first = rules.ZBox(torch.zeros_like(x), torch.ones_like(x)) if input_rule == "zb" else rules.WSquare()
    layer_map = composites.layer_map_base() + [(types.Convolution, rules.ZPlus()), (nn.Linear, rules.ZPlus())]
    composite = composites.SpecialFirstLayerMapComposite(layer_map, [(types.Convolution, first)])
    with attribution.Gradient(model, composite) as attributor:
        _, relevance = attributor(x, lambda out: out * F.one_hot(out.argmax(1), out.shape[1]).to(out))
    return relevance


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads (set OMP_NUM_THREADS to change)")
    model = deep_taylor.zero_biases(course_model())
    x = data.shapes(N_IMAGES, seed=0).images
    print(f"{N_IMAGES} images, biases set to 0, median of {args.repeats}:")
    print(f"{'input rule':10s} {'explain (s)':>11s} {'Zennit (s)':>10s} {'ratio':>6s} {'rel. error':>10s}")
    worst = 0.0
    for input_rule in ("zb", "w2"):
        ours, theirs = deep_taylor.explain(model, x, input_rule=input_rule), zennit_explain(model, x, input_rule)
        error = ((ours - theirs).abs().max() / theirs.abs().max()).item()
        assert error < 1e-5, f"{input_rule}: explain and Zennit disagree (relative error {error:.2e})"
        t_ours, t_theirs = alternating_medians(
            lambda r=input_rule: deep_taylor.explain(model, x, input_rule=r),
            lambda r=input_rule: zennit_explain(model, x, r),
            args.repeats,
        )
        worst = max(worst, t_ours / t_theirs)
        print(f"{input_rule:10s} {t_ours:11.3f} {t_theirs:10.3f} {t_ours / t_theirs:6.2f} {error:10.1e}")
    print(f"largest ratio explain / Zennit = {worst:.2f} (requirement <= 1.0: {'met' if worst <= 1.0 else 'NOT met'})")
    return 0 if worst <= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
