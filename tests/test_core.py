"""core: input checks, targets, the model guard, batching and baselines."""

import math

import numpy as np
import pytest
import torch
from conftest import assert_unchanged, state_of
from torch import nn

from xai_course import backward, core


def test_check_input_batched_and_unbatched(tiny):
    x = torch.rand(2, 3, 8, 8)
    batched, unbatched = core.check_input(tiny, x)
    assert batched.shape == x.shape and not unbatched
    batched, unbatched = core.check_input(tiny, x[0])
    assert batched.shape == (1, 3, 8, 8) and unbatched


def test_check_input_time_series_model():
    model = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.LazyLinear(2))
    assert core.check_input(model, torch.rand(5, 1, 20))[1] is False
    assert core.check_input(model, torch.rand(1, 20))[1] is True


@pytest.mark.parametrize(
    "x, error, words",
    [
        ([1.0, 2.0], TypeError, "x: expected a float tensor"),
        (torch.ones(1, 3, 8, 8, dtype=torch.long), TypeError, "floating-point"),
        (torch.rand(8, 8), ValueError, "(N, C, H, W)"),
        (torch.rand(1, 1, 3, 8, 8), ValueError, "shape (1, 1, 3, 8, 8)"),
        (torch.full((1, 3, 8, 8), float("nan")), ValueError, "finite"),
        (torch.rand(2, 3, 8, 8).index_put_((torch.tensor(1),) * 4, torch.tensor(float("nan"))), ValueError, "finite"),
        (torch.rand(2, 3, 8, 8).index_put_((torch.tensor(0),) * 4, torch.tensor(float("inf"))), ValueError, "finite"),
        (torch.rand(2, 3, 8, 8).index_put_((torch.tensor(1),) * 4, torch.tensor(-float("inf"))), ValueError, "finite"),
        (torch.rand(1, 3, 0, 8), ValueError, "at least one sample"),
        (torch.rand(0, 3, 8, 8), ValueError, "at least one sample"),
    ],
)
def test_check_input_errors(tiny, x, error, words):
    with pytest.raises(error, match="x:") as info:
        core.check_input(tiny, x)
    assert words in str(info.value)


def test_resolve_target():
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0]])
    assert core.resolve_target(None, logits).tolist() == [1, 0]
    assert core.resolve_target(2, logits).tolist() == [2, 2]
    assert core.resolve_target(torch.tensor([0, 2]), logits).tolist() == [0, 2]
    assert core.resolve_target(torch.tensor(1), logits).tolist() == [1, 1]


@pytest.mark.parametrize(
    "target, error, words",
    [
        (3, ValueError, "3 classes"),
        (-1, ValueError, "[0, 2]"),
        (torch.tensor([0, 1, 2]), ValueError, "shape (2,)"),
        (torch.tensor([0.0, 1.0]), TypeError, "integer tensor"),
        (1.0, TypeError, "None, an int"),
        (True, TypeError, "None, an int"),
    ],
)
def test_resolve_target_errors(target, error, words):
    with pytest.raises(error, match="target:") as info:
        core.resolve_target(target, torch.zeros(2, 3))
    assert words in str(info.value)


def _explain_carelessly(model: nn.Module) -> None:
    """What an explanation changes while it runs, left changed: modes, flags, buffers, gradients."""
    model.train()
    model.relu.inplace = False
    model.conv.weight.requires_grad_(True)
    model(torch.rand(2, 3, 8, 8)).sum().backward()  # BatchNorm's running statistics, and a gradient
    model.bn.running_mean.add_(1)


def test_model_guard_restores_what_explanations_change(tiny):
    tiny.train()
    tiny.fc.bias.requires_grad_(False)
    before = state_of(tiny)
    with core.model_guard(tiny):
        assert not any(m.training for m in tiny.modules()) and not any(p.requires_grad for p in tiny.parameters())
        _explain_carelessly(tiny)
    assert_unchanged(before, tiny)
    assert tiny.training and tiny.conv.weight.grad is None


def test_model_guard_restores_when_the_body_raises(tiny):
    before = state_of(tiny)
    with pytest.raises(RuntimeError, match="boom"), core.model_guard(tiny):
        _explain_carelessly(tiny)
        raise RuntimeError("boom")
    assert_unchanged(before, tiny)
    x = torch.rand(2, 3, 8, 8)
    reference = tiny(x)
    with core.model_guard(tiny):
        pass
    assert torch.equal(tiny(x), reference)


