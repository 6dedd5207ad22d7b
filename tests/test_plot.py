"""Tests of xai_course.plot: signed and unsigned heatmaps, grids, curves and galleries."""

import functools

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from test_contract import METHODS, _arguments, _call, _home, _world  # noqa: E402

import xai_course as xc  # noqa: E402
from xai_course import plot  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_all_zero_map_draws_white_without_warning():
    with np.errstate(all="raise"):
        shown = plot.heatmap(torch.zeros(3, 8, 8), image=torch.rand(3, 8, 8))
    assert np.all(np.asarray(shown.get_array()) == 0)
    vmin, vmax = shown.get_clim()
    assert vmin == -vmax and vmax > 0
    white = shown.cmap(shown.norm(0.0))
    assert np.allclose(white[:3], 1.0, atol=0.05)


@pytest.mark.parametrize("mode", ["robust", "max", None])
def test_limits_are_symmetric(mode):
    shown = plot.heatmap(torch.tensor([[0.0, 1.0], [-0.2, 3.0]]), normalize=mode)
    vmin, vmax = shown.get_clim()
    assert vmin == -vmax
    assert vmax == (3.0 if mode is None else 1.0)


def test_colours_red_positive_blue_negative():
    shown = plot.heatmap(torch.tensor([[1.0, -1.0]]), normalize="max")
    red, blue = (shown.cmap(shown.norm(v)) for v in (1.0, -1.0))
    assert red[0] > red[2] and blue[2] > blue[0]


def test_channels_are_summed_and_shapes_accepted():
    r = torch.randn(3, 5, 6)
    expected = plot.normalize(r.sum(0), mode="max")
    for shape in [(3, 5, 6), (1, 3, 5, 6)]:
        assert np.allclose(plot.normalize(r.reshape(shape), mode="max"), expected)
    assert np.allclose(plot.normalize(r.numpy(), mode=None), r.sum(0).numpy(), atol=1e-6)


def test_robust_normalization_ignores_one_outlier():
    r = torch.ones(40, 40)  # 1600 pixels: the 99.5th percentile lies among the ones
    r[0, 0] = 1000.0
    robust, largest = plot.normalize(r), plot.normalize(r, mode="max")
    assert robust.min() >= -1 and robust.max() <= 1
    assert robust[5, 5] == 1.0 and robust[0, 0] == 1.0  # the outlier is clipped, the rest not washed out
    assert largest[5, 5] == pytest.approx(0.001)


def test_sparse_map_falls_back_to_max():
    r = torch.zeros(20, 20)
    r[3, 4] = -2.0
    assert plot.normalize(r)[3, 4] == -1.0


@pytest.mark.parametrize("bad", [torch.zeros(2, 3, 4, 5), torch.zeros(5), torch.zeros(1, 1, 1, 4, 4)])
def test_wrong_shape_names_attribution(bad):
    with pytest.raises(ValueError, match="attribution"):
        plot.heatmap(bad)


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="attribution"):
        plot.heatmap([[0.0, 1.0]])
    with pytest.raises(ValueError, match="normalize"):
        plot.heatmap(torch.zeros(4, 4), normalize="minmax")
    with pytest.raises(ValueError, match="percentile"):
        plot.normalize(torch.zeros(4, 4), percentile=0)
    with pytest.raises(ValueError, match="image"):
        plot.heatmap(torch.zeros(4, 4), image=torch.zeros(3, 5, 5))
    with pytest.raises(ValueError, match="image"):
        plot.heatmap(torch.zeros(4, 4), image=torch.full((3, 4, 4), 2.0))


def test_heatmap_draws_on_given_axes_with_image_underneath():
    fig, ax = plt.subplots()
    shown = plot.heatmap(torch.randn(3, 6, 6), image=torch.rand(3, 6, 6), ax=ax, title="t", colorbar=True)
    assert shown.axes is ax and len(ax.images) == 2 and shown.get_alpha() == 0.6
    assert ax.get_title() == "t" and len(fig.axes) == 2


def test_series():
    shown = plot.series(torch.randn(2, 30), torch.randn(2, 30))
    assert np.asarray(shown.get_array()).shape == (1, 30) and len(shown.axes.lines) == 2
    with pytest.raises(ValueError, match="signal"):
        plot.series(torch.randn(30), torch.randn(31))


def test_grid_has_one_row_per_image_and_one_column_per_method():
    images = torch.rand(3, 3, 8, 8)
    maps = {"gradient": torch.randn(3, 3, 8, 8), "zeros": torch.zeros(3, 1, 8, 8)}
    fig = plot.grid(images, maps, row_labels=["a", "b", "c"])
    assert len(fig.axes) == 3 * 3
    assert [ax.get_title() for ax in fig.axes[:3]] == ["image", "gradient", "zeros"]
    assert len(plot.grid(images).axes) == 3
    with pytest.raises(ValueError, match="maps\\['bad'\\]"):
        plot.grid(images, {"bad": torch.zeros(2, 3, 8, 8)})


