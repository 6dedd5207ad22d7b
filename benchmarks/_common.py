"""Helpers shared by the benchmark scripts: the course model and median timers."""

from __future__ import annotations

import statistics
import time

import torch

from xai_course import models


def course_model() -> torch.nn.Module:
    """``shapes_cnn`` with its shipped weights, or a randomly initialised ShapesCNN if they are missing."""
    try:
        model = models.load("shapes_cnn")
        print("model: ShapesCNN with the shipped weights (shapes_cnn)")
    except (FileNotFoundError, OSError, ValueError) as error:
        torch.manual_seed(0)
        model = models.ShapesCNN().eval()
        print(f"model: ShapesCNN, random initialisation (no shipped weights: {error})")
    return model


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``fn()``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def alternating_medians(first, second, repeats: int) -> tuple[float, float]:
    """Median wall times of two functions timed alternately (after one warm-up each), so load drifts hit both."""
    first(), second()
    times: tuple[list, list] = ([], [])
    for _ in range(repeats):
        for fn, record in zip((first, second), times):
            record.append(median_seconds(fn, 1))
    return statistics.median(times[0]), statistics.median(times[1])
