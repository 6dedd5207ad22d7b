"""gradient: saliency and gradient x input against closed forms, and the calling contract."""

import pytest
import torch
from conftest import assert_unchanged, state_of
from torch import nn

from xai_course import gradient


def linear_model(weight: torch.Tensor) -> nn.Module:
    """logits = W . flatten(x), no bias: the gradient of class c is W[c] in the input's shape."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(weight.shape[1], weight.shape[0], bias=False))
    model[1].weight.data.copy_(weight)
    return model.eval()


def test_saliency_of_a_linear_model_is_the_weight_row():
    torch.manual_seed(0)
    w = torch.randn(3, 2 * 4 * 4)
    model, x = linear_model(w), torch.rand(5, 2, 4, 4)
    target = torch.tensor([0, 1, 2, 0, 1])
    signed = gradient.saliency(model, x, target, abs=False)
    assert torch.allclose(signed, w[target].view(5, 2, 4, 4))
    assert torch.allclose(gradient.saliency(model, x, target), w[target].abs().view(5, 2, 4, 4))


def test_gradient_x_input_sums_to_the_logit_of_a_bias_free_relu_net():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3, bias=False)
    ).eval()
    x = torch.rand(4, 3, 6, 6)
    attribution = gradient.gradient_x_input(model, x, target=2)
    assert torch.allclose(attribution.sum(dim=(1, 2, 3)), model(x)[:, 2], atol=1e-5)


def test_contract_shapes_unbatched_and_predicted_target(tiny):
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64)
    tiny64 = tiny.double()
    out = gradient.saliency(tiny64, x)
    assert out.shape == x.shape and out.dtype == x.dtype and not out.requires_grad
    single = gradient.gradient_x_input(tiny64, x[1])
    assert single.shape == x[1].shape
    predicted = tiny64(x).argmax(1)
    assert torch.allclose(single, gradient.gradient_x_input(tiny64, x, predicted)[1])


def test_model_is_unchanged_also_on_error(tiny):
    tiny.train()
    for p in tiny.parameters():
        p.grad = torch.ones_like(p)
    before = state_of(tiny)
    gradient.saliency(tiny, torch.rand(2, 3, 8, 8))
    assert_unchanged(before, tiny)
    with pytest.raises(ValueError, match="target"):
        gradient.saliency(tiny, torch.rand(2, 3, 8, 8), target=7)
    assert_unchanged(before, tiny)


def test_bad_input_names_the_argument(tiny):
    with pytest.raises(TypeError, match="x:"):
        gradient.saliency(tiny, "image")
    with pytest.raises(TypeError, match="model:"):
        gradient.saliency(lambda x: x, torch.rand(1, 3, 8, 8))


class NoGradBlackBox(nn.Module):
    """A model that only answers: its forward pass runs under no_grad."""

    def __init__(self):
        super().__init__()
        self.net = nn.Linear(4, 2)

    def forward(self, x):
        with torch.no_grad():
            return self.net(x.flatten(1))


@pytest.mark.parametrize("method", [gradient.saliency, gradient.gradient_x_input])
def test_black_box_model_gets_a_clear_error(method):
    model = NoGradBlackBox()
    before = state_of(model)
    with pytest.raises(ValueError, match="model: expected logits that autograd can differentiate"):
        method(model, torch.rand(2, 1, 2, 2))
    assert_unchanged(before, model)


def test_a_model_that_writes_into_its_input_gets_the_gradient_of_the_same_function():
    from xai_course import deconvnet

    torch.manual_seed(0)
    conv, fc = nn.Conv2d(3, 2, 3), nn.Linear(18, 3)
    in_place = nn.Sequential(nn.ReLU(inplace=True), conv, nn.Flatten(), fc).eval()
    plain = nn.Sequential(nn.ReLU(), conv, nn.Flatten(), fc).eval()
    x = torch.randn(2, 3, 5, 5)
    before = x.clone()
    for method in (gradient.saliency, gradient.gradient_x_input, deconvnet.guided_backprop):
        assert torch.equal(method(in_place, x, 1), method(plain, x, 1))
    assert torch.equal(x, before)
