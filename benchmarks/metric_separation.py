"""Which faithfulness metrics tell the course's methods from a random map, and agree with the ground truth.

Usage: ``python benchmarks/metric_separation.py [n_images] [n_random]``. Runs ``evaluate.compare`` with ROAD
(``with_road=True``, both orders at ``evaluate.ROAD_FRACTIONS``) for every image method of ``guide`` on the
first ``n_images`` (default 32) of ``shapes(2000, split="test", seed=123)``, and the random map with
``n_random`` seeds (default 8); prints the table, then ``evaluate.metric_check``: for each metric, how many
methods lie more than 2 standard deviations (of the random maps' spread over seeds) above the random maps,
the median of that z, and the Spearman correlation across methods with the localization scores. The README
quotes it.
"""

import sys
import time

import torch

import xai_course as xc


def main(n_images: int = 32, n_random: int = 8) -> None:
    torch.manual_seed(0)
    xc.core.set_threads(2)
    model = xc.models.load("shapes_cnn")
    test = xc.data.shapes(2000, split="test", seed=123)[:n_images]
    settings = {"masks": test.masks, "steps": 16, "with_road": True, "progress": False}
    start = time.perf_counter()
    rows = xc.evaluate.compare(xc.guide.attribution_methods("images"), model, test.images, **settings)
    randoms = [rows[0]] + [
        xc.evaluate.compare({}, model, test.images, seed=seed, **settings)[0] for seed in range(1, n_random)
    ]
    seconds = time.perf_counter() - start
    print(f"shapes_cnn, {n_images} test images (seed 123), {n_random} random seeds: {seconds:.0f} s")
    print(rows)
    print(xc.evaluate.metric_check(rows[1:], randoms))


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:]))
