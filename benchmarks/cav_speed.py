"""Speed and agreement of the CAV fit (``concepts._logistic_regression``) against scikit-learn.

The 20 fits of chapter 10's TCAV of the Clever Hans tag on ``shapes_cnn`` (the tag against 10 random sets, each
random set against the next), at ``classifier.1`` (128 activations) and at the last feature map ``features``
(4096), each on a fixed half of the 120 examples. The same L2-penalized logistic regression (C = 1, the
intercept unpenalized) by scikit-learn's ``LogisticRegression``: ``lbfgs`` with ``max_iter=1000`` (the package's
fit before issue 23), ``lbfgs`` run to ``tol=1e-12``, and ``newton-cholesky`` to ``tol=1e-12`` (at 128
activations only: at 4096 it builds a 4096 x 4096 Hessian and takes about half a minute per fit). Printed: the
mean time per fit, and against each solver the smallest cosine and the largest relative distance
|w - w_sk| / |w_sk| of the weight vectors. Run: ``OMP_NUM_THREADS=1 python benchmarks/cav_speed.py``.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from _common import course_model
from sklearn.linear_model import LogisticRegression

from xai_course import concepts, data, layers

SOLVERS = {
    "lbfgs, max_iter 1000 (before)": {"max_iter": 1000},
    "lbfgs, tol 1e-12": {"tol": 1e-12, "max_iter": 100_000},
    "newton-cholesky, tol 1e-12": {"solver": "newton-cholesky", "tol": 1e-12},
}


def timed(fit, *args):
    """(the result of ``fit(*args)``, its wall time in seconds)."""
    start = time.perf_counter()
    result = fit(*args)
    return result, time.perf_counter() - start


def main() -> None:
    model = course_model()
    pool = data.shapes(660, "test", seed=7)  # chapter 10's draw: the tag on 60 images, 10 random sets of 60
    tagged, _ = data.add_tag(pool.images[:60])
    randoms = [pool.images[60 + 60 * r : 120 + 60 * r] for r in range(10)]
    for layer in ("classifier.1", "features"):
        a_tag, *a_randoms = (layers.features(model, x, layer).flatten(1).double() for x in [tagged, *randoms])
        pairs = [(a_tag, a) for a in a_randoms] + list(zip(a_randoms, a_randoms[1:] + a_randoms[:1]))
        seconds = {name: [] for name in ["ours", *SOLVERS]}
        cosine, distance = {name: [] for name in SOLVERS}, {name: [] for name in SOLVERS}
        for a, b in pairs:
            z = torch.cat([a, b]).numpy()[::2]  # a fixed half, the same for every solver
            y = np.r_[np.ones(len(a)), np.zeros(len(b))][::2]
            (w, _), s = timed(concepts._logistic_regression, z, y)
            seconds["ours"].append(s)
            for name, settings in SOLVERS.items():
                if layer == "features" and "newton" in name:
                    continue
                fitted, s = timed(LogisticRegression(C=1.0, **settings).fit, z, y)
                w_sk = fitted.coef_[0]
                seconds[name].append(s)
                cosine[name].append(w @ w_sk / np.linalg.norm(w) / np.linalg.norm(w_sk))
                distance[name].append(np.linalg.norm(w - w_sk) / np.linalg.norm(w_sk))
        for name, times in seconds.items():
            if times:
                against = "" if name == "ours" else (
                    f"  min cosine {min(cosine[name]):.12f}, max |w - w_sk| / |w_sk| {max(distance[name]):.1e}")
                print(f"{layer:12s} {name:30s} {1000 * np.mean(times):7.1f} ms per fit{against}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