def test_model_guard_keeps_the_callers_autograd_graph_usable(tiny):
    x = torch.rand(2, 3, 8, 8)
    loss = tiny(x).sum()  # a graph that saved the weights before an explanation runs
    versions = [p._version for p in tiny.parameters()]
    with core.model_guard(tiny):
        tiny(x)
    assert [p._version for p in tiny.parameters()] == versions
    loss.backward()  # would fail if the guard had written the unchanged weights back


def test_rules_are_removed_through_their_handles_even_when_the_forward_pass_raises(tiny):
    before = state_of(tiny)

    def fail(module, args, output):
        raise RuntimeError("rule failed")

    with pytest.raises(RuntimeError, match="rule failed"), core.model_guard(tiny):
        with backward.modified(tiny, {tiny.conv: lambda *args: None, tiny.fc: fail}, {tiny.relu: lambda *a: None}):
            tiny(torch.rand(2, 3, 8, 8))
    assert_unchanged(before, tiny)


def test_model_guard_rejects_non_modules():
    with pytest.raises(TypeError, match="model: expected a torch.nn.Module"), core.model_guard("not a model"):
        pass


def test_batch_slices_cover_everything():
    slices = list(core.batch_slices(10, 4))
    assert [(s.start, s.stop) for s in slices] == [(0, 4), (4, 8), (8, 10)]
    with pytest.raises(ValueError, match="batch_size"):
        list(core.batch_slices(10, 0))


def test_predict_matches_model(tiny):
    x = torch.rand(7, 3, 8, 8)
    assert torch.allclose(core.predict(tiny, x, batch_size=3), tiny(x), atol=1e-6)


def test_samples_per_pass_by_default_holds_64_course_images_of_values():
    assert core.samples_per_pass(torch.zeros(2, 3, 64, 64), None) == 64
    assert core.samples_per_pass(torch.zeros(1, 3, 224, 224), None) == 5  # a photo: 12 times the values
    assert core.samples_per_pass(torch.zeros(1, 3, 2000, 2000), None) == 1
    assert core.samples_per_pass(torch.zeros(1, 3, 224, 224), 64) == 64  # given: kept
    with pytest.raises(TypeError, match="batch_size: expected an int >= 1, got float 8.0"):
        core.samples_per_pass(torch.zeros(1, 3, 8, 8), 8.0)


def test_check_input_for_models_without_convolutions():
    mlp = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    assert core.check_input(mlp, torch.rand(1, 2))[0].shape == (1, 2)
    assert core.check_input(mlp, torch.rand(2))[1] is True
    flat = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    assert core.check_input(flat, torch.rand(3, 4, 4))[1] is True
    assert core.check_input(flat, torch.rand(5, 3, 4, 4))[1] is False


def test_error_messages_stay_short_for_arrays():
    import numpy as np

    with pytest.raises(TypeError) as info:
        core.check_input(nn.Conv2d(3, 1, 1), np.zeros((8, 3, 64, 64)))
    assert len(str(info.value)) < 200 and "shape (8, 3, 64, 64)" in str(info.value)


def test_check_number_and_check_seed():
    assert core.check_number("lr", 2) == 2.0 and core.check_number("w", 0.0) == 0.0
    with pytest.raises(ValueError, match="lr: expected a number > 0"):
        core.check_number("lr", 0.0, strict=True)
    with pytest.raises(ValueError, match="alpha: expected a number >= 1"):
        core.check_number("alpha", 0.5, 1.0)
    for bad in (True, "1", float("nan"), float("inf")):
        with pytest.raises(TypeError, match="lr: expected a finite number"):
            core.check_number("lr", bad)
    assert core.check_seed(0) == 0
    with pytest.raises(ValueError, match="seed: expected a non-negative int or a torch.Generator, got -1"):
        core.check_seed(-1)
    for bad in (1.0, True, None, np.random.default_rng(0)):
        with pytest.raises(TypeError, match="seed: expected a non-negative int or a torch.Generator"):
            core.check_seed(bad)


def test_check_seed_draws_from_a_generator():
    g, same = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    first = core.check_seed(g)
    assert isinstance(first, int) and 0 <= first < 2**62
    assert first == core.check_seed(same)  # the same generator state gives the same seed
    assert core.check_seed(g) != first  # and the generator moves on


@pytest.mark.parametrize("env, n, expected", [(None, 2, 2), ("1", 2, 1), ("4", 2, 2), ("3", 1, 1), ("", 2, 2)])
def test_set_threads_caps_by_omp_num_threads(monkeypatch, env, n, expected):
    before = torch.get_num_threads()
    monkeypatch.setattr(core, "available_cpus", lambda: 8)
    if env is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", env)
    try:
        assert core.set_threads(n) == expected
        assert torch.get_num_threads() == expected
    finally:
        torch.set_num_threads(before)


