"""Tests of xai_course.widgets: the explorer renders, caches and raises without a browser."""

import matplotlib

matplotlib.use("Agg")

import ipywidgets as widgets  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from IPython.display import Image  # noqa: E402

from xai_course import widgets as xw  # noqa: E402


class Counting:
    """A callback that records its calls and returns a small figure."""

    def __init__(self):
        self.calls = []

    def __call__(self, image=0, size=2, mode="a", flag=False):
        self.calls.append((image, size, mode, flag))
        fig, ax = plt.subplots(figsize=(1, 1))
        ax.plot([0, size])
        return fig


def test_renders_once_on_construction_and_again_on_change():
    callback = Counting()
    box = xw.explorer(callback, torch.rand(3, 3, 4, 4), size=(1, 5, 1), mode=["a", "b"], flag=True)
    assert isinstance(box, widgets.VBox) and box.children[-1] is box.output
    assert callback.calls == [(0, 2, "a", True)]  # the slider starts at the callback's default
    box.controls["size"].value = 4
    box.controls["image"].value = 2
    assert callback.calls[1:] == [(0, 4, "a", True), (2, 4, "a", True)]
    assert plt.get_fignums() == []  # rendered figures are closed, not left to pyplot


def test_same_value_and_revisited_value_do_not_recompute():
    callback = Counting()
    box = xw.explorer(callback, size=(1, 5, 1))
    box.controls["size"].value = 2  # unchanged
    assert len(callback.calls) == 1
    box.controls["size"].value = 3
    box.controls["size"].value = 2  # cached
    assert len(callback.calls) == 2
    assert isinstance(box.render(size=3), Image) and len(callback.calls) == 2


def test_cache_is_least_recently_used():
    callback = Counting()
    box = xw.explorer(callback, cache_size=2, size=(1, 5, 1))
    box.render(size=3)
    box.render(size=2)  # refreshes 2; 3 is now the oldest
    box.render(size=4)  # evicts 3
    box.render(size=2)
    assert len(callback.calls) == 3
    box.render(size=3)
    assert len(callback.calls) == 4


def test_shorthands_and_widgets():
    box = xw.explorer(lambda a, b, c, d: "text", a=(0.0, 1.0, 0.1), b=[1, 2], c=False, d=widgets.IntText(5))
    kinds = [type(box.controls[name]) for name in "abcd"]
    assert kinds == [widgets.FloatSlider, widgets.Dropdown, widgets.Checkbox, widgets.IntText]
    assert box.controls["d"].description == "d"
    with pytest.raises(TypeError, match="size"):
        xw.explorer(lambda size: 0, size=(1, 2))


def test_arrays_are_drawn_as_heatmaps_and_numbers_printed():
    box = xw.explorer(lambda image: torch.randn(3, 4, 4), torch.rand(2, 3, 4, 4))
    assert isinstance(box.render(image=1), Image)
    assert xw.explorer(lambda x: x / 2, x=(0, 4, 2)).render(x=4) == "2.0"


def test_callback_errors_propagate():
    def broken(size=1):
        if size > 1:
            raise RuntimeError("broken callback")
        return "ok"

    box = xw.explorer(broken, size=(1, 3, 1))
    with pytest.raises(RuntimeError, match="broken callback"):
        box.render(size=2)
    with pytest.raises(RuntimeError, match="broken callback"):
        box.controls["size"].value = 3
    with pytest.raises(RuntimeError, match="broken callback"):
        xw.explorer(broken, size=(2, 3, 1))
    with pytest.raises(TypeError, match="callback"):
        xw.explorer(lambda: None)


def test_controls_and_callback_parameters_are_checked():
    with pytest.raises(ValueError, match="size"):
        xw.explorer(lambda size: "x", size=(5, 1, 1))
    with pytest.raises(ValueError, match="size"):
        xw.explorer(lambda size: "x", size=(1, 5, 0))
    with pytest.raises(TypeError, match="callback"):
        xw.explorer(lambda image=0: "x", torch.rand(2, 3, 4, 4), size=(1, 5, 1))  # no parameter size
    box = xw.explorer(lambda **params: torch.tensor(0.5), k=(np.int64(1), np.int64(3), np.int64(1)))
    assert isinstance(box.controls["k"], widgets.IntSlider) and box.render() == "0.5"


def test_labels_are_shown_whole():
    """The default description width cuts "model_name" to "model_na..."; every control shows its whole label, and
    all labels share one width so that the controls line up."""

    def show(image=0, model_name="a", epsilon=1e-6, flag=True, steps=3):
        return "ok"

    box = xw.explorer(show, np.zeros((2, 3, 4, 4)), model_name=["a", "b"], flag=True, steps=(1, 5, 1),
                      epsilon=widgets.FloatLogSlider(value=1e-6, min=-6, max=1))  # fmt: skip
    widths = {name: c.style.description_width for name, c in box.controls.items()}
    assert widths == dict.fromkeys(box.controls, f"{len('model_name') + 1}ch")  # the longest label, all aligned
    assert box.controls["epsilon"].description == "epsilon"
