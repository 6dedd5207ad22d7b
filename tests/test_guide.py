"""The method registry, the chooser and the combination of methods (chapter 08)."""

import inspect
import math

import pytest
import torch
from conftest import assert_unchanged, state_of
from torch import nn

from xai_course import data, evaluate, guide, models


@pytest.fixture(scope="module")
def cases():
    """One course-like model and two inputs per kind of data."""
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    return {
        "images": (models.load("shapes_cnn"), data.canonical(2).images),
        "time series": (models.load("timeseries_cnn"), data.timeseries(2, "test", seed=5).series),
        "tables": (mlp, torch.randn(2, 6)),
    }


ATTRIBUTION = [m for m in guide.METHODS.values() if m.explain is not None]


@pytest.mark.parametrize("method", ATTRIBUTION, ids=lambda m: m.name)
def test_data_flags_are_what_the_method_does(method, cases):
    for kind, (model, x) in cases.items():
        before = state_of(model)
        if kind in method.data:
            a = method.explain(model, x, None)
            assert a.shape == x.shape and torch.isfinite(a).all(), kind
        else:
            with pytest.raises((ValueError, TypeError, NotImplementedError)):
                method.explain(model, x, None)
        assert_unchanged(before, model)


@pytest.mark.parametrize("method", ATTRIBUTION, ids=lambda m: m.name)
def test_negative_evidence_flag(method, cases):
    model, x = cases["images" if "images" in method.data else "time series"]
    a = method.explain(model, x, None)
    if method.negative_evidence:
        assert (a < 0).any()
    elif method.name not in ("deconvnet", "guided_backprop"):  # signed, but not evidence (see Method)
        assert (a >= -1e-6 * a.abs().max()).all()


def test_completeness_flags(cases):
    model, x = cases["images"]
    logits = model(x).detach()
    target = logits.argmax(1)
    picked = logits[torch.arange(2), target]
    dtd = guide.METHODS["deep_taylor"].explain(model, x, target)
    assert torch.allclose(dtd.sum((1, 2, 3)), picked, rtol=1e-4)
    background = x.mean(dim=(0, 2, 3), keepdim=True).expand(1, *x.shape[1:])
    deep = guide.METHODS["deep_shap"].explain(model, x, target)
    assert torch.allclose(deep.sum((1, 2, 3)), picked - model(background)[0, target].detach(), atol=1e-3)


def test_every_method_has_valid_properties():
    for name, m in guide.METHODS.items():
        assert m.name == name and m.needs in guide.ACCESS and set(m.data) <= set(guide.DATA) and m.data
        assert m.summary and 0 <= m.chapter <= 10


def test_attribution_methods_for_compare(cases):
    images = guide.attribution_methods("images")
    assert list(images)[:2] == ["saliency", "gradient_x_input"] and "timereise" not in images
    assert "timereise" in guide.attribution_methods("time series")
    picked = guide.attribution_methods("images", ["rise", "lrp"])
    assert list(picked) == ["rise", "lrp"]
    with pytest.raises(ValueError, match="names.*timereise"):
        guide.attribution_methods("images", ["timereise"])
    with pytest.raises(ValueError, match="data"):
        guide.attribution_methods("audio")
    model, x = cases["images"]
    rows = evaluate.compare(guide.attribution_methods("images", ["saliency"]), model, x, steps=2, progress=False)
    assert [row.method for row in rows] == ["random", "saliency"]


def test_choose_black_box_images():
    choice = guide.choose(access="outputs", data="images")
    assert set(choice.names) == {"kernel_shap", "lime", "sliding_window", "rise"}
    assert "needs layers" in choice.excluded["lrp"]
    assert "tables" in choice.excluded["lore"]
    assert "kernel_shap" in repr(choice)


def test_choose_tables_local_and_global():
    assert set(guide.choose(access="outputs", data="tables").names) == {"lore"}
    assert set(guide.choose(access="outputs", data="tables", global_view=True).names) == {"surrogate_tree"}
    with_gradients = guide.choose(access="gradients", data="tables", negative_evidence=True).names
    assert with_gradients == ["gradient_x_input", "integrated_gradients", "smoothgrad"]