def test_set_threads_rejects_bad_n():
    with pytest.raises(ValueError, match="n:"):
        core.set_threads(0)


def test_check_input_refuses_a_dtype_unlike_the_models_parameters(tiny):
    with pytest.raises(TypeError, match=r"x: expected a torch.float32 tensor on cpu, like the model's parameters"):
        core.check_input(tiny, torch.rand(2, 3, 8, 8, dtype=torch.float64))
    assert core.check_input(tiny.double(), torch.rand(2, 3, 8, 8, dtype=torch.float64))[0].dtype == torch.float64


def test_resolve_target_refuses_outputs_that_are_not_logits_per_class():
    with pytest.raises(ValueError, match=r"model: expected logits of shape \(N, classes\).*\(2, 5, 1, 1\)"):
        core.resolve_target(None, torch.rand(2, 5, 1, 1))


def test_a_model_that_writes_into_its_input_leaves_the_callers_x_alone():
    from xai_course import occlusion, shap

    torch.manual_seed(0)
    model = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(144, 3)).eval()
    x = torch.randn(2, 3, 8, 8)  # negatives that the in-place ReLU would zero
    before = x.clone()
    batch, _ = core.check_input(model, x)
    batch.relu_()
    segments = shap.superpixels(x, n_segments=4, method="grid")
    shap.kernel(model, x, segments=segments, n_samples=8)
    occlusion.sliding_window(model, x, window=4, stride=4)
    assert torch.equal(x, before)


@pytest.mark.parametrize(
    "files, expected",
    [
        ({"cpu.max": "100000 100000\n"}, 1),  # cgroup v2, one CPU (Binder)
        ({"cpu.max": "max 100000\n"}, 2),  # v2 without a quota
        ({"cpu/cpu.cfs_quota_us": "150000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),  # v1, 1.5 CPUs
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2),  # v1 without a quota
        ({}, 2),  # no cgroup files
    ],
)
def test_available_cpus_reads_the_cgroup_quota(tmp_path, monkeypatch, files, expected):
    monkeypatch.setattr(core.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert core.available_cpus(str(tmp_path)) == expected


def test_set_threads_never_uses_more_threads_than_cpus(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(core, "available_cpus", lambda: 1)
    try:
        assert core.set_threads(2) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_baseline_like_is_the_one_vocabulary_of_hidden_values():
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(core.baseline_like(x, 0.25), torch.full_like(x, 0.25))
    mean = core.baseline_like(x, "mean")
    torch.testing.assert_close(mean[:, :, 3, 5], x.mean(dim=(2, 3)))
    torch.testing.assert_close(core.baseline_like(x, "blur"), core.gaussian_blur(x))
    noise = core.baseline_like(x, "uniform", seed=3)
    assert torch.equal(noise, core.baseline_like(x, "uniform", seed=3)) and not torch.equal(noise, x)
    assert x.min() <= noise.min() and noise.max() <= x.max()
    one_image = torch.rand(3, 8, 8)
    assert torch.equal(core.baseline_like(x, one_image)[1], one_image)
    filled = core.baseline_like(x, one_image)
    filled += 1  # a copy: writing into it leaves the caller's tensor alone
    assert one_image.max() <= 1
    hidden = torch.zeros(8, 8, dtype=torch.bool)
    hidden[2:5, 3:6] = True
    imputed = core.baseline_like(x, "impute", hidden=hidden)  # ROAD's: from the visible neighbours (tests/test_road)
    assert torch.equal(imputed[..., ~hidden], x[..., ~hidden]) and not torch.equal(imputed, x)
    with pytest.raises(ValueError, match="baseline: expected a float, 'mean', 'blur' or"):
        core.baseline_like(x, "uniform")  # only where the method has a seed
    with pytest.raises(ValueError, match="'mean', 'blur', 'uniform' or"):
        core.baseline_like(x, "impute", seed=0)  # only where the method says which positions it hides
    with pytest.raises(ValueError, match=r"occluder: .*broadcastable to \(2, 3, 8, 8\)"):
        core.baseline_like(x, torch.rand(4, 8, 8), name="occluder")
    with pytest.raises(ValueError, match="finite"):
        core.baseline_like(x, torch.full((3, 1, 1), math.nan))
    with pytest.raises(TypeError, match="baseline"):
        core.baseline_like(x, [0.5])
