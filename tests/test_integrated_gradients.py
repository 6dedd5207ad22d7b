"""gradient.integrated_gradients: the quadrature rules, closed forms, convergence rates and Captum."""

import functools
import warnings

import pytest
import torch
from captum.attr import IntegratedGradients
from captum.attr._utils.approximation_methods import approximation_parameters
from conftest import assert_unchanged, state_of
from torch import nn

import xai_course as xc
from xai_course import core, gradient

RULES = gradient.QUADRATURES


class Quadratic(nn.Module):
    """S_c(x) = z^T A_c z + b_c^T z with z = flatten(x): the gradient (A_c + A_c^T) z + b_c is linear in z."""

    def __init__(self, d: int, classes: int = 3, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.a = nn.Parameter(torch.randn(classes, d, d, generator=g, dtype=torch.float64))
        self.b = nn.Parameter(torch.randn(classes, d, generator=g, dtype=torch.float64))

    def forward(self, x):
        z = x.flatten(1)
        return torch.einsum("ni,cij,nj->nc", z, self.a, z) + z @ self.b.T

    def gradient(self, x: torch.Tensor, c: int) -> torch.Tensor:
        z = x.flatten(1)
        return (z @ (self.a[c] + self.a[c].T).T + self.b[c]).detach().view_as(x)


def linear_model(d: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 3)).double().eval()