def test_choose_negative_evidence_and_time_series():
    names = guide.choose(access="gradients", data="images", negative_evidence=True).names
    assert set(names) == {"gradient_x_input", "integrated_gradients", "smoothgrad", "kernel_shap", "lime",
                          "sliding_window"}  # fmt: skip
    series = guide.choose(access="layers", data="time series").names
    assert "timereise" in series and "kernel_shap" not in series and "lore" not in series


def row(name, seconds, insertion, deletion):
    return evaluate.Scores(name, seconds, deletion, insertion, 0.0)


def test_choose_with_scores_sorts_and_checks_the_budget():
    scores = [row("sliding_window", 0.5, 0.6, 0.2), row("rise", 3.0, 0.9, 0.1), row("kernel_shap", 0.2, 0.7, 0.2)]
    choice = guide.choose(access="outputs", scores=scores)
    assert choice.names == ["rise", "kernel_shap", "sliding_window", "lime"]  # the unmeasured last
    assert "insertion 0.90" in "; ".join(choice.suitable[0].reasons)
    within = guide.choose(access="outputs", seconds_per_input=1.0, scores=scores)
    assert within.names == ["kernel_shap", "sliding_window", "lime"] and "budget" in within.excluded["rise"]
    unmeasured = guide.choose(access="outputs", seconds_per_input=1.0)
    assert "not measured" in "; ".join(unmeasured.suitable[0].reasons)


def test_choose_rejects_bad_arguments():
    with pytest.raises(ValueError, match="access"):
        guide.choose(access="white-box")
    with pytest.raises(ValueError, match="data"):
        guide.choose(data="video")
    with pytest.raises(ValueError, match="seconds_per_input"):
        guide.choose(seconds_per_input=-1)
    with pytest.raises(TypeError, match="scores"):
        guide.choose(scores=[{"method": "rise"}])


def test_rank_normalize_closed_form():
    a = torch.tensor([[[3.0, -1.0], [0.5, 10.0]], [[1.0, 1.0], [2.0, 1.0]]])
    expected = torch.tensor([[[2, 0], [1, 3]], [[1, 1], [3, 1]]]) / 3
    assert torch.equal(guide.rank_normalize(a), expected)


def test_combine_is_the_mean_of_ranks(cases):
    model, x = cases["images"]
    sal, gxi = guide.METHODS["saliency"].explain, guide.METHODS["gradient_x_input"].explain
    before = state_of(model)
    combined = guide.combine({"saliency": sal, "gxi": gxi})(model, x)
    expected = (guide.rank_normalize(sal(model, x)) + guide.rank_normalize(gxi(model, x))) / 2
    assert torch.allclose(combined, expected)
    unbatched = guide.combine([sal, gxi])(model, x[0])  # float noise of 6e-7 may swap near-tied ranks
    assert unbatched.shape == x[0].shape and (unbatched - expected[0]).abs().max() < 1e-3
    assert_unchanged(before, model)
    assert math.isclose(combined.mean().item(), 0.5, abs_tol=1e-3)
    with pytest.raises(TypeError, match="methods"):
        guide.combine([sal])


def test_last_conv():
    assert guide.last_conv(models.load("shapes_cnn")) == "features.8"
    with pytest.raises(NotImplementedError, match="convolution"):
        guide.last_conv(nn.Sequential(nn.Linear(2, 2)))


def test_choose_rank_by_other_scores():
    scores = [row("sliding_window", 0.5, 0.6, 0.2), row("rise", 3.0, 0.9, 0.1), row("kernel_shap", 0.2, 0.7, 0.2)]
    scores[0].aopc, scores[1].aopc, scores[2].aopc = 12.0, 10.0, float("nan")
    by_aopc = guide.choose(access="outputs", scores=scores, rank_by="aopc")
    assert by_aopc.names == ["sliding_window", "rise", "kernel_shap", "lime"]  # NaN and unmeasured last
    assert "AOPC 12" in "; ".join(by_aopc.suitable[0].reasons)
    assert guide.choose(access="outputs", scores=scores, rank_by="speed").names[0] == "kernel_shap"
    with pytest.raises(ValueError, match="rank_by"):
        guide.choose(rank_by="beauty")