def test_shared_scale_keeps_amplitudes_comparable():
    """Each map on its own scale hides that one map is ten times weaker; a shared scale shows it."""
    strong = torch.zeros(2, 1, 8, 8)
    strong[:, 0, 2, 3] = 10.0
    weak = strong / 10
    for normalize in (None, "max"):
        fig = plot.grid(torch.rand(2, 3, 8, 8), {"strong": strong, "weak": weak}, normalize=normalize, shared=True)
        assert {ax.images[0].get_clim() for ax in fig.axes[1::3] + fig.axes[2::3]} == {(-10.0, 10.0)}
        weak_drawn = np.asarray(fig.axes[2].images[0].get_array())
        assert weak_drawn.max() == 1.0  # drawn in its own units, a tenth of the colour range
    robust = plot.grid(torch.rand(2, 3, 8, 8), {"strong": strong, "weak": weak}, shared=True)
    assert 10.0 > robust.axes[1].images[0].get_clim()[1] > 1.0  # the 99.5th percentile of all 256 values
    apart = plot.grid(torch.rand(2, 3, 8, 8), {"strong": strong, "weak": weak})
    weak_alone = apart.axes[2].images[0]  # on its own scale the weak map looks as strong as the other
    assert np.asarray(weak_alone.get_array()).max() == 1.0 and weak_alone.get_clim() == (-1, 1)
    shown = plot.heatmap(weak[0], normalize=None, vmax=2.0)
    assert shown.get_clim() == (-2.0, 2.0)
    with pytest.raises(ValueError, match="vmax: only with normalize=None"):
        plot.heatmap(weak[0], vmax=2.0)
    with pytest.raises(ValueError, match="vmax: expected a finite number > 0"):
        plot.heatmap(weak[0], normalize=None, vmax=0.0)
    with pytest.raises(TypeError, match="shared"):
        plot.grid(torch.rand(2, 3, 8, 8), {"weak": weak}, shared="yes")


def test_curve_with_auc_in_legend():
    x = np.linspace(0, 1, 11)
    ax = plot.curve(x, [x, 1 - x], labels=["up", "down"], fill=True, xlabel="fraction removed")
    assert len(ax.lines) == 2
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["up (AUC 0.500)", "down (AUC 0.500)"]
    with pytest.raises(ValueError, match="ys"):
        plot.curve(x, np.zeros(5))


def test_show_images_with_masks():
    images, masks = torch.rand(5, 3, 8, 8), torch.zeros(5, 8, 8, dtype=torch.bool)
    masks[:, 2:5, 2:5] = True
    fig = plot.show_images(images, torch.tensor([0, 1, 0, 1, 0]), masks, classes=["circle", "square"], ncols=3)
    assert len(fig.axes) == 6
    assert fig.axes[1].get_title() == "square"
    assert all(len(ax.collections) == 2 for ax in fig.axes[:5])  # two outline strokes each
    with pytest.raises(ValueError, match="masks"):
        plot.show_images(images, masks=masks[:2])


def test_odd_inputs_get_errors_that_name_the_argument():
    with pytest.raises(ValueError, match="attribution"):
        plot.heatmap(torch.zeros(0, 4))
    with pytest.raises(TypeError, match="ax"):
        plot.heatmap(torch.zeros(4, 4), ax="left")
    with pytest.raises(ValueError, match="alpha"):
        plot.series(torch.zeros(5), torch.zeros(5), alpha=2)
    with pytest.raises(TypeError, match="maps"):
        plot.grid(torch.rand(2, 3, 4, 4), [torch.zeros(2, 4, 4)])
    with pytest.raises(ValueError, match="images"):
        plot.grid(torch.rand(0, 3, 4, 4))
    with pytest.raises(ValueError, match="ys"):
        plot.curve(np.linspace(0, 1, 5), [np.ones(5), np.ones(4)])
    with pytest.raises(ValueError, match="ys"):
        plot.curve(np.linspace(0, 1, 5), [])
    with pytest.raises(ValueError, match="labels"):
        plot.show_images(torch.rand(3, 3, 4, 4), [0, 1, -1], classes=["a", "b", "c"])  # not classes[-1]
    with pytest.raises(TypeError, match="labels"):
        plot.show_images(torch.rand(2, 3, 4, 4), [0.5, 1.0])
    with pytest.raises(ValueError, match="masks"):
        plot.show_images(torch.rand(2, 3, 4, 4), masks=torch.rand(2, 4, 4))  # not thresholded at 0


