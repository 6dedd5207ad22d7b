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
from _common import alternating_medians, course_model
from torch import nn
from torch.nn import functional as F
from zennit import attribution, composites, rules

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


def zennit_explain(model: nn.Module, x: torch.Tensor, preset: str) -> torch.Tensor:
    """Zennit's relevance for the predicted class, started from its logit, composite built per call like explain."""
    with attribution.Gradient(model, zennit_composite(preset, x)) as attributor:
        _, relevance = attributor(x, lambda out: out * F.one_hot(out.argmax(1), out.shape[1]).to(out))
    return relevance


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads (set OMP_NUM_THREADS to change)")
    model = course_model()
    x = data.shapes(N_IMAGES, seed=0).images
    print(f"{N_IMAGES} images, median of {args.repeats}:")
    print(f"{'preset':22s} {'explain (s)':>11s} {'Zennit (s)':>10s} {'ratio':>6s} {'rel. error':>10s}")
    worst = 0.0
    for preset in lrp.PRESETS:
        ours, theirs = lrp.explain(model, x, composite=preset), zennit_explain(model, x, preset)
        error = ((ours - theirs).abs().max() / theirs.abs().max()).item()
        assert error < 1e-5, f"{preset}: explain and Zennit disagree (relative error {error:.2e})"
        t_ours, t_theirs = alternating_medians(
            lambda p=preset: lrp.explain(model, x, composite=p),
            lambda p=preset: zennit_explain(model, x, p),
            args.repeats,
        )
        worst = max(worst, t_ours / t_theirs)
        print(f"{preset:22s} {t_ours:11.3f} {t_theirs:10.3f} {t_ours / t_theirs:6.2f} {error:10.1e}")
    print(f"largest ratio explain / Zennit = {worst:.2f} (requirement <= 1.0: {'met' if worst <= 1.0 else 'NOT met'})")
    return 0 if worst <= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