def test_properties_of_methods_and_combinations():
    assert guide.properties("rise") == {"needs": "outputs", "signed": "no", "random": "yes"}
    assert guide.properties("lrp") == {"needs": "layers", "signed": "yes", "random": "no"}
    assert guide.properties("lrp + rise") == {"needs": "layers", "signed": "no", "random": "yes"}
    assert guide.properties("gradient_x_input + sliding_window")["needs"] == "gradients"
    assert guide.properties("random") is None and guide.properties("lrp + magic") is None


def test_table_puts_properties_beside_the_scores():
    scores = [row("random", 0.001, 0.5, 0.3), row("rise", 3.0, 0.9, 0.1), row("lrp + rise", 3.1, 0.8, 0.2)]
    scores[1].mass_accuracy = 0.25
    text = guide.table(scores, extra={"tag": {"rise": 0.5}})
    lines = text.splitlines()
    assert len(lines) == 4 and lines[0].split() == [
        "method", "needs", "signed", "random", "s/image", "deletion", "insertion", "AOPC", "mass", "tag"
    ]  # fmt: skip
    assert lines[1].split()[:4] == ["random", "-", "-", "-"] and lines[1].split()[-2:] == ["-", "-"]
    assert lines[2].split() == ["rise", "outputs", "no", "yes", "3", "0.1", "0.9", "0", "0.25", "0.5"]
    assert "completeness" not in text  # all-NaN columns are left out
    markdown = guide.table(scores, markdown=True).splitlines()
    assert markdown[0].startswith("| method | needs |") and set(markdown[1]) <= set("|- ")
    assert markdown[4] == "| lrp + rise | layers | no | yes | 3.1 | 0.2 | 0.8 | 0 | - |"
    with pytest.raises(TypeError, match="extra"):
        guide.table(scores, extra={"tag": 0.5})
    with pytest.raises(TypeError, match="scores"):
        guide.table([{"method": "rise"}])


class BlackBox(nn.Module):
    """Only predictions: the network is hidden from ``named_modules`` and no gradient flows out."""

    def __init__(self, net):
        super().__init__()
        self._hidden = [net]

    def forward(self, x):
        with torch.no_grad():
            return self._hidden[0](x)


@pytest.mark.parametrize("method", [m for m in ATTRIBUTION if "images" in m.data], ids=lambda m: m.name)
def test_needs_flag_on_a_black_box(method, cases):
    model, x = cases["images"]
    black_box = BlackBox(model).eval()
    if method.needs == "outputs":
        assert torch.allclose(method.explain(black_box, x[:1], 0), method.explain(model, x[:1], 0), atol=1e-6)
    else:
        with pytest.raises((ValueError, NotImplementedError), match="^model: "):  # a clear error, not torch's
            method.explain(black_box, x[:1], 0)


@pytest.mark.parametrize("method", ATTRIBUTION, ids=lambda m: m.name)
def test_one_unbatched_sample_is_explained_as_a_batch_of_one(method, cases):
    model, x = cases["images" if "images" in method.data else "time series"]
    single = method.explain(model, x[0], None)
    assert single.shape == x[0].shape
    torch.testing.assert_close(single, method.explain(model, x[:1], None)[0])


def test_attribution_methods_declare_their_properties():
    """Every public method that returns maps (declares ``signed``) also declares what it needs from the model and
    whether it is random, next to its code; it is random exactly when it takes a seed. The guide's rows of these
    methods are what they declare."""
    from test_contract import METHODS  # the sweep's discovery: every public method with model and x

    maps = {name: m for name, m in METHODS.items() if m.signed is not None}
    maps = {name: m for name, m in maps.items() if "explain" not in inspect.signature(m).parameters}  # aggregators
    assert len(maps) >= 12  # (shap.global_importance) have the properties of the method they are given
    for name, method in maps.items():
        assert method.needs in guide.ACCESS, name
        assert method.random == ("seed" in inspect.signature(method).parameters), name
        assert method.sums_to is None or isinstance(method.sums_to, str), name
    for row in guide.METHODS.values():  # those whose explain is the package's method itself
        if row.explain in maps.values():
            assert (row.needs, row.random, row.completeness) == (row.explain.needs, row.explain.random,
                                                                  row.explain.sums_to), row.name