def test_odd_shapes_and_a_large_float64_map():
    shown = plot.heatmap(torch.full((2, 3), 1e300, dtype=torch.float64) * torch.tensor([[1, -1, 0.5]] * 2).double())
    np.testing.assert_allclose(shown.get_array(), [[1, -1, 0.5]] * 2)  # float32 would have made it inf
    shown = plot.heatmap(np.random.rand(1, 5, 9), image=torch.rand(1, 1, 5, 9))
    assert np.asarray(shown.get_array()).shape == (5, 9)
    fig = plot.show_images(torch.rand(1, 1, 5, 9), torch.tensor([1]), np.ones((1, 5, 9)), classes=["a", "b"])
    assert fig.axes[0].get_title() == "b"


# ----------------------------------------------------------------------------- colours that mean one thing


def test_an_unsigned_method_gets_the_sequential_map_with_limits_from_the_data():
    rise_like = torch.linspace(0.3, 0.7, 64).reshape(1, 8, 8)  # expected probabilities: positive everywhere
    raw = plot.heatmap(rise_like, method=xc.occlusion.rise, normalize=None)
    assert raw.cmap.name == plot.SEQUENTIAL
    assert np.allclose(raw.get_clim(), (0.3, 0.7))  # the map's own range, no symmetry around zero
    scaled = plot.heatmap(rise_like, method=xc.occlusion.rise, normalize="max")
    assert scaled.get_clim() == (0.0, 1.0)
    assert np.asarray(scaled.get_array()).min() == 0.0 and np.asarray(scaled.get_array()).max() == 1.0
    centred = plot.heatmap(rise_like - rise_like.mean(), method=xc.occlusion.rise, normalize="max")
    assert np.allclose(centred.get_array(), scaled.get_array())  # a shifted map draws the same: still unsigned
    shown = plot.heatmap(rise_like, method=xc.occlusion.rise, normalize=None, vmin=0.0, vmax=1.0)
    assert shown.get_clim() == (0.0, 1.0)
    constant = plot.heatmap(torch.full((4, 4), 0.5), signed=False, normalize=None)
    assert constant.get_clim() == (0.5, 1.5)  # vmin < vmax even for a constant map


def test_a_signed_method_gets_the_diverging_map_symmetric_around_zero():
    r = torch.tensor([[0.0, 1.0], [-0.2, 3.0]])
    for shown in (plot.heatmap(r, method=xc.lrp.explain, normalize=None), plot.heatmap(r, normalize=None)):
        assert shown.cmap.name == plot.CMAP  # declared signed, or nothing declared: signed
        assert shown.get_clim() == (-3.0, 3.0)
    assert plot.heatmap(r, signed=False).cmap.name == plot.SEQUENTIAL
    assert np.allclose(plot.normalize(r, "max", signed=False), [[0.2 / 3.2, 1.2 / 3.2], [0.0, 1.0]])


def test_a_declaration_can_depend_on_the_settings():
    assert not xc.core.is_signed(xc.gradient.saliency)  # abs=True: magnitudes
    assert xc.core.is_signed(functools.partial(xc.gradient.saliency, abs=False))
    assert xc.core.is_signed(xc.shap.global_importance)  # class means of signed maps
    assert not xc.core.is_signed(functools.partial(xc.shap.global_importance, xc.shap.deep, reduce="abs"))
    signed_gradient = plot.heatmap(torch.randn(3, 4, 4), method=functools.partial(xc.gradient.saliency, abs=False))
    assert signed_gradient.cmap.name == plot.CMAP
    registry = xc.guide.METHODS  # chapter 08's methods with the course settings
    assert xc.core.is_signed(registry["lrp"].explain) and not xc.core.is_signed(registry["rise"].explain)
    assert not xc.core.is_signed(xc.guide.combine([xc.gradient.saliency, xc.lrp.explain]))  # mean ranks


def test_series_and_grid_follow_the_method():
    shading = plot.series(torch.rand(30), torch.randn(30), method=xc.occlusion.timereise, colorbar=True)
    assert shading.cmap.name == plot.SEQUENTIAL and shading.get_clim() == (0.0, 1.0)
    assert "unsigned" in shading.colorbar.ax.get_ylabel()
    images = torch.rand(2, 3, 8, 8)
    maps = {"LRP": torch.randn(2, 3, 8, 8), "RISE": 0.5 + torch.rand(2, 1, 8, 8)}
    fig = plot.grid(images, maps, method={"LRP": xc.lrp.explain, "RISE": xc.occlusion.rise}, shared=True)
    lrp_map, rise_map = fig.axes[1].images[0], fig.axes[2].images[0]
    assert lrp_map.cmap.name == plot.CMAP and lrp_map.get_clim()[0] == -lrp_map.get_clim()[1]
    assert rise_map.cmap.name == plot.SEQUENTIAL
    low, high = rise_map.get_clim()
    assert 0.5 <= low < high <= 1.5  # from the RISE maps' own values, not symmetric around zero
    bars = [ax.get_ylabel() for ax in fig.axes[6:]]  # shared: a colour bar for each kind, without asking
    assert len(bars) == 2 and any("for" in b for b in bars) and any("unsigned" in b for b in bars)
    per_column = plot.grid(images, maps, signed={"LRP": True, "RISE": False})
    assert [ax.images[0].cmap.name for ax in per_column.axes[1:3]] == [plot.CMAP, plot.SEQUENTIAL]
    assert len(per_column.axes) == 6  # not shared: no colour bar unless asked
    one = plot.grid(images, {"RISE": maps["RISE"]}, method=xc.occlusion.rise, colorbar=True)
    assert one.axes[1].images[0].get_clim() == (0.0, 1.0) and len(one.axes) == 5


