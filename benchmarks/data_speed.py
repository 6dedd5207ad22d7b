"""Time the generation of 10 000 course images on one core (requirement: at most 5 s).

Usage: ``python benchmarks/data_speed.py``. Prints the median of three runs.
"""

import statistics
import time

import torch

from xai_course import data


def main() -> None:
    torch.set_num_threads(1)
    data.shapes(500, split="train", seed=9)  # warm-up
    runs = []
    for seed in range(3):
        start = time.perf_counter()
        data.shapes(10000, split="train", seed=seed)
        runs.append(time.perf_counter() - start)
    median = statistics.median(runs)
    print(
        f"10 000 images on one core: median {median:.2f} s over {len(runs)} runs (budget 5 s): "
        f"{'ok' if median <= 5 else 'OVER BUDGET'}"
    )


if __name__ == "__main__":
    main()
