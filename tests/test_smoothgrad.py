"""gradient.smoothgrad: closed forms on linear and quadratic models, the documented noise, and Captum."""

import functools
import warnings

import pytest
import torch
from captum.attr import NoiseTunnel, Saliency
from conftest import assert_unchanged, state_of
from test_integrated_gradients import Quadratic, images, linear_model

import xai_course as xc
from xai_course import core, gradient

CAPTUM_KINDS = {"smoothgrad": "smoothgrad", "squared": "smoothgrad_sq", "vargrad": "vargrad"}


def documented_noise(x: torch.Tensor, n: int, sigma: float, seed: int) -> torch.Tensor:
    """The draws (n, *x.shape) as the docstring states them: one generator, randn(x.shape) per draw, times
    sigma (max - min) of each input."""
    generator = torch.Generator().manual_seed(seed)
    eps = torch.stack([torch.randn(x.shape, generator=generator, dtype=x.dtype) for _ in range(n)])
    spread = x.flatten(1).amax(1) - x.flatten(1).amin(1)
    return eps * sigma * spread.view(-1, *[1] * (x.ndim - 1))


@pytest.mark.parametrize("kind", CAPTUM_KINDS)
def test_equals_captums_noise_tunnel_given_the_same_noise(kind):
    """Captum draws its noise from torch's global generator; seeded like ours, one draw per pass, it draws the
    same numbers. Images scaled to [0, 1], so that one stdev (Captum's) is every image's sigma (max - min)."""
    model = xc.models.load("shapes_cnn")
    x = xc.data.canonical(4).images
    low, high = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
    x = (x - low) / (high - low)
    target = torch.tensor([0, 1, 1, 3])
    ours = gradient.smoothgrad(model, x, target, n=12, sigma=0.2, seed=5, kind=kind, batch_size=len(x))
    torch.manual_seed(5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = NoiseTunnel(Saliency(model)).attribute(
            x, target=target, nt_type=CAPTUM_KINDS[kind], nt_samples=12, nt_samples_batch_size=1, stdevs=0.2,
            abs=False,
        )  # fmt: skip
    assert ((ours - reference).abs().max() / reference.abs().max()).item() < 1e-5


@pytest.mark.parametrize("kind", CAPTUM_KINDS)
def test_quadratic_model_gives_the_gradient_at_the_noisy_inputs_exactly(kind):
    """The gradient of S_c = z^T A z + b^T z is linear: at x + eps_j it is grad(x) + M eps_j, M = A + A^T. With
    the documented draws, SmoothGrad is their mean, VarGrad their variance (1/n), exactly."""
    model, x = Quadratic(75), images()
    noise = documented_noise(x, 9, 0.3, 4)
    grads = torch.stack([model.gradient(x + eps, 1) for eps in noise])
    expected = {"smoothgrad": grads.mean(0), "squared": (grads**2).mean(0), "vargrad": grads.var(0, correction=0)}
    ours = gradient.smoothgrad(model, x, 1, n=9, sigma=0.3, seed=4, kind=kind, batch_size=5)
    torch.testing.assert_close(ours, expected[kind], rtol=1e-10, atol=1e-12)


def test_quadratic_model_smoothgrad_is_unbiased_and_vargrad_is_the_noise_variance():
    """E[grad(x + eps)] = grad(x) and Var[grad(x + eps)] = s^2 diag(M M^T) for the quadratic: the estimates from
    n draws are within 5 standard errors."""
    model, x, n, sigma = Quadratic(12), torch.rand(2, 3, 2, 2, dtype=torch.float64), 4000, 0.15
    s = sigma * (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1)
    m = model.a[0] + model.a[0].T
    variance = (s**2 * (m * m).sum(1)).detach().view_as(x)  # Var[(M eps)_i] = s^2 sum_j M_ij^2
    mean = gradient.smoothgrad(model, x, 0, n=n, sigma=sigma, seed=1, batch_size=512)
    assert ((mean - model.gradient(x, 0)).abs() < 5 * (variance / n).sqrt()).all()
    var = gradient.smoothgrad(model, x, 0, n=n, sigma=sigma, seed=1, kind="vargrad", batch_size=512)
    assert ((var - variance).abs() < 5 * variance * (2 / n) ** 0.5).all()


def test_linear_model_gives_the_weight_and_no_variance():
    model, x = linear_model(75), images()
    weight = model[1].weight[2].view(3, 5, 5).detach().expand_as(x)
    run = functools.partial(gradient.smoothgrad, model, x, 2, n=7)
    torch.testing.assert_close(run(), weight, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(run(kind="squared"), weight**2, rtol=1e-12, atol=1e-14)
    assert run(kind="vargrad").abs().max() < 1e-14


def test_no_noise_gives_the_gradient():
    model = xc.models.load("shapes_cnn")
    x = xc.data.canonical(3).images
    expected = gradient.saliency(model, x, abs=False)
    ours = gradient.smoothgrad(model, x, n=3, sigma=0.0)
    assert ((ours - expected).abs().max() / expected.abs().max()).item() < 1e-6


def test_seeds_batches_and_unbatched_input():
    """In float64, so that the batch size cannot move a ReLU network's gradient across a kink."""
    model = xc.models.load("shapes_cnn").double()
    x = xc.data.canonical(3).images.double()
    run = functools.partial(gradient.smoothgrad, model, x, n=7, kind="vargrad")
    reference = run(seed=2)
    for batch_size in (1, 5, 64):
        torch.testing.assert_close(run(seed=2, batch_size=batch_size), reference, rtol=1e-9, atol=1e-12)
    assert torch.equal(run(seed=2), reference) and not torch.allclose(run(seed=3), reference)
    assert torch.equal(run(seed=torch.Generator().manual_seed(0)), run(seed=torch.Generator().manual_seed(0)))
    single = gradient.smoothgrad(model, x[1], n=7)
    assert single.shape == x[1].shape
    noise, predicted = documented_noise(x, 7, 0.15, 0), model(x).argmax(1)  # the class predicted for x itself
    expected = torch.stack([gradient.saliency(model, x + eps, predicted, abs=False) for eps in noise]).mean(0)
    torch.testing.assert_close(gradient.smoothgrad(model, x, n=7), expected, rtol=1e-9, atol=1e-12)


def test_declarations_and_model_unchanged(tiny):
    f = gradient.smoothgrad
    assert (f.needs, f.random, f.sums_to) == ("gradients", True, None)
    assert core.is_signed(f) and not core.is_signed(functools.partial(f, kind="vargrad"))
    tiny.train()
    for p in tiny.parameters():
        p.grad = torch.ones_like(p)
    before = state_of(tiny)
    f(tiny, torch.rand(2, 3, 8, 8), n=3)
    for kwargs, error, name in [
        ({"kind": "median"}, ValueError, "kind"),
        ({"sigma": -0.1}, ValueError, "sigma"),
        ({"n": 0}, ValueError, "n"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"target": 9}, ValueError, "target"),
    ]:
        with pytest.raises(error, match=f"^{name}: "):
            f(tiny, torch.rand(2, 3, 8, 8), **kwargs)
        assert_unchanged(before, tiny)