def test_bad_signed_or_method_gets_a_clear_error():
    a = torch.rand(4, 4)
    with pytest.raises(TypeError, match="^signed: expected True"):
        plot.heatmap(a, signed="yes")
    with pytest.raises(ValueError, match="^signed, method: expected one of them"):
        plot.heatmap(a, method=xc.occlusion.rise, signed=False)
    with pytest.raises(TypeError, match="^method: expected a method that declares"):
        plot.heatmap(a, method=lambda model, x: x)
    with pytest.raises(TypeError, match="^method: .*xai_course.inversion.optimize, which declares nothing"):
        plot.heatmap(a, method=xc.inversion.optimize)  # returns images, not maps
    with pytest.raises(TypeError, match="^method: expected"):
        plot.series(torch.rand(5), torch.rand(5), method="rise")
    with pytest.raises(ValueError, match="^vmin: only for an unsigned map"):
        plot.heatmap(a, normalize=None, vmin=0.0)
    with pytest.raises(ValueError, match="^vmin, vmax: expected vmin < vmax"):
        plot.heatmap(a, signed=False, normalize=None, vmin=1.0, vmax=0.5)
    with pytest.raises(ValueError, match="^vmin: only with normalize=None"):
        plot.heatmap(a, signed=False, vmin=0.0)
    images, maps = torch.rand(2, 3, 4, 4), {"a": torch.rand(2, 4, 4), "b": torch.rand(2, 4, 4)}
    with pytest.raises(ValueError, match=r"^method: expected one entry per column .*missing \['b'\]"):
        plot.grid(images, maps, method={"a": xc.occlusion.rise})
    with pytest.raises(TypeError, match=r"^method\['b'\]: expected a method"):
        plot.grid(images, maps, method={"a": xc.occlusion.rise, "b": print})
    with pytest.raises(TypeError, match="^signed: expected True or False for every column"):
        plot.grid(images, maps, signed={"a": True, "b": 1})
    with pytest.raises(ValueError, match="^signed, method"):
        plot.grid(images, maps, signed={"a": True, "b": True}, method=xc.lrp.explain)
    with pytest.raises(TypeError, match="^colorbar"):
        plot.grid(images, maps, colorbar="yes")
    with pytest.raises(TypeError, match="^signed: expected True or False"):
        plot.normalize(a, signed=None)


def test_a_declaration_is_checked_where_the_method_is_defined():
    with pytest.raises(TypeError, match="^signed: expected True, False, None or a function"):
        xc.core.contract(signed="yes")(lambda model, x: x)
    with pytest.raises(TypeError, match=r"^signed: expected a function of settings of .*got one of \['absolute'\]"):
        xc.core.contract(signed=lambda absolute: not absolute)(lambda model, x, *, abs=True: x)

    @xc.core.contract(signed=False)
    def mine(model, x, target=None):
        return x

    assert mine.signed is False and plot.heatmap(torch.rand(4, 4), method=mine).cmap.name == plot.SEQUENTIAL


@pytest.mark.parametrize("name", METHODS)
def test_every_method_of_the_sweep_declares_whether_its_maps_are_signed(name):
    """Every public method with ``model`` and ``x`` (test_contract's sweep) carries a declaration; exactly those
    that return maps (one per sample, shaped like x) declare True or False, and the unsigned ones never return
    a negative value (magnitudes, probabilities, ranks)."""
    method = METHODS[name]
    assert hasattr(method, "signed"), f"{name} is not declared with core.contract"
    model, x = _world(_home(name))
    result = _call(name, _arguments(name, model, x, x))
    maps = isinstance(result, torch.Tensor) and result.shape[1:] == x.shape[1:]
    assert (method.signed is not None) == maps, f"{name}: declared {method.signed!r}, returned {type(result)}"
    if maps and not xc.core.is_signed(method):
        assert result.min() >= 0, name
