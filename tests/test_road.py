"""ROAD and its imputation (core.baseline_like "impute"), and metric_check: closed forms, a dense solve, Quantus."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from xai_course import core, gradient
from xai_course import evaluate as ev


def dense_imputation(x: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """Rong et al.'s equations written out one hidden pixel at a time, solved as a dense system."""
    n, c, h, w = x.shape
    out = x.clone().double()
    for i in range(n):
        unknowns = [(r, s) for r in range(h) for s in range(w) if hidden[i, r, s]]
        index = {p: k for k, p in enumerate(unknowns)}
        a, b = np.zeros((len(unknowns),) * 2), np.zeros((len(unknowns), c))
        for k, (r, s) in enumerate(unknowns):
            for dr in (-1, 0, 1):
                for ds in (-1, 0, 1):
                    rr, ss = r + dr, s + ds
                    if (dr, ds) == (0, 0) or not (0 <= rr < h and 0 <= ss < w):
                        continue
                    weight = 1 / 6 if abs(dr) + abs(ds) == 1 else 1 / 12
                    a[k, k] += weight
                    if (rr, ss) in index:
                        a[k, index[rr, ss]] -= weight
                    else:
                        b[k] += weight * x[i, :, rr, ss].double().numpy()
        for (r, s), value in zip(unknowns, np.linalg.solve(a, b), strict=True):
            out[i, :, r, s] = torch.from_numpy(value)
    return out.to(x.dtype)


def test_imputation_solves_the_weighted_mean_equations():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 7, 6, generator=g, dtype=torch.float64)
    hidden = torch.rand(3, 7, 6, generator=g) < torch.tensor([0.2, 0.6, 0.95])[:, None, None]
    hidden[2, 6, 5] = False  # one visible pixel in a corner is enough
    filled = core.baseline_like(x, "impute", hidden=hidden)
    torch.testing.assert_close(filled, dense_imputation(x, hidden), rtol=1e-12, atol=1e-12)
    assert torch.equal(filled[~hidden[:, None].expand_as(x)], x[~hidden[:, None].expand_as(x)])
    one_mask = core.baseline_like(x, "impute", hidden=hidden[1])  # one mask for every sample
    torch.testing.assert_close(one_mask[1], filled[1])


def test_imputation_closed_forms():
    # an interior hole in a linear ramp (harmonic for symmetric weights) is filled exactly
    rows, cols = torch.meshgrid(torch.arange(9.0), torch.arange(8.0), indexing="ij")
    ramp = (0.3 * rows - 0.7 * cols + 1)[None, None].double()
    hole = torch.zeros(9, 8, dtype=torch.bool)
    hole[2:7, 1:6] = True
    torch.testing.assert_close(core.baseline_like(ramp, "impute", hidden=hole), ramp)
    # along a series: linear interpolation between visible neighbours, the nearest value beyond the last one
    series = torch.tensor([[[1.0, 0.0, 0.0, 0.0, 5.0, 0.0, 0.0]]])
    hidden = torch.tensor([False, True, True, True, False, True, True])
    expected = torch.tensor([[[1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0]]])
    torch.testing.assert_close(core.baseline_like(series, "impute", hidden=hidden), expected)


def test_imputation_agrees_with_quantus_without_noise():
    perturb = pytest.importorskip("quantus.functions.perturb_func")
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 12, 10, generator=g, dtype=torch.float64)
    for share in (0.1, 0.5, 0.9):
        hidden = torch.rand(12, 10, generator=g) < share
        theirs = perturb.noisy_linear_imputation(x[0].numpy(), np.flatnonzero(hidden.numpy()), noise=0.0)
        ours = core.baseline_like(x, "impute", hidden=hidden)[0]
        np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-10, atol=1e-10)


