"""Helpers shared by the benchmark scripts: the course model, median timers and the check-then-time race."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable

import torch
from torch.nn import functional as F
from zennit.attribution import Gradient

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


def relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """Largest absolute difference divided by the largest absolute value of the reference."""
    return ((ours - theirs).abs().max() / theirs.abs().max()).item()


def absolute_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """Largest absolute difference."""
    return (ours - theirs).abs().max().item()


def zennit_relevance(model: torch.nn.Module, x: torch.Tensor, composite) -> torch.Tensor:
    """Zennit's relevance for the predicted class, started from its logit."""
    with Gradient(model, composite) as attributor:
        _, relevance = attributor(x, lambda out: out * F.one_hot(out.argmax(1), out.shape[1]).to(out))
    return relevance


def race(cases: Iterable, ours: Callable, theirs: Callable, *, rival: str, error: Callable, tolerance: float,
         repeats: int) -> int:  # fmt: skip
    """Per case: check that ours(case) agrees with theirs(case) within ``tolerance``, then time both alternately.

    Prints one row per case and the largest time ratio; returns the exit status (0 if every ratio <= 1.0).
    """
    print(f"{'case':22s} {'ours (s)':>9s} {rival + ' (s)':>11s} {'ratio':>6s} {error.__name__:>14s}")
    worst = 0.0
    for case in cases:
        e = error(ours(case), theirs(case))
        assert e < tolerance, f"{case}: ours and {rival} disagree ({error.__name__} {e:.2e})"
        t_ours, t_theirs = alternating_medians(lambda c=case: ours(c), lambda c=case: theirs(c), repeats)
        worst = max(worst, t_ours / t_theirs)
        print(f"{case:22s} {t_ours:9.4f} {t_theirs:11.4f} {t_ours / t_theirs:6.2f} {e:14.1e}")
    print(f"largest ratio ours / {rival} = {worst:.2f} (requirement <= 1.0: {'met' if worst <= 1.0 else 'NOT met'})")
    return 0 if worst <= 1.0 else 1