def smooth_model(seed: int = 0) -> nn.Module:
    """A small network with smooth activations, in float64: its path integrand is analytic."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 5 * 5, 6), nn.Softplus(), nn.Linear(6, 3)
    ).double().eval()  # fmt: skip


def images(n: int = 3, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    return torch.rand(n, 3, 5, 5, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("method", RULES)
def test_linear_model_gives_x_minus_baseline_times_weight(method):
    model, x = linear_model(75), images()
    start = images(seed=1)
    attribution, delta = gradient.integrated_gradients(
        model, x, 1, baseline=start, steps=7, method=method, return_delta=True
    )
    torch.testing.assert_close(attribution, (x - start) * model[1].weight[1].view(3, 5, 5), rtol=1e-12, atol=1e-14)
    assert delta.abs().max() < 1e-12


# mean node sum_k w_k alpha_k of each rule with m points (the integral's is 1/2)
MEAN_NODE = {
    "riemann_left": lambda m: (m - 1) / (2 * m),
    "riemann_right": lambda m: (m + 1) / (2 * m),
    "riemann_middle": lambda m: 0.5,
    "riemann_trapezoid": lambda m: 0.5,
    "gausslegendre": lambda m: 0.5,
}


@pytest.mark.parametrize("method", RULES)
@pytest.mark.parametrize("steps", [2, 9])
def test_quadratic_model_has_the_closed_form(method, steps):
    """S_c = z^T A z + b^T z: on the path z' + alpha d the gradient is linear in alpha, so every rule gives
    IG = d * grad S_c(z' + abar d) with abar the rule's mean node: the exact IG (abar = 1/2) for the middle,
    trapezoid and Gauss-Legendre rules."""
    model, x = Quadratic(75), images()
    start = images(seed=1)
    ours = gradient.integrated_gradients(model, x, 2, baseline=start, steps=steps, method=method)
    expected = (x - start) * model.gradient(start + MEAN_NODE[method](steps) * (x - start), 2)
    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-12)


CONVERGENCE = {  # rule -> (m, 2m - 1 or 2m, the error ratio the rule promises on a smooth integrand)
    "riemann_left": (64, 128, 2.0),  # O(1/m)
    "riemann_right": (64, 128, 2.0),
    "riemann_middle": (64, 128, 4.0),  # O(1/m^2)
    "riemann_trapezoid": (33, 65, 4.0),  # O(1/m^2) in the number of intervals, m - 1
}


@pytest.mark.parametrize("method", CONVERGENCE)
def test_the_completeness_delta_falls_at_the_rate_of_the_rule(method):
    model, x = smooth_model(), images(2)
    coarse, fine, rate = CONVERGENCE[method]
    deltas = [gradient.integrated_gradients(model, x, 0, steps=m, method=method, return_delta=True)[1]
              for m in (coarse, fine)]  # fmt: skip
    ratio = deltas[0] / deltas[1]
    assert deltas[0].abs().min() > 1e-9  # a real error, not rounding
    torch.testing.assert_close(ratio, torch.full_like(ratio, rate), rtol=0.05, atol=0)


def test_gauss_legendre_converges_exponentially():
    model, x = smooth_model(), images(2)
    promise = (model(x) - model(torch.zeros_like(x)))[:, 0].abs()
    deltas = {m: gradient.integrated_gradients(model, x, 0, steps=m, method="gausslegendre", return_delta=True)[1]
              for m in (2, 4, 8)}  # fmt: skip
    assert (deltas[2].abs() > 1e-6 * promise).all()
    assert (deltas[8].abs() < 1e-11 * promise).all()
    assert (deltas[8].abs() < 1e-3 * deltas[4].abs()).all()


def captum_ig(model, x, target, baseline, steps, method, nodes_and_weights=None):
    """Captum's IntegratedGradients with its own rule, or with the given nodes and weights (its ``_attribute``)."""
    explainer = IntegratedGradients(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if nodes_and_weights is None:
            return explainer.attribute(
                x, baselines=baseline, target=target, n_steps=steps, method=method, return_convergence_delta=True
            )
        nodes, weights = (t.to(x.dtype).tolist() for t in nodes_and_weights)
        (attribution,) = explainer._attribute((x,), (baseline,), target, None, steps, method, (weights, nodes))
        return attribution


@pytest.mark.parametrize("method", RULES)
def test_the_rules_are_captums_up_to_its_rounding_and_its_trapezoid(method):
    """Captum's Riemann nodes come from a float32 linspace (one float32 ulp off k/m at most), its Gauss-Legendre
    ones from the same numpy call; its trapezoid weights are 1/m, so they sum to (m - 1) / m instead of 1."""
    for steps in (2, 7, 50):
        nodes, weights = gradient.quadrature(method, steps)
        captum_weights, captum_nodes = (torch.tensor(f(steps), dtype=torch.float64)
                                        for f in approximation_parameters(method))  # fmt: skip
        assert (nodes - captum_nodes).abs().max() <= 2**-24
        scale = (steps - 1) / steps if method == "riemann_trapezoid" else 1.0
        torch.testing.assert_close(weights * scale, captum_weights, rtol=1e-14, atol=0)


BASELINES = {
    "black": (0.0, lambda x: torch.zeros_like(x)),
    "blur": ("blur", core.gaussian_blur),
    "mean": ("mean", lambda x: x.mean(dim=(2, 3), keepdim=True).expand_as(x).contiguous()),
    "uniform": (None, lambda x: core.baseline_like(x, "uniform", seed=3)),
    "an image": (0.5 * xc.data.canonical(1).images[0], lambda x: (0.5 * xc.data.canonical(1).images).expand_as(x)),
}


def relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return ((ours - theirs).abs().max() / theirs.abs().max()).item()


@pytest.mark.parametrize("baseline", BASELINES)
@pytest.mark.parametrize("method", RULES)
def test_equals_captum_on_the_same_path_on_the_course_model(method, baseline):
    """Given the same nodes and weights, Captum integrates along the same path: the maps agree. In float64: a
    ReLU/max-pool network's gradient jumps where a pre-activation crosses 0 or a pooling window changes its
    maximum, and in float32 the last bit of an input on the path can decide that. Captum computes
    x' + alpha (x - x'), the package ``torch.lerp`` (exactly x at alpha = 1); in float32 that bit moved this
    map by up to 3 % of its maximum."""
    model = xc.models.load("shapes_cnn").double()
    x = xc.data.canonical(4).images.double()
    target = torch.tensor([0, 1, 1, 3])
    ours_baseline, captum_baseline = BASELINES[baseline]
    ours_baseline = captum_baseline(x).double() if ours_baseline is None else ours_baseline
    if isinstance(ours_baseline, torch.Tensor):
        ours_baseline = ours_baseline.double()
    steps = 12
    ours = gradient.integrated_gradients(
        model, x, target, baseline=ours_baseline, steps=steps, method=method, batch_size=20
    )
    path = gradient.quadrature(method, steps)
    reference = captum_ig(model, x, target, captum_baseline(x).double(), steps, method, path)
    assert relative_error(ours, reference) < 1e-5


@pytest.mark.parametrize("baseline", BASELINES)
@pytest.mark.parametrize("method", RULES)
def test_equals_captum_at_the_same_baseline_steps_and_rule(method, baseline):
    """Captum's public API with its own rule, on a smooth network (no kinks for a rounding to jump across); its
    trapezoid map is (m - 1) / m times ours."""
    model = smooth_model()
    x = images(4, dtype=torch.float32)
    model = model.float()
    target = torch.tensor([0, 1, 1, 2])
    ours_baseline, captum_baseline = BASELINES[baseline]
    if isinstance(ours_baseline, torch.Tensor):
        ours_baseline = ours_baseline[:, :5, :5]
        captum_baseline = lambda x, b=ours_baseline: b.expand_as(x).contiguous()  # noqa: E731
    ours_baseline = captum_baseline(x) if ours_baseline is None else ours_baseline
    steps = 12
    ours, delta = gradient.integrated_gradients(
        model, x, target, baseline=ours_baseline, steps=steps, method=method, batch_size=20, return_delta=True
    )
    reference, captum_delta = captum_ig(model, x, target, captum_baseline(x), steps, method)
    if method == "riemann_trapezoid":
        ours, delta = ours * (steps - 1) / steps, delta - (ours.flatten(1).sum(1) / steps)
    assert relative_error(ours, reference) < 1e-5
    torch.testing.assert_close(delta, captum_delta, rtol=1e-4, atol=1e-6)


def test_captums_trapezoid_misses_completeness_by_one_over_m_on_a_linear_model():
    model, x = linear_model(75), images()
    promise = (model(x) - model(torch.zeros_like(x)))[:, 1]
    for steps in (5, 50):
        _, captum_delta = captum_ig(model, x, 1, torch.zeros_like(x), steps, "riemann_trapezoid")
        # its weights are float32 (1/m to 6e-8 relative): the delta is -promise/m to 6e-8 of the promise
        torch.testing.assert_close(captum_delta, -promise / steps, rtol=0, atol=1e-7 * promise.abs().max().item())


def test_quadrature_weights_sum_to_one_and_nodes_lie_on_the_path():
    for method in RULES:
        for steps in (2, 3, 10):
            nodes, weights = gradient.quadrature(method, steps)
            assert nodes.shape == weights.shape == (steps,) and nodes.dtype == torch.float64
            assert abs(weights.sum().item() - 1) < 1e-14 and (weights > 0).all()
            assert (nodes >= 0).all() and (nodes <= 1).all()


def test_batches_and_unbatched_input():
    """In float64: in float32 the batch size can change the last bit of a convolution, enough to move a ReLU
    network's gradient across a kink (see above)."""
    model = xc.models.load("shapes_cnn").double()
    x = xc.data.canonical(3).images.double()
    run = functools.partial(gradient.integrated_gradients, model, x, steps=6, baseline="blur")
    reference = run()
    for batch_size in (1, 7, 1000):
        torch.testing.assert_close(run(batch_size=batch_size), reference, rtol=1e-9, atol=1e-12)
    single, delta = gradient.integrated_gradients(model, x[1], steps=6, return_delta=True)
    assert single.shape == x[1].shape and delta.shape == ()
    batched, deltas = gradient.integrated_gradients(model, x, steps=6, return_delta=True)
    torch.testing.assert_close(single, batched[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(delta, deltas[1])


def test_declares_its_completeness_and_leaves_the_model_unchanged(tiny):
    f = gradient.integrated_gradients
    assert (f.signed, f.needs, f.random, f.sums_to) == (True, "gradients", False, "f_c(x) - f_c(baseline)")
    tiny.train()
    for p in tiny.parameters():
        p.grad = torch.ones_like(p)
    before = state_of(tiny)
    f(tiny, torch.rand(2, 3, 8, 8), steps=3)
    for kwargs, error, name in [
        ({"method": "simpson"}, ValueError, "method"),
        ({"steps": 1}, ValueError, "steps"),
        ({"steps": 0, "method": "riemann_left"}, ValueError, "steps"),
        ({"return_delta": "yes"}, TypeError, "return_delta"),
        ({"baseline": "uniform"}, ValueError, "baseline"),  # noise: core.baseline_like(x, "uniform", seed=...)
        ({"target": 9}, ValueError, "target"),
    ]:
        with pytest.raises(error, match=f"^{name}: "):
            f(tiny, torch.rand(2, 3, 8, 8), **kwargs)
        assert_unchanged(before, tiny)
