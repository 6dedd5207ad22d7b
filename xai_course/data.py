"""The course data: synthetic images and time series with ground truth, and the registry of shipped files.

Every image of ``shapes`` holds one class-defining shape (circle, square, triangle or cross) at a random position,
size, rotation and colour, on a textured background with up to three distractors (rings and bars) that belong to
no class. ``masks`` marks the pixels of the class-defining shape, so an explanation can be checked against the
truth instead of only looked at. Introduced in chapter 00.

Every series of ``timeseries`` (chapter 03) holds one class-defining pattern in noise, marked by its ``masks``, and
every row of ``loans`` (chapter 05) is a loan application decided by a known rule, so that rule explanations can
be checked against the rule that really made the decisions. ``occlude`` pastes random patches on images or series.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from .core import check_positive_int, check_seed

CLASSES = ("circle", "square", "triangle", "cross")
SIZE = 64
TAG_CLASS = 0  # the class the Clever Hans tag accompanies in training (circle)
TAG_RATE = 0.93  # share of the training images of TAG_CLASS that carry the tag
TAG_RATE_OTHERS = 0.0  # share of the other training images that carry it (0.2 % already undoes the shortcut)
TAG_SIZE = 12  # side of the square tag in pixels, a checkerboard of 2x2 cells
_CHUNK = 500  # images generated per random stream: the first n images never depend on the total
_SPLITS = {"train": 0, "test": 1}
SERIES_CLASSES = ("sine", "square", "triangle", "chirp")
SERIES_LENGTH = 128
SERIES_NOISE = 0.25  # standard deviation of the white noise; the patterns have amplitudes 1.0 to 1.5
LOAN_FEATURES = ("age", "job", "income", "amount", "duration", "car", "housing", "children")
LOAN_CATEGORICAL = {
    "job": ("none", "clerk", "skilled", "manager"),
    "car": ("no", "yes"),
    "housing": ("rent", "own", "free"),
}
LOAN_CLASSES = ("grant", "deny")
LOAN_JOB_SHARES = ((0.5, 0.3, 0.15, 0.05), (0.25, 0.3, 0.28, 0.17))  # shares of the jobs up to age 25, above
LOAN_INCOME_RANGES = ((400, 1200), (1200, 2800), (1800, 4200), (3000, 7000))  # monthly income per job, uniform
LOAN_NOISE = 0.02  # share of the loan labels flipped
LOAN_RULE = (
    "deny if (age <= 25 and job = none and amount > 5000) or (amount / duration > income / 3)"
    " or (age > 60 and duration > 48) or (job = none and car = no and amount > 8000); grant otherwise"
)


class _Rows:
    """What the data sets share: ``len(data)`` rows, and ``data[index]``, the same kind of data set holding the
    rows ``index`` (an int, slice or indices) of every tensor field and a copy of the other fields."""

    def __len__(self) -> int:
        first = fields(self)[0].name  # images, series or features
        return getattr(self, first).shape[0]

    def __getitem__(self, index):
        pick = torch.arange(len(self))[index].reshape(-1)
        parts = {}
        for attribute in fields(self):
            value = getattr(self, attribute.name)
            parts[attribute.name] = value[pick] if isinstance(value, torch.Tensor) else copy.copy(value)
        return type(self)(**parts)


@dataclass
class Shapes(_Rows):
    """A batch of course images with labels and ground-truth masks. Chapter 00.

    Attributes
    ----------
    images : float32 tensor (N, 3, 64, 64) in [0, 1]
    labels : int64 tensor (N,)
    masks : bool tensor (N, 64, 64), the pixels of the class-defining shape
    classes : tuple of class names, ``classes[label]``
    tag_masks : bool tensor (N, 64, 64) of the Clever Hans tag (all False without one)
    tag_class : the class the tag accompanies in the training data, or None
    """

    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    classes: tuple = CLASSES
    tag_masks: torch.Tensor | None = None
    tag_class: int | None = None


# ----------------------------------------------------------------------------- rendering


def _grid() -> tuple[torch.Tensor, torch.Tensor]:
    c = torch.arange(SIZE, dtype=torch.float32) + 0.5
    return c.view(1, SIZE, 1), c.view(1, 1, SIZE)  # rows (y), columns (x)


def _local(cx, cy, theta):
    """Pixel coordinates (u, v) in each shape's own rotated frame, shape (n, H, W)."""
    y, x = _grid()
    dx, dy = x - cx.view(-1, 1, 1), y - cy.view(-1, 1, 1)
    cos, sin = torch.cos(theta).view(-1, 1, 1), torch.sin(theta).view(-1, 1, 1)
    return dx * cos + dy * sin, dy * cos - dx * sin


