"""Speed of ``evaluate.deletion`` against the forward passes it needs and against a per-step loop.

On 32 course images with ShapesCNN and saliency maps, times (a) ``deletion`` with 64 steps and (b) the
32 x 65 bare forward passes of the same curve in batches of the same size, under ``torch.no_grad()``
(median of ``--repeats``), and (c) a naive loop with one forward pass per image and step (timed once:
it is the slow one). The requirement is (a) / (b) <= 5. Run: ``python benchmarks/deletion_speed.py``.
"""

from __future__ import annotations

import argparse

import torch
from _common import course_model, median_seconds

from xai_course import data, gradient
from xai_course.evaluate import deletion

STEPS, N_IMAGES, BATCH_SIZE = 64, 32, 128


@torch.no_grad()
def bare_forwards(model, x: torch.Tensor) -> None:
    """The forward passes the curve needs, on inputs built once outside the timing of the perturbation."""
    n_inputs = x.shape[0] * (STEPS + 1)
    for start in range(0, n_inputs, BATCH_SIZE):
        model(x[torch.arange(start, min(start + BATCH_SIZE, n_inputs)) % x.shape[0]])


@torch.no_grad()
def naive_loop(model, x: torch.Tensor, attribution: torch.Tensor) -> torch.Tensor:
    """RISE's loop: one image at a time, replace the next pixels, one forward pass per step."""
    n, c, h, w = x.shape
    scores = torch.empty(n, STEPS + 1)
    target = model(x).argmax(1)
    for i in range(n):
        order = attribution[i].sum(0).flatten().argsort(descending=True, stable=True)
        image = x[i].clone().view(c, -1)
        for s in range(STEPS + 1):
            image[:, order[: round(s / STEPS * h * w)]] = 0.0
            scores[i, s] = model(image.view(1, c, h, w)).softmax(1)[0, target[i]]
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads (set OMP_NUM_THREADS to change)")
    model = course_model()
    x = data.shapes(N_IMAGES, seed=0).images
    attribution = gradient.saliency(model, x)
    fast = deletion(model, x, None, attribution, steps=STEPS, batch_size=BATCH_SIZE)
    check = naive_loop(model, x[:4], attribution[:4])
    torch.testing.assert_close(fast.scores[:4], check, atol=1e-4, rtol=1e-4)  # same curves, first 4 images
    t_deletion = median_seconds(lambda: deletion(model, x, None, attribution, steps=STEPS, batch_size=BATCH_SIZE),
                                args.repeats)  # fmt: skip
    t_forward = median_seconds(lambda: bare_forwards(model, x), args.repeats)
    t_naive = median_seconds(lambda: naive_loop(model, x, attribution), 1)
    print(f"{N_IMAGES} images, {STEPS} steps, batch_size {BATCH_SIZE}, median of {args.repeats}:")
    print(f"  deletion                     {t_deletion:8.3f} s")
    print(f"  bare forward passes ({N_IMAGES * (STEPS + 1)})  {t_forward:8.3f} s")
    print(f"  naive per-step loop (once)   {t_naive:8.3f} s")
    ratio = t_deletion / t_forward
    print(f"deletion / forward = {ratio:.2f} (requirement <= 5: {'met' if ratio <= 5 else 'NOT met'})")
    print(f"naive / deletion   = {t_naive / t_deletion:.2f}")


if __name__ == "__main__":
    main()