def test_impute_needs_the_hidden_positions_and_a_visible_one():
    x = torch.rand(2, 3, 5, 5)
    with pytest.raises(ValueError, match="baseline: expected a float, 'mean', 'blur' or a float tensor"):
        core.baseline_like(x, "impute")  # only where the method says which positions it hides
    with pytest.raises(ValueError, match="'blur', 'impute' or"):
        core.baseline_like(x, "sharpen", hidden=torch.ones(5, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="hidden: .*every position hidden"):
        core.baseline_like(x, "impute", hidden=torch.ones(5, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"hidden: expected a bool tensor of shape \(2, 5, 5\)"):
        core.baseline_like(x, "impute", hidden=torch.zeros(3, 5, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="hidden: expected a bool tensor"):
        core.baseline_like(x, "impute", hidden=torch.zeros(5, 5))
    with pytest.raises(ValueError, match="hidden"):
        core.linear_imputation(torch.rand(1, 1, 3, 3, 3), torch.zeros(3, 3, 3, dtype=torch.bool))


# ----------------------------------------------------------------------------- ROAD


def linear_model(w: torch.Tensor) -> nn.Sequential:
    """Two classes: logit 0 is zero, logit 1 is w . x."""
    layer = nn.Linear(w.numel(), 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.stack([torch.zeros(w.numel()), w.flatten()]))
    return nn.Sequential(nn.Flatten(), layer)


def slow_road(model, x, attribution, fractions, order, noise, seed, target):
    """One image and one fraction at a time, from the description: rank, hide, impute (dense), add noise."""
    eps = noise * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
    relevance = attribution.sum(1).flatten(1)
    curves = torch.empty(x.shape[0], len(fractions), dtype=x.dtype)
    for i in range(x.shape[0]):
        order_i = torch.argsort(relevance[i], descending=order == "morf", stable=True)
        for t, f in enumerate(fractions):
            hidden = torch.zeros(relevance.shape[1], dtype=torch.bool)
            hidden[order_i[: round(f * relevance.shape[1])]] = True
            hidden = hidden.view(x.shape[2:])
            imputed = dense_imputation(x[i : i + 1], hidden[None])[0] + eps[i]
            image = torch.where(hidden, imputed, x[i])
            with torch.no_grad():
                curves[i, t] = model(image[None]).softmax(1)[0, target[i]]
    return curves


@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_road_equals_the_slow_reference(order):
    g = torch.Generator().manual_seed(2)
    x = torch.rand(3, 2, 6, 6, generator=g, dtype=torch.float64)
    model = linear_model(torch.randn(2 * 36, generator=g)).double()
    a = torch.randn(3, 2, 6, 6, generator=g, dtype=torch.float64)
    fractions = (0.0, 0.25, 0.5, 0.8)
    result = ev.road(model, x, 1, a, fractions=fractions, order=order, noise=0.05, seed=3, batch_size=5)
    expected = slow_road(model, x, a, fractions, order, 0.05, 3, [1, 1, 1])
    torch.testing.assert_close(result.scores, expected, rtol=1e-10, atol=1e-10)
    area = [np.trapezoid(curve, fractions) / 0.8 for curve in expected.numpy()]
    np.testing.assert_allclose(result.auc.numpy(), area, rtol=1e-10)
    assert result.mean_auc == pytest.approx(np.mean(area)) and result.fractions.tolist() == list(fractions)


def test_road_is_seeded_and_batch_independent():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                          nn.Linear(16, 3)).eval()  # fmt: skip
    x, a = torch.rand(2, 3, 10, 10), torch.rand(2, 1, 10, 10)
    first = ev.road(model, x, None, a, seed=4, batch_size=3)
    torch.testing.assert_close(ev.road(model, x, None, a, seed=4, batch_size=18).scores, first.scores)
    assert not torch.equal(ev.road(model, x, None, a, seed=5).scores, first.scores)
    plain = ev.road(model, x, None, a, noise=0.0, fractions=(0.3, 0.6))
    assert torch.equal(plain.scores, ev.road(model, x, None, a, noise=0.0, fractions=(0.3, 0.6), seed=9).scores)
    assert first.scores.shape == (2, len(ev.ROAD_FRACTIONS)) and first.target.tolist() == model(x).argmax(1).tolist()
    series_model = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 10, 2))
    series = ev.road(series_model, torch.rand(1, 12), None, torch.rand(1, 12), fractions=(0.25, 0.5))
    assert series.scores.shape == (1, 2)


