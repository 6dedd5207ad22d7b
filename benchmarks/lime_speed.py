"""Speed of ``shap.lime`` against the ``lime`` package's image explainer, same segments, samples and batch size.

One canonical image, M = 12 grid segments, the predicted class's logit (both see logits), absent segments black
(lime's ``hide_color=0``, our ``baseline=0.0``), ``--samples`` coalitions in batches of 64, lime's own defaults
otherwise (kernel width 0.25, ridge alpha 1). The two draw different coalitions, so the maps are not compared
here (tests/test_lime.py checks that our regression on lime's own coalitions gives its coefficients); the time
is: median of ``--repeats``, alternated, one thread. Requirement: time(ours) / time(lime) <= 1.0. Run:
``OMP_NUM_THREADS=1 python benchmarks/lime_speed.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys

import torch
from _common import alternating_medians, course_model
from lime import lime_image

from xai_course import data, shap

BATCH_SIZE = 64


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[256, 1000, 4000])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    model = course_model()
    x = data.canonical(1).images[0]
    segments = shap.superpixels(x[None], n_segments=12, method="grid")[0]
    target = int(model(x[None]).argmax())

    @torch.no_grad()
    def classifier(batch):
        return model(torch.from_numpy(batch).permute(0, 3, 1, 2).float()).double().numpy()

    image = x.permute(1, 2, 0).double().numpy()
    worst = 0.0
    print(f"{'samples':>7s} {'ours (s)':>9s} {'lime (s)':>9s} {'ratio':>6s}")
    for n in args.samples:
        ours = lambda n=n: shap.lime(model, x, target, segments=segments, baseline=0.0, n_samples=n)
        def theirs(n=n):
            with contextlib.redirect_stderr(io.StringIO()):  # lime's progress bar
                return lime_image.LimeImageExplainer(random_state=0).explain_instance(
                    image, classifier, labels=(target,), top_labels=None, hide_color=0, num_samples=n,
                    batch_size=BATCH_SIZE, segmentation_fn=lambda _: segments.numpy(), random_seed=0,
                )  # fmt: skip

        t_ours, t_theirs = alternating_medians(ours, theirs, args.repeats)
        worst = max(worst, t_ours / t_theirs)
        print(f"{n:7d} {t_ours:9.3f} {t_theirs:9.3f} {t_ours / t_theirs:6.2f}")
    print(f"largest ratio ours / lime = {worst:.2f} (requirement <= 1.0: {'met' if worst <= 1.0 else 'NOT met'})")
    return 0 if worst <= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
