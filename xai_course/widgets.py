"""One builder for parameter explorers: sliders and menus around a plain function.

The explorer holds no logic of its own. A chapter writes a function ``callback(image=index, **parameters)`` in
the package, tests it like any other function, and hands it to ``explorer`` with the parameters to expose::

    box = explorer(show_occlusion, images, window=(4, 32, 4), baseline=["zero", "mean"])

Results are cached by parameter values, so going back to a setting redraws at once. An error in the callback is
raised, never hidden, so a notebook run fails on it. Introduced in chapter 00.
"""

from __future__ import annotations

import inspect
import io
import numbers
import traceback
from collections import OrderedDict
from collections.abc import Callable

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Image, clear_output, display
from matplotlib.figure import Figure

from . import plot
from .core import check_positive_int, describe


def _png(fig: Figure) -> Image:
    """Render ``fig`` to a PNG image and close it, so that it is shown only once."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    return Image(data=buffer.getvalue(), format="png")


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _control(name: str, spec, default) -> widgets.ValueWidget:
    """Build the widget of one parameter from a widget or a shorthand.

    ``(min, max, step)`` gives a slider (an IntSlider if all three are ints), a list a
    Dropdown, a bool a Checkbox. ``default`` (from the callback's signature) is the
    initial value when it fits. Chapter 00.
    """
    if isinstance(spec, widgets.ValueWidget):
        spec.description = spec.description or name
        return spec
    if isinstance(spec, bool):
        return widgets.Checkbox(value=spec, description=name)
    if isinstance(spec, list) and spec:
        return widgets.Dropdown(options=spec, value=default if default in spec else spec[0], description=name)
    if isinstance(spec, tuple) and len(spec) == 3 and all(_is_number(v) for v in spec):
        low, high, step = spec
        if not low <= high or not step > 0:
            raise ValueError(f"{name}: expected (min, max, step) with min <= max and step > 0, got {spec!r}")
        kind = int if all(isinstance(v, numbers.Integral) for v in spec) else float  # numpy ints too
        low, high, step = (kind(v) for v in spec)
        slider = widgets.IntSlider if kind is int else widgets.FloatSlider
        control = slider(min=low, max=high, step=step, value=low, description=name, continuous_update=False)
        if _is_number(default) and low <= default <= high:
            control.value = default
        return control
    raise TypeError(
        f"{name}: expected an ipywidgets widget, a (min, max, step) tuple, a non-empty list or a bool, "
        f"got {describe(spec)}"
    )


def _key(params: dict):
    """A hashable cache key for ``params``, or None when a value is unhashable."""
    key = tuple(sorted(params.items()))
    try:
        hash(key)
    except TypeError:
        return None
    return key


class Explorer(widgets.VBox):
    """Controls above an output area, redrawn from ``callback`` when a value changes.

    Build it with ``explorer``. ``render(**params)`` is the pure path behind the
    widget: it calls the callback (or reuses a cached result) and returns what is
    shown, without any browser. Chapter 00.
    """

    def __init__(self, callback: Callable, images, controls: dict[str, widgets.ValueWidget], cache_size: int):
        self.callback = callback
        self.images = images
        self.controls = controls
        self.output = widgets.Output()
        self._cache: OrderedDict = OrderedDict()
        self._cache_size = cache_size
        self._shown = None
        super().__init__([*controls.values(), self.output])
        for control in controls.values():
            control.observe(self._on_change, names="value")
        self._show(self.render())  # on construction: an error fails the cell

    def values(self) -> dict:
        """The current value of every control, by parameter name."""
        return {name: control.value for name, control in self.controls.items()}

    def render(self, **params):
        """Call the callback with ``params`` (missing ones from the controls) and return the result to show.

        Figures and arrays (drawn with ``plot.heatmap`` as signed maps, over the selected
        image if there are images) become a PNG ``Image``; strings and numbers become a ``str``.
        Exceptions of the callback propagate. Chapter 00.
        """
        params = {**self.values(), **params}
        key = _key(params)
        if key is not None and key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        result = self._displayable(self.callback(**params), params)
        if key is not None:
            self._cache[key] = result
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return result

    def _displayable(self, result, params: dict):
        if isinstance(result, Figure):
            return _png(result)
        if isinstance(result, (np.ndarray, torch.Tensor)) and result.ndim == 0:  # one number in an array
            return str(result.item())
        if isinstance(result, (np.ndarray, torch.Tensor)):
            image = None if self.images is None else self.images[params["image"]]
            return _png(plot.heatmap(result, image).figure)
        if isinstance(result, (str, numbers.Number)):
            return str(result)
        raise TypeError(
            f"callback: expected it to return a matplotlib Figure, an array or tensor, a string or a number, "
            f"got {describe(result)}"
        )

    def _show(self, result) -> None:
        with self.output:
            clear_output(wait=True)
            if isinstance(result, str):
                print(result)
            else:
                display(result)
        self._shown = _key(self.values())

    def _on_change(self, change) -> None:
        if self._shown is not None and _key(self.values()) == self._shown:
            return
        try:
            result = self.render()
        except Exception:
            with self.output:  # visible under the controls, then raised for the notebook runner
                clear_output(wait=True)
                traceback.print_exc()
            raise
        self._show(result)


def explorer(callback: Callable, images=None, *, cache_size: int = 32, **parameter_widgets) -> Explorer:
    """Build a widget that explores the parameters of ``callback``.

    Parameters
    ----------
    callback : a plain function ``callback(**params)`` (``callback(image=index, **params)``
        when ``images`` is given) returning a matplotlib Figure, an array or tensor
        (drawn as a signed heatmap; for an unsigned map return a Figure drawn with
        ``plot.heatmap(..., method=...)``), or a string or number (printed).
    images : optional tensor (N, 3, H, W); adds an "image" slider selecting the index.
    cache_size : how many results to keep (least recently used go first).
    **parameter_widgets : parameter name -> an ipywidgets widget, or a shorthand:
        ``(min, max, step)`` a slider, a list a Dropdown, a bool a Checkbox. A slider or
        Dropdown starts at the callback's default for that parameter when it has one.

    Returns
    -------
    An ``Explorer`` (an ipywidgets VBox: the controls, then the output). It renders once
    at once, so an error in the callback surfaces when the notebook runs. Chapter 00.
    """
    if not callable(callback):
        raise TypeError(f"callback: expected a function, got {describe(callback)}")
    check_positive_int("cache_size", cache_size)
    signature = inspect.signature(callback).parameters
    defaults = {name: p.default for name, p in signature.items() if p.default is not inspect.Parameter.empty}
    controlled = (["image"] if images is not None else []) + list(parameter_widgets)
    missing = [name for name in controlled if name not in signature]
    if missing and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.values()):
        raise TypeError(f"callback: expected parameters {missing} (one per control), got parameters {list(signature)}")
    controls = {}
    if images is not None:
        if "image" in parameter_widgets:
            raise ValueError("image: given both as images and as a parameter widget; pass only one")
        if not isinstance(images, (torch.Tensor, np.ndarray)) or images.ndim != 4 or len(images) == 0:
            raise ValueError(f"images: expected a tensor (N, 3, H, W) with N >= 1, got {describe(images)}")
        controls["image"] = widgets.IntSlider(min=0, max=len(images) - 1, description="image", continuous_update=False)
    for name, spec in parameter_widgets.items():
        controls[name] = _control(name, spec, defaults.get(name))
    _align_labels(controls.values())
    return Explorer(callback, images, controls, cache_size)


def _align_labels(controls) -> None:
    """One label width for all controls, wide enough for the longest: the default width cuts "model_name" short,
    and a width per label would leave the sliders unaligned."""
    width = f"{max((len(c.description) for c in controls), default=0) + 1}ch"
    for control in controls:
        control.style.description_width = width