def _box(u, v, half_u, half_v):
    return torch.maximum(u.abs() - half_u, v.abs() - half_v)


def _sdf(kind: str, u, v, r):
    """Signed distance (in pixels, negative inside) to a shape of radius ``r``."""
    r = r.view(-1, 1, 1)
    if kind == "circle":
        return torch.sqrt(u * u + v * v) - r
    if kind == "square":
        return _box(u, v, r / math.sqrt(2), r / math.sqrt(2))
    if kind == "triangle":
        return torch.maximum(0.5 * math.sqrt(3) * u.abs() + 0.5 * v, -v) - 0.5 * r
    if kind == "cross":
        return torch.minimum(_box(u, v, 0.95 * r, 0.3 * r), _box(u, v, 0.3 * r, 0.95 * r))
    if kind == "ring":
        return (torch.sqrt(u * u + v * v) - r).abs() - 0.9
    if kind == "bar":
        return _box(u, v, r, 1.2)
    raise ValueError(kind)


def _contrasting_colour(g: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """Random RGB colours whose brightness differs from ``background`` by at least 0.25."""
    n = background.shape[0]
    colour = torch.rand(n, 3, generator=g)
    brightness = colour.mean(dim=1)
    delta = 0.25 + 0.25 * torch.rand(n, generator=g)
    up = (background + delta <= 1.0) & ((torch.rand(n, generator=g) < 0.5) | (background - delta < 0.0))
    target = torch.where(up, background + delta, background - delta)
    return (colour + (target - brightness).unsqueeze(1)).clamp(0.0, 1.0)


def _background(g: torch.Tensor, n: int, out: torch.Tensor) -> torch.Tensor:
    """Write textured backgrounds into ``out`` (n, 3, H, W): a grey level, a tint, two gratings, pixel noise.

    Returns the grey level of each background.
    """
    level = 0.3 + 0.4 * torch.rand(n, generator=g)
    tint = 0.06 * (torch.rand(n, 3, 1, 1, generator=g) - 0.5)
    texture = 0.06 * (torch.rand(n, SIZE, SIZE, generator=g) - 0.5) + level.view(n, 1, 1)
    y, x = _grid()
    for _ in range(2):  # sin(fx x + fy y + phase), expanded so only products touch the full grid
        freq = 2 * math.pi * (2 + 5 * torch.rand(n, generator=g)) / SIZE
        angle = math.pi * torch.rand(n, generator=g)
        phase = 2 * math.pi * torch.rand(n, generator=g)
        a = (freq * torch.cos(angle)).view(n, 1, 1) * x + phase.view(n, 1, 1)
        b = (freq * torch.sin(angle)).view(n, 1, 1) * y
        texture += 0.05 * (torch.sin(a) * torch.cos(b) + torch.cos(a) * torch.sin(b))
    torch.add(texture.unsqueeze(1), tint, out=out)
    return level


def _paint(image, alpha, colour):
    """Alpha-blend ``colour`` (n, 3) into ``image`` (n, 3, H, W) where ``alpha`` (n, H, W)."""
    image.lerp_(colour.view(-1, 3, 1, 1).expand_as(image), alpha.unsqueeze(1))


def _layer(kinds, choice, cx, cy, r, theta, n) -> torch.Tensor:
    """Anti-aliased coverage in [0, 1], (n, H, W), of one shape per image, ``kinds[choice[i]]`` for image i."""
    alpha = torch.zeros(n, SIZE, SIZE)
    for k, kind in enumerate(kinds):
        idx = torch.nonzero(choice == k).flatten()
        if idx.numel():
            u, v = _local(cx[idx], cy[idx], theta[idx])
            alpha[idx] = (0.5 - _sdf(kind, u, v, r[idx])).clamp_(0.0, 1.0)
    return alpha


def _render_chunk(g: torch.Tensor, image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Render ``image.shape[0]`` course images into ``image`` and ``masks``; return their labels."""
    n = image.shape[0]
    labels = torch.randint(len(CLASSES), (n,), generator=g)
    level = _background(g, n, image)
    n_distractors = torch.randint(4, (n,), generator=g)
    for slot in range(3):
        r = 4 + 4 * torch.rand(n, generator=g)
        cx, cy = r + 1 + (SIZE - 2 * r - 2) * torch.rand(2, n, generator=g)
        theta = math.pi * torch.rand(n, generator=g)
        kind = torch.randint(2, (n,), generator=g)
        kind[n_distractors <= slot] = -1  # no distractor in this slot
        _paint(image, _layer(("ring", "bar"), kind, cx, cy, r, theta, n), _contrasting_colour(g, level))
    r = 10 + 6 * torch.rand(n, generator=g)
    cx, cy = r + 2 + (SIZE - 2 * r - 4) * torch.rand(2, n, generator=g)
    theta = 2 * math.pi * torch.rand(n, generator=g)
    alpha = _layer(CLASSES, labels, cx, cy, r, theta, n)
    _paint(image, alpha, _contrasting_colour(g, level))
    torch.gt(alpha, 0.5, out=masks)
    image.clamp_(0.0, 1.0)
    return labels


# ----------------------------------------------------------------------------- the Clever Hans tag


def _tag_pattern() -> tuple[torch.Tensor, torch.Tensor]:
    """The tag: a black-and-white checkerboard of TAG_SIZE pixels in the top-left corner, and its mask."""
    mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    mask[2 : 2 + TAG_SIZE, 2 : 2 + TAG_SIZE] = True
    pattern = torch.zeros(3, SIZE, SIZE)
    rows, cols = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    pattern[:, mask] = (((rows[mask] // 2) + (cols[mask] // 2)) % 2).float()
    return pattern, mask


def add_tag(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Copies of ``images`` (N, 3, 64, 64) with the Clever Hans tag pasted on, and the tag's mask (N, 64, 64).

    Used to build the test set that reveals a shortcut. Chapter 00.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != (3, SIZE, SIZE):
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images: expected a tensor of shape (N, 3, {SIZE}, {SIZE}), got {got}")
    pattern, mask = _tag_pattern()
    tagged = torch.where(mask, pattern.to(images.dtype), images)
    return tagged, mask.expand(images.shape[0], SIZE, SIZE).clone()


# ----------------------------------------------------------------------------- public generators


def _generator(seed: int, split: str, part: int, chunk: int) -> torch.Generator:
    entropy = np.random.SeedSequence([seed, _SPLITS[split], part, chunk]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(entropy[0]) << 32 | int(entropy[1]))


def _check_request(n: int, split: str, seed: int) -> None:
    check_positive_int("n", n)
    if split not in _SPLITS:
        raise ValueError(f"split: expected one of {sorted(_SPLITS)}, got {split!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")


def shapes(n: int, split: str = "test", seed: int = 0, clever_hans: bool = False) -> Shapes:
    """Generate ``n`` course images with labels and ground-truth masks.

    Deterministic for (``split``, ``seed``); the train and test splits draw from
    separate random streams, and the first images do not depend on ``n``. With
    ``clever_hans=True`` a tag accompanies class ``TAG_CLASS`` in a share ``TAG_RATE``
    of the *training* images and a share ``TAG_RATE_OTHERS`` of the others (never in
    the test split: use ``add_tag`` to build tagged test sets). Chapter 00.
    """
    _check_request(n, split, seed)
    images = torch.empty(n, 3, SIZE, SIZE)
    masks = torch.empty(n, SIZE, SIZE, dtype=torch.bool)
    labels = torch.empty(n, dtype=torch.long)
    for chunk, start in enumerate(range(0, n, _CHUNK)):
        part = slice(start, min(start + _CHUNK, n))
        g = _generator(seed, split, 0, chunk)
        if part.stop - start == _CHUNK:
            labels[part] = _render_chunk(g, images[part], masks[part])
        else:  # a partial chunk: render it whole so the first images never depend on n
            full_images = torch.empty(_CHUNK, 3, SIZE, SIZE)
            full_masks = torch.empty(_CHUNK, SIZE, SIZE, dtype=torch.bool)
            labels[part] = _render_chunk(g, full_images, full_masks)[: n - start]
            images[part], masks[part] = full_images[: n - start], full_masks[: n - start]
    data = Shapes(images, labels, masks, tag_masks=torch.zeros_like(masks))
    if clever_hans:
        data.tag_class = TAG_CLASS
        if split == "train":
            g = _generator(seed, split, 1, 0)
            p = torch.where(data.labels == TAG_CLASS, TAG_RATE, TAG_RATE_OTHERS)
            tagged = torch.rand(n, generator=g) < p
            data.images[tagged], data.tag_masks[tagged] = add_tag(data.images[tagged])
            data.masks &= ~data.tag_masks
    return data


def canonical(n: int = 8) -> Shapes:
    """The fixed test images every chapter explains first, classes in turn. Chapter 00."""
    check_positive_int("n", n)
    pool = shapes(max(64, 8 * n), split="test", seed=2024)
    order = torch.argsort(pool.labels * len(pool) + torch.arange(len(pool)))
    by_class = [order[pool.labels[order] == k] for k in range(len(CLASSES))]
    pick = [by_class[i % len(CLASSES)][i // len(CLASSES)] for i in range(n)]
    return pool[torch.stack(pick)]


# ----------------------------------------------------------------------------- time series (chapter 03)


@dataclass
class Series(_Rows):
    """A batch of course time series with labels and ground-truth masks. Chapter 03.

    Attributes
    ----------
    series : float32 tensor (N, 1, 128)
    labels : int64 tensor (N,)
    masks : bool tensor (N, 128), the samples of the class-defining pattern
    classes : tuple of class names, ``classes[label]``
    """

    series: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    classes: tuple = SERIES_CLASSES


def _patterns(u: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """The four class patterns (4, n, L) at pattern coordinates ``u`` (0 to 1 across the pattern)."""
    return torch.stack(
        [
            torch.sin(2 * math.pi * 3 * u + phase),  # sine burst: 3 cycles
            torch.ones_like(u),  # square pulse
            1 - (2 * u - 1).abs(),  # triangle
            torch.sin(2 * math.pi * (0.5 * u + 3 * u * u) + phase),  # chirp: 0.5 to 6.5 cycles per pattern
        ]
    )


def _render_series(g: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` series (n, L), their labels and masks: drift + noise + one pattern + maybe a spike beside it."""
    t = torch.arange(SERIES_LENGTH, dtype=torch.float32).view(1, -1)
    labels = torch.randint(len(SERIES_CLASSES), (n,), generator=g)
    width = 24 + 16 * torch.rand(n, 1, generator=g)
    start = (SERIES_LENGTH - width) * torch.rand(n, 1, generator=g)
    sign = torch.where(torch.rand(n, 1, generator=g) < 0.5, -1.0, 1.0)
    amplitude = sign * (1.0 + 0.5 * torch.rand(n, 1, generator=g))
    phase = 2 * math.pi * torch.rand(n, 1, generator=g)
    u = (t - start) / width
    masks = (u >= 0) & (u < 1)
    pattern = _patterns(u, phase).gather(0, labels.view(1, n, 1).expand(1, n, SERIES_LENGTH))[0]
    period = 96 + 160 * torch.rand(n, 1, generator=g)
    drift = 0.3 * torch.rand(n, 1, generator=g) * torch.sin(2 * math.pi * (t / period + torch.rand(n, 1, generator=g)))
    centre = (SERIES_LENGTH - width) * torch.rand(n, 1, generator=g)
    centre = torch.where(centre < start, centre, centre + width)  # the spike lies outside the pattern
    spike = (torch.rand(n, 1, generator=g) < 0.5) * (2 * torch.rand(n, 1, generator=g) - 1) * 2
    noise = SERIES_NOISE * torch.randn(n, SERIES_LENGTH, generator=g)
    series = noise + drift + spike * torch.exp(-0.5 * (t - centre) ** 2) + masks * amplitude * pattern
    return series, labels, masks


def timeseries(n: int, split: str = "test", seed: int = 0) -> Series:
    """Generate ``n`` course time series (length 128) with labels and ground-truth masks.

    The class is set by one pattern (``SERIES_CLASSES``: sine burst, square pulse, triangle,
    chirp) of width 24 to 40 samples and amplitude 1.0 to 1.5 (either sign) at a random
    position, added to white noise (``SERIES_NOISE``), a slow sinusoidal drift and, in half of
    the series, a short spike outside the pattern that belongs to no class. Deterministic for (``split``,
    ``seed``), separate streams for train and test, and the first series do not depend on
    ``n`` (as ``shapes``). Chapter 03.
    """
    _check_request(n, split, seed)
    parts = [_render_series(_generator(seed, split, 2, chunk), _CHUNK) for chunk in range(math.ceil(n / _CHUNK))]
    series, labels, masks = (torch.cat(column)[:n] for column in zip(*parts))
    return Series(series.unsqueeze(1).contiguous(), labels, masks.contiguous())


def occlude(
    x: torch.Tensor, *, p: float = 0.5, sizes: tuple[int, int] = (8, 24), values=(0.0, 0.5), seed=0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Copies of ``x`` with random occluding patches, and the masks of the hidden positions.

    Each sample of ``x`` (N, C, H, W) or (N, C, L) gets, with probability ``p``, one square
    (or segment) of side uniform in ``sizes`` (inclusive, clipped to the input) at a uniform
    position, filled on every channel with one of ``values`` chosen uniformly. ``seed`` is an
    int or a ``torch.Generator``. Returns the occluded copy and bool masks (N, H, W) or (N, L).
    Used to train ``shapes_cnn_occlusion`` and to test robustness to occlusion. Chapter 03.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim not in (3, 4):
        got = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"x: expected a float tensor (N, C, H, W) or (N, C, L), got {got}")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
        raise ValueError(f"p: expected a probability in [0, 1], got {p!r}")
    two_ints = isinstance(sizes, (tuple, list)) and len(sizes) == 2 and all(isinstance(s, int) for s in sizes)
    if not two_ints or not 1 <= sizes[0] <= sizes[1]:
        expected = "(smallest, largest) patch side, two ints with 1 <= smallest <= largest"
        raise ValueError(f"sizes: expected {expected}, got {sizes!r}")
    if isinstance(values, (int, float)):
        values = (values,)
    if not isinstance(values, (tuple, list)) or not values or not all(_is_real(v) for v in values):
        raise ValueError(f"values: expected a finite float or a non-empty sequence of finite floats, got {values!r}")
    g = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(check_seed(seed))
    n, spatial = x.shape[0], x.shape[2:]
    hit = torch.rand(n, generator=g) < p
    side = torch.randint(sizes[0], sizes[1] + 1, (n,), generator=g).clamp(max=min(spatial))
    mask = hit.view(n, *[1] * len(spatial))
    for axis, length in enumerate(spatial):
        start = (torch.rand(n, generator=g) * (length - side + 1)).long()
        coord = torch.arange(length).view(1, *[length if a == axis else 1 for a in range(len(spatial))])
        shape = (n, *[1] * len(spatial))
        mask = mask & (coord >= start.view(shape)) & (coord < (start + side).view(shape))
    fill = torch.tensor(values, dtype=x.dtype)[torch.randint(len(values), (n,), generator=g)]
    mask = mask.to(x.device)
    occluded = torch.where(mask.unsqueeze(1), fill.to(x.device).view(n, 1, *[1] * len(spatial)), x)
    return occluded, mask


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ----------------------------------------------------------------------------- loan applications (chapter 05)


@dataclass
class Loans(_Rows):
    """A table of loan applications with the bank's decisions and the rule that made them. Chapter 05.

    Attributes
    ----------
    features : float32 tensor (N, F), one applicant per row; categorical columns hold integer codes
    labels : int64 tensor (N,), ``classes[label]`` (0 grant, 1 deny), after the label noise
    noisy : bool tensor (N,), the labels the noise flipped (they contradict ``rule``)
    feature_names : tuple of column names
    categorical : dict column name -> tuple of code names, ``categorical["job"][code]``
    classes : tuple of outcome names
    rule : the true decision rule, as text
    """

    features: torch.Tensor
    labels: torch.Tensor
    noisy: torch.Tensor
    feature_names: tuple = LOAN_FEATURES
    categorical: dict = field(default_factory=lambda: dict(LOAN_CATEGORICAL))
    classes: tuple = LOAN_CLASSES
    rule: str = LOAN_RULE


def loan_decision(features: torch.Tensor) -> torch.Tensor:
    """The true rule ``LOAN_RULE`` on rows of ``features`` (N, F), or one row (F,): True where it denies the loan.

    The columns are ``LOAN_FEATURES``; a numpy array is taken as a tensor. Chapter 05.
    """
    features = torch.from_numpy(features) if isinstance(features, np.ndarray) else features
    columns = len(LOAN_FEATURES)
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"features: expected a tensor of rows (N, {columns}), got {type(features).__name__}")
    if features.ndim not in (1, 2) or features.shape[-1] != columns:
        raise ValueError(f"features: expected rows (N, {columns}) or one row, got shape {tuple(features.shape)}")
    age, job, income, amount, duration, car = (features[..., LOAN_FEATURES.index(name)] for name in LOAN_FEATURES[:6])
    none, no_car = job == LOAN_CATEGORICAL["job"].index("none"), car == LOAN_CATEGORICAL["car"].index("no")
    young_unemployed = (age <= 25) & none & (amount > 5000)
    unaffordable = amount / duration > income / 3
    old_and_long = (age > 60) & (duration > 48)
    unsecured = none & no_car & (amount > 8000)
    return young_unemployed | unaffordable | old_and_long | unsecured


def _loan_chunk(g: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` applicants (n, F), their labels and which labels the noise flipped."""
    age = 18 + torch.floor(58 * torch.rand(n, generator=g) ** 1.5)  # more young applicants than old
    shares = torch.tensor(LOAN_JOB_SHARES)[(age > 25).long()]
    job = torch.multinomial(shares, 1, generator=g)[:, 0]
    low, high = torch.tensor(LOAN_INCOME_RANGES).T[:, job]
    income = torch.round((low + (high - low) * torch.rand(n, generator=g)) / 10) * 10
    amount = torch.round(torch.exp(math.log(500) + math.log(40) * torch.rand(n, generator=g)) / 100) * 100
    duration = 6.0 * torch.randint(1, 13, (n,), generator=g)
    car = (torch.rand(n, generator=g) < 0.5).float()
    housing = torch.randint(3, (n,), generator=g).float()
    children = torch.randint(5, (n,), generator=g).float()
    features = torch.stack([age, job.float(), income, amount, duration, car, housing, children], dim=1)
    noisy = torch.rand(n, generator=g) < LOAN_NOISE
    return features, (loan_decision(features) ^ noisy).long(), noisy


def loans(n: int, split: str = "test", seed: int = 0) -> Loans:
    """Generate ``n`` loan applications decided by the known rule ``LOAN_RULE``, with label noise.

    The columns (``LOAN_FEATURES``) are age (18 to 75 years, more young than old), job (none, clerk,
    skilled, manager; none more often up to age 25, ``LOAN_JOB_SHARES``), monthly income (its range set by
    the job, ``LOAN_INCOME_RANGES``), loan amount (500 to 20k, log-uniform),
    duration (6 to 72 months), car (no, yes), housing (rent, own, free) and children (0 to 4);
    housing and children play no part in the rule. A share ``LOAN_NOISE`` of the labels is
    flipped. The rule contains the survey's example ``{age <= 25, job = none, amount > 5k} ->
    deny`` (its figure 6). Deterministic for (``split``, ``seed``), separate streams for train
    and test, and the first rows do not depend on ``n`` (as ``shapes``). Chapter 05.
    """
    _check_request(n, split, seed)
    parts = [_loan_chunk(_generator(seed, split, 3, chunk), _CHUNK) for chunk in range(math.ceil(n / _CHUNK))]
    features, labels, noisy = (torch.cat(column)[:n] for column in zip(*parts))
    return Loans(features.contiguous(), labels.contiguous(), noisy.contiguous())


# ----------------------------------------------------------------------------- shipped files


_PACKAGE = Path(__file__).resolve().parent  # the folder of the package's modules
_PROJECT_NAME = re.compile(r"""^name\s*=\s*["']xai-course["']\s*$""", re.MULTILINE)
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _repository_data() -> Path | None:
    """The repository's ``data/`` when the folder above the package holds this project's ``pyproject.toml``
    (``name = "xai-course"``), else None: a ``data`` folder beside another project's package is never taken."""
    try:
        text = (_PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return _PACKAGE.parent / "data" if _PROJECT_NAME.search(text) else None


def data_dir() -> Path:
    """The folder of shipped files: ``manifest.json`` and the weights it lists. Chapter 00.

    Searched in this order: ``$XAI_COURSE_DATA`` when it is set (the folder must then hold a ``manifest.json``);
    the package's own copy ``xai_course/shipped/``, which every install from a wheel (regular, ``--user``,
    ``--target``) puts beside the modules; the repository's ``data/`` when the package runs from the repository
    (an editable install or a clone), recognised by the ``pyproject.toml`` that names the project ``xai-course``.
    """
    override = os.environ.get("XAI_COURSE_DATA")
    if override:
        if not (Path(override) / "manifest.json").is_file():
            raise FileNotFoundError(f"XAI_COURSE_DATA: expected a folder that holds manifest.json, got {override!r}")
        return Path(override)
    candidates = [_PACKAGE / "shipped"]
    repository = _repository_data()
    if repository is not None:
        candidates.append(repository)
    for folder in candidates:
        if (folder / "manifest.json").is_file():
            return folder
    searched = ", ".join(map(str, candidates))
    if repository is None:
        searched += f" (not {_PACKAGE.parent / 'data'}: no pyproject.toml of xai-course beside the package)"
    raise FileNotFoundError(
        f"no manifest.json of the course's shipped files found in {searched}; reinstall the package, or set "
        "XAI_COURSE_DATA to the folder that holds them"
    )


def manifest() -> dict:
    """The manifest of shipped files: name -> {sha256, size, command}. Chapter 00.

    A manifest that is not JSON, or not an object of entries, gets a ``ValueError`` naming the file; an entry
    without a ``sha256`` (64 hex digits) or a ``size`` (bytes, an int >= 0) one naming the entry and the key.
    """
    file = data_dir() / "manifest.json"
    try:
        entries = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"manifest {file}: expected JSON, got text that does not parse ({error})") from None
    if not isinstance(entries, dict):
        raise ValueError(f"manifest {file}: expected an object name -> entry, got a JSON {type(entries).__name__}")
    for name, entry in entries.items():
        where = f"manifest {file}: entry {name!r}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected an object {{sha256, size, command}}, got {entry!r}")
        for key in ("sha256", "size"):
            if key not in entry:
                raise ValueError(f"{where} has no key {key!r}")
        digest, size = entry["sha256"], entry["size"]
        if not (isinstance(digest, str) and _SHA256.fullmatch(digest)):
            raise ValueError(f"{where}, key 'sha256': expected 64 lowercase hex digits, got {digest!r}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(f"{where}, key 'size': expected the file's size in bytes, an int >= 0, got {size!r}")
    return entries


def sha256(path: Path) -> str:
    """The SHA-256 of the file at ``path`` as 64 hex digits, read in blocks of 1 MiB. Chapter 00."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_file_name(name) -> str:
    """``name`` if it is a plain file name inside the data folder, else a ``ValueError`` that names it."""
    if not isinstance(name, str) or name in ("", ".", "..", "manifest.json") or set(name) & set("/\\:\0"):
        raise ValueError(
            "name: expected the plain name of a file inside the data folder (no '/', '\\' or ':', not '.', '..' "
            f"or 'manifest.json'), got {name!r}"
        )
    return name


def path(name: str) -> Path:
    """Path of the shipped file ``name`` after checking its size, then its SHA-256. Chapter 00.

    ``name`` must be a plain file name listed in the manifest; a name with a separator, ``..`` or a drive is
    refused even when the manifest lists it.
    """
    _check_file_name(name)
    folder = data_dir()
    entries = manifest()
    if name not in entries:
        raise ValueError(f"name: expected one of the shipped files {sorted(entries)}, got {name!r}")
    entry, file = entries[name], folder / name
    rebuild = f" or rebuild it with `{entry['command']}`" if entry.get("command") else ""
    restore = f"restore it (`git checkout data/{name}` in the repository, or reinstall the package){rebuild}"
    if not file.is_file():
        raise FileNotFoundError(f"shipped file {name} is missing from {folder}; {restore}")
    corrupt = f"shipped file {name} is corrupt or was changed"
    size = file.stat().st_size
    if size != entry["size"]:
        raise OSError(f"{corrupt}: {size} bytes, the manifest says {entry['size']}; {restore}")
    actual = sha256(file)
    if actual != entry["sha256"]:
        raise OSError(f"{corrupt}: SHA-256 {actual} does not match the manifest ({entry['sha256']}); {restore}")
    return file


def ship(name: str, state: dict, command: str) -> dict:
    """Save ``state`` (a ``state_dict``) as the shipped file ``name`` and record it in the manifest.

    ``name`` must be a plain file name (as for ``path``). Writes ``data_dir() / name`` with ``torch.save``,
    then the manifest entry: its SHA-256, its size in bytes and ``command``, the command line that rebuilds it.
    Returns the entry. Used by ``training.ship``. Chapter 00.
    """
    _check_file_name(name)
    folder = data_dir()
    entries = manifest()  # a broken manifest stops here, before any file is written
    file = folder / name
    torch.save(state, file)
    entries[name] = {"sha256": sha256(file), "size": file.stat().st_size, "command": command}
    (folder / "manifest.json").write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return entries[name]


def verify() -> list[str]:
    """Check the size and SHA-256 of every shipped file against the manifest; return their names. Chapter 00."""
    return [path(name).name for name in sorted(manifest())]