def test_road_agrees_with_quantus_without_noise():
    quantus = pytest.importorskip("quantus")
    g = torch.Generator().manual_seed(5)
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 64, 2)).eval()
    x = torch.rand(16, 1, 8, 8, generator=g)
    a = torch.randn(16, 1, 8, 8, generator=g)  # no ties: both orders are unique
    y = model(x).argmax(1)
    percentages = [25, 50, 75]  # of 64 pixels: 16, 32, 48, where int() and round() agree
    metric = quantus.ROAD(percentages=percentages, noise=0.0, normalise=False, disable_warnings=True)
    theirs = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(), device="cpu")
    ours = ev.road(model, x, y, a, fractions=[p / 100 for p in percentages], noise=0.0)
    # two classes: the target stays predicted where its probability is above one half (Quantus's accuracy)
    accuracy = (ours.scores > 0.5).double().mean(0)
    np.testing.assert_allclose(accuracy.numpy(), [theirs[p] for p in percentages])
    assert 0 < accuracy.min() < 1  # the comparison is not trivial


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"fractions": (0.5,)}, ValueError, "fractions"),
        ({"fractions": (0.2, 0.1)}, ValueError, "fractions"),
        ({"fractions": (0.5, 1.0)}, ValueError, "fractions"),
        ({"fractions": "0.5"}, TypeError, "fractions"),
        ({"order": "random"}, ValueError, "order: expected one of \\['morf', 'lerf'\\]"),
        ({"noise": -0.1}, ValueError, "noise"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"batch_size": 0}, ValueError, "batch_size"),
    ],
)
def test_road_bad_arguments_are_named(kwargs, error, match):
    model, x = linear_model(torch.ones(4)), torch.rand(1, 1, 2, 2)
    with pytest.raises(error, match=match):
        ev.road(model, x, 1, torch.rand(1, 1, 2, 2), **kwargs)


def test_road_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                          nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3)).train()  # fmt: skip
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ev.road(model, torch.rand(2, 3, 8, 8), None, torch.rand(2, 3, 8, 8), fractions=(0.1, 0.5))
    with pytest.raises(ValueError, match="target"):
        ev.road(model, torch.rand(2, 3, 8, 8), 7, torch.rand(2, 3, 8, 8))
    assert model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


# ----------------------------------------------------------------------------- which metrics separate


def test_compare_with_road_and_metric_check_by_hand():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                          nn.Linear(16, 3)).eval()  # fmt: skip
    x = torch.rand(2, 3, 8, 8)
    rows = ev.compare({"saliency": gradient.saliency}, model, x, steps=2, region=4, with_road=True, progress=False)
    road = ev.road(model, x, None, gradient.saliency(model, x), order="lerf")
    assert rows[1].road_lerf == pytest.approx(road.mean_auc) and math.isfinite(rows[1].road_morf)
    assert math.isnan(ev.compare({}, model, x, steps=2, region=4, progress=False)[0].road_morf)

    def row(name, deletion, mass):
        return ev.Scores(name, 0.0, deletion, 0.5, 1.0, mass_accuracy=mass, rank_accuracy=mass, pointing_game=mass)

    methods = [row("a", 0.1, 0.9), row("b", 0.3, 0.5), row("c", 0.2, 0.7)]
    randoms = [row("random", d, m) for d, m in [(0.3, 0.1), (0.4, 0.2), (0.5, 0.3)]]  # mean 0.4, std 0.1
    check = ev.metric_check(methods, randoms, metrics={k: ev.METRICS[k] for k in ("deletion", "mass", "rank")},
                            references=("mass",))  # fmt: skip
    assert check.separation["deletion"] == pytest.approx({"a": 3.0, "b": 1.0, "c": 2.0})  # (-d + 0.4) / 0.1
    assert check.separated("deletion") == ["a"] and check.agreement["deletion"]["mass"] == pytest.approx(1.0)
    assert check.agreement["rank"]["mass"] == pytest.approx(1.0) and "deletion" in repr(check)
    with pytest.raises(ValueError, match="random_rows"):
        ev.metric_check(methods, randoms[:1])
    with pytest.raises(ValueError, match="references"):
        ev.metric_check(methods, randoms, references=("accuracy",))
