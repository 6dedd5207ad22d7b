"""Figures of the course: heatmaps, method grids, curves and image galleries.

Colours mean one thing. A signed map (evidence for and against the class: LRP, SHAP, gradient x input, occlusion
drops, ...) is drawn in ``CMAP``, ``RdBu_r`` (ColorBrewer, colour-blind safe), symmetric around zero: red is
evidence for the class, blue evidence against it, white is no evidence. An unsigned map (magnitudes, RISE's
expected probabilities, ranks: values whose zero is not "no evidence") is drawn in ``SEQUENTIAL``, ``viridis``,
from the map's smallest value (dark) to its largest (yellow). The drawing functions read which from the method
(``method=occlusion.rise``), as each method declares it (``core.contract``, ``core.is_signed``), or from
``signed=``; without either a map is drawn as signed. Maps are normalized the same way everywhere (see
``normalize``), so figures of different chapters can be compared. The functions draw on a matplotlib ``Axes``
they are given, or on a new figure; they never call ``plt.show()``. Introduced in chapter 00.
"""

from __future__ import annotations

import ast
import inspect
import math
import textwrap
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from scipy.integrate import trapezoid

from .core import describe, is_signed

CMAP = "RdBu_r"  # signed maps: red for, blue against, white zero
SEQUENTIAL = "viridis"  # unsigned maps: dark low, yellow high; readable over the grey image
MODES = ("robust", "max", None)


def _to_numpy(value, name: str) -> np.ndarray:
    """``value`` (tensor or array) as a float64 numpy array with at least one value, all finite."""
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"{name}: expected real numbers, got a tensor of dtype {value.dtype}")
        value = value.detach().cpu().double().numpy()  # float64: a large float64 map stays finite
    elif not isinstance(value, np.ndarray):
        raise TypeError(f"{name}: expected a torch tensor or numpy array, got {describe(value)}")
    if value.dtype == bool or not np.issubdtype(value.dtype, np.number) or np.iscomplexobj(value):
        raise TypeError(f"{name}: expected real numbers, got an array of dtype {value.dtype}")
    value = value.astype(np.float64)
    if value.size == 0:
        raise ValueError(f"{name}: expected at least one value, got an empty array of shape {value.shape}")
    if not np.isfinite(value).all():
        raise ValueError(f"{name}: expected finite values, got an array containing NaN or inf")
    return value


def _shape(value: np.ndarray) -> str:
    return f"an array of shape {value.shape}"


def _one_sample(value, spatial: int, name: str) -> np.ndarray:
    """``value`` as one sample ``(C, *S)`` (``spatial`` dimensions in S) when given as ``(C, *S)``, ``(1, C, *S)``
    or ``S`` alone; any other shape is returned as it is, for the caller to refuse."""
    value = _to_numpy(value, name)
    if value.ndim == spatial + 2 and value.shape[0] == 1:
        value = value[0]
    if value.ndim == spatial:
        value = value[None]
    return value


def _summed(attribution, spatial: int) -> np.ndarray:
    """Sum the channels of one map (``spatial`` = 2) into ``(H, W)``, of one series (``spatial`` = 1) into ``(L,)``."""
    r = _to_numpy(attribution, "attribution")
    if r.ndim == spatial + 2 and r.shape[0] == 1:
        r = r[0]
    if r.ndim == spatial + 1:
        return r.sum(axis=0)
    if r.ndim == spatial:
        return r
    if spatial == 2:
        raise ValueError(f"attribution: expected one map of shape (C, H, W), (H, W) or (1, C, H, W), got {_shape(r)}")
    raise ValueError(f"attribution: expected one series of shape (C, L), (L,) or (1, C, L), got {_shape(r)}")


def _as_image(image, name: str = "image") -> np.ndarray:
    """An image ``(C, H, W)`` (C = 1 or 3), ``(1, C, H, W)`` or ``(H, W)`` in [0, 1] as ``(H, W, 3)``."""
    x = _one_sample(image, 2, name)
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"{name}: expected an image of shape (3, H, W), (1, H, W) or (H, W), got {_shape(x)}")
    if x.min() < 0 or x.max() > 1:
        raise ValueError(f"{name}: expected values in [0, 1], got values in [{x.min():.3g}, {x.max():.3g}]")
    return np.broadcast_to(x, (3, *x.shape[1:])).transpose(1, 2, 0)


def _as_batch(images, name: str = "images") -> np.ndarray:
    """Images ``(N, C, H, W)`` with C = 1 or 3, in [0, 1], as ``(N, H, W, 3)``."""
    x = _to_numpy(images, name)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"{name}: expected images of shape (N, 3, H, W) or (N, 1, H, W), got {_shape(x)}")
    return np.stack([_as_image(image, name) for image in x])


def _check_ax(ax) -> None:
    if ax is not None and not isinstance(ax, Axes):
        raise TypeError(f"ax: expected a matplotlib Axes or None, got {describe(ax)}")


def _check_mode(mode, percentile: float, name: str) -> None:
    if mode not in MODES:
        raise ValueError(f"{name}: expected 'robust', 'max' or None, got {describe(mode)}")
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 0 < percentile <= 100:
        raise ValueError(f"percentile: expected a number in (0, 100], got {describe(percentile)}")


def _check_signed(method, signed) -> bool:
    """Whether to draw a map as signed: as ``method`` declares, or ``signed``; True when neither is given."""
    if signed is not None and not isinstance(signed, bool):
        raise TypeError(f"signed: expected True (evidence for and against), False (unsigned scores) or None, "
                        f"got {describe(signed)}")  # fmt: skip
    if method is None:
        return True if signed is None else signed
    if signed is not None:
        raise ValueError(f"signed, method: expected one of them (the method declares whether its maps are signed), "
                         f"got both, signed={signed!r}")  # fmt: skip
    return is_signed(method)


def _check_drawing(method, signed, normalize, percentile: float, ax, alpha) -> bool:
    """Check the arguments that ``heatmap`` and ``series`` share; return whether the map is signed."""
    signed = _check_signed(method, signed)
    _check_mode(normalize, percentile, "normalize")
    _check_ax(ax)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha: expected a number in [0, 1], got {describe(alpha)}")
    return signed


def _is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _check_limits(vmin, vmax, mode: str | None, signed: bool) -> None:
    """Colour limits: only for raw maps (``normalize=None``); signed maps take ``vmax`` alone, and it is > 0."""
    if vmax is not None and not (_is_number(vmax) and (vmax > 0 or not signed)):
        raise ValueError(f"vmax: expected a finite number{' > 0' if signed else ''} or None, got {describe(vmax)}")
    if vmin is not None and signed:
        raise ValueError(f"vmin: only for an unsigned map (a signed map is drawn from -vmax to vmax), got {vmin!r}")
    if vmin is not None and not _is_number(vmin):
        raise ValueError(f"vmin: expected a finite number or None, got {describe(vmin)}")
    if vmin is not None and vmax is not None and not vmin < vmax:
        raise ValueError(f"vmin, vmax: expected vmin < vmax, got vmin={vmin!r}, vmax={vmax!r}")
    if mode is not None and (vmin, vmax) != (None, None):
        span = "[-1, 1]" if signed else "[0, 1]"
        name = "vmax" if vmin is None else "vmin"
        raise ValueError(f"{name}: only with normalize=None (a normalized map lies in {span}), got normalize={mode!r}")


def _largest(r: np.ndarray, mode: str | None, percentile: float) -> float:
    """The robust (``percentile`` of |r|) or absolute maximum of |r|; 0 only for an all-zero ``r``."""
    magnitude = np.abs(r)
    scale = np.percentile(magnitude, percentile) if mode == "robust" else 0.0
    if scale == 0:  # mode "max" or None, or a sparse map whose percentile is zero
        scale = magnitude.max()
    return float(scale)


def _span(r: np.ndarray, mode: str | None, percentile: float) -> tuple[float, float]:
    """The robust (percentiles 100 - p and p) or full range of ``r``; the full one if the robust one is empty."""
    if mode == "robust":
        low, high = np.percentile(r, sorted((100 - percentile, percentile)))
        if high > low:
            return float(low), float(high)
    return float(r.min()), float(r.max())


def _scale(r: np.ndarray, mode: str | None, percentile: float, signed: bool = True) -> np.ndarray:
    """A signed ``r`` divided by its robust or absolute maximum and clipped to [-1, 1] (zero stays zero); an
    unsigned one mapped from its robust or full range onto [0, 1]. A constant map becomes all zero."""
    if mode is None:
        return r
    if not signed:
        low, high = _span(r, mode, percentile)
        return np.zeros_like(r) if high == low else np.clip((r - low) / (high - low), 0.0, 1.0)
    scale = _largest(r, mode, percentile)
    if scale == 0:  # an all-zero map: nothing to normalize
        return np.zeros_like(r)
    return np.clip(r / scale, -1.0, 1.0)


def _limits(r: np.ndarray, mode: str | None, signed: bool, vmin=None, vmax=None) -> tuple[float, float]:
    """The colour limits of a map scaled with ``mode``: symmetric around zero for a signed map, the map's own
    range for an unsigned one; ``vmin`` and ``vmax`` where given."""
    if signed:
        if mode is not None:
            return -1.0, 1.0
        largest = vmax if vmax is not None else float(np.abs(r).max())
        largest = largest if largest > 0 else 1.0  # vmin == vmax == 0 would colour zero blue
        return -largest, largest
    if mode is not None:
        return 0.0, 1.0
    low = float(r.min()) if vmin is None else vmin
    high = float(r.max()) if vmax is None else vmax
    if high <= low:  # a constant map, or one given limit beyond the data: keep vmin < vmax
        low, high = (low, low + 1.0) if vmax is None else (high - 1.0, high)
    return low, high


def normalize(attribution, mode: str | None = "robust", percentile: float = 99.5, *, signed: bool = True) -> np.ndarray:
    """Sum the channels of one attribution map and scale it into [-1, 1] (signed) or [0, 1] (unsigned).

    Parameters
    ----------
    attribution : tensor or array (C, H, W), (H, W) or (1, C, H, W)
    mode : "robust" divides a signed map by the ``percentile``-th percentile of |R|, so that a few extreme pixels
        do not wash out the rest (values beyond it are clipped to +-1; if that percentile is zero, the maximum is
        used), and maps an unsigned map from its (100 - ``percentile``)-th to its ``percentile``-th percentile
        onto [0, 1] (clipped); "max" divides by max |R|, or maps [min R, max R] onto [0, 1]; None returns the
        summed map unscaled.
    percentile : float in (0, 100]
    signed : whether the map is signed evidence (zero stays zero) or an unsigned score (its smallest value
        becomes 0); ``core.is_signed(method)`` says which.

    Returns
    -------
    numpy array (H, W), in [-1, 1] or [0, 1] unless ``mode`` is None. An all-zero (or, unsigned, constant) map
    becomes all zero. Chapter 00.
    """
    _check_mode(mode, percentile, "mode")
    if not isinstance(signed, bool):
        raise TypeError(f"signed: expected True or False, got {describe(signed)}")
    return _scale(_summed(attribution, 2), mode, percentile, signed)


def _bar_label(mode: str | None, signed: bool, each: bool = False) -> str:
    """What a colour bar shows: signed relevance or an unsigned score, raw or scaled (``each`` map on its own)."""
    what = "relevance: + for, − against" if signed else "unsigned score: low to high"
    return what if mode is None else f"{what} ({'each map ' if each else ''}scaled)"


def heatmap(
    attribution,
    image=None,
    ax: Axes | None = None,
    *,
    method=None,
    signed: bool | None = None,
    normalize: str | None = "robust",
    percentile: float = 99.5,
    alpha: float = 0.6,
    title: str | None = None,
    colorbar: bool = False,
    cmap: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
) -> AxesImage:
    """Draw one attribution map: signed red for, blue against, white no evidence; unsigned dark low, yellow high.

    Parameters
    ----------
    attribution : tensor or array (C, H, W), (H, W) or (1, C, H, W); channels are summed.
    image : optional image (3, H, W) in [0, 1], drawn in grey underneath the map,
        which is then drawn with transparency ``alpha``.
    ax : the Axes to draw on; a new figure when None.
    method : the method that made the map (e.g. ``occlusion.rise``, or
        ``functools.partial(gradient.saliency, abs=False)``); its declaration says whether the
        map is signed. A map shifted or rescaled afterwards (RISE minus its mean) keeps its kind.
    signed : instead of ``method``: True for evidence for and against (diverging ``CMAP``,
        symmetric limits, zero white), False for unsigned scores (``SEQUENTIAL``, limits from
        the map's own range). Neither given: signed.
    normalize, percentile : how the map is scaled, see ``normalize``. With None the raw
        values are drawn, between -max |R| and max |R| (signed) or min R and max R (unsigned).
    title, colorbar, cmap : decoration; ``cmap`` (default: from ``signed``) should stay
        diverging for signed maps and sequential for unsigned ones.
    vmin, vmax : with ``normalize=None``, colour limits instead of the map's own: maps drawn
        with the same limits can be compared by their amplitude (values beyond them saturate).
        A signed map takes ``vmax`` alone (its limits are -vmax and vmax).

    Returns
    -------
    The ``AxesImage`` of the map (its ``.axes`` and ``.figure`` lead to the rest). Chapter 00.
    """
    signed = _check_drawing(method, signed, normalize, percentile, ax, alpha)
    _check_limits(vmin, vmax, normalize, signed)
    r = _scale(_summed(attribution, 2), normalize, percentile, signed)
    if ax is None:
        _, ax = plt.subplots(figsize=(3, 3), layout="constrained")
    if image is not None:
        grey = _as_image(image).mean(axis=2)
        if grey.shape != r.shape:
            raise ValueError(f"image: expected height and width {r.shape} like attribution, got {grey.shape}")
        ax.imshow(grey, cmap="gray", vmin=0, vmax=1)
    low, high = _limits(r, normalize, signed, vmin, vmax)
    shown = ax.imshow(r, cmap=cmap or _cmap(signed), vmin=low, vmax=high, alpha=alpha if image is not None else None)
    ax.set(xticks=[], yticks=[])
    if title is not None:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(shown, ax=ax, shrink=0.8, label=_bar_label(normalize, signed))
    return shown


def _cmap(signed: bool) -> str:
    return CMAP if signed else SEQUENTIAL


def series(
    attribution,
    signal,
    ax: Axes | None = None,
    *,
    method=None,
    signed: bool | None = None,
    normalize: str | None = "robust",
    percentile: float = 99.5,
    alpha: float = 0.8,
    title: str | None = None,
    colorbar: bool = False,
    cmap: str | None = None,
) -> AxesImage:
    """Draw a time series as lines over a background shaded by its attribution.

    Parameters
    ----------
    attribution : tensor or array (C, L), (L,) or (1, C, L); channels are summed.
    signal : tensor or array (C, L), (L,) or (1, C, L); one black line per channel.
    ax, method, signed, normalize, percentile, alpha, title, colorbar, cmap : as in
        ``heatmap`` (e.g. ``method=occlusion.timereise`` shades from dark to yellow).

    Returns
    -------
    The ``AxesImage`` of the shading. Chapter 03.
    """
    signed = _check_drawing(method, signed, normalize, percentile, ax, alpha)
    r = _scale(_summed(attribution, 1), normalize, percentile, signed)
    lines = _one_sample(signal, 1, "signal")
    if lines.ndim != 2 or lines.shape[1] != r.shape[0]:
        raise ValueError(
            f"signal: expected shape (C, {r.shape[0]}) or ({r.shape[0]},) like attribution, got {_shape(lines)}"
        )
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 2.5), layout="constrained")
    low, high = lines.min(), lines.max()
    margin = 0.05 * (high - low) or 0.5
    vmin, vmax = _limits(r, normalize, signed)
    extent = (-0.5, r.shape[0] - 0.5, low - margin, high + margin)
    shown = ax.imshow(r[None], cmap=cmap or _cmap(signed), vmin=vmin, vmax=vmax, alpha=alpha, aspect="auto",
                      extent=extent)  # fmt: skip
    for channel in lines:
        ax.plot(np.arange(r.shape[0]), channel, color="black", linewidth=1)
    ax.set_xlabel("time step")
    if title is not None:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(shown, ax=ax, label=_bar_label(normalize, signed))
    return shown


def grid(
    images,
    maps: Mapping[str, object] | None = None,
    *,
    method=None,
    signed: bool | Mapping[str, bool] | None = None,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    cmap: str | None = None,
    figsize: tuple[float, float] | None = None,
    normalize: str | None = "robust",
    colorbar: bool | None = None,
    shared: bool = False,
) -> Figure:
    """A figure of images x methods: one row per image, the image first, then one map per method.

    Parameters
    ----------
    images : tensor or array (N, 3, H, W) in [0, 1]
    maps : dict method name -> attributions (N, C, H, W) or (N, H, W); None shows the images only.
    method : the method that made every map, or a dict with the same keys as ``maps`` (e.g.
        ``{"RISE": occlusion.rise, "LRP": lrp.explain}``): each column is drawn signed or
        unsigned as its method declares, see ``heatmap``.
    signed : instead of ``method``: True, False, or a dict with the same keys as ``maps``.
        Neither given: every map is signed.
    row_labels : N labels written left of the rows (e.g. class names).
    col_labels : 1 + len(maps) column titles; default "image" and the method names.
    cmap, normalize : as in ``heatmap``; each map is normalized on its own.
    colorbar : add one colour bar for the signed maps and one for the unsigned maps; default:
        with ``shared``. (With ``normalize=None`` and without ``shared`` each map keeps its
        own scale and a bar shows the last one's.)
    shared : draw the maps of each kind on one colour scale, so that amplitudes can be
        compared across images and methods: the signed ones from -L to L, L the 99.5th
        percentile of |R| over all of them (``normalize="robust"``) or their max |R|; the
        unsigned ones over their common robust or full range. By default each map is
        scaled on its own.

    Returns
    -------
    The ``Figure``, with N x (1 + len(maps)) axes (plus the colour bars). Chapter 00.
    """
    _check_mode(normalize, 99.5, "normalize")
    if not isinstance(shared, bool):
        raise TypeError(f"shared: expected True or False, got {describe(shared)}")
    if colorbar is not None and not isinstance(colorbar, bool):
        raise TypeError(f"colorbar: expected True, False or None (with shared), got {describe(colorbar)}")
    if maps is not None and not isinstance(maps, Mapping):
        raise TypeError(f"maps: expected a dict method name -> attributions, got {describe(maps)}")
    pictures = _as_batch(images)
    n, height, width = pictures.shape[:3]
    maps = {name: _to_numpy(value, f"maps[{name!r}]") for name, value in (maps or {}).items()}
    for name, value in maps.items():
        if value.ndim not in (3, 4) or len(value) != n or value.shape[-2:] != (height, width):
            expected = f"shape ({n}, C, {height}, {width}) like images"
            raise ValueError(f"maps[{name!r}]: expected {expected}, got {_shape(value)}")
    kinds = _column_kinds(list(maps), method, signed)
    titles = list(col_labels) if col_labels is not None else ["image", *maps]
    _check_labels(titles, 1 + len(maps), "col_labels")
    if row_labels is not None:
        _check_labels(row_labels, n, "row_labels")
    n_rows, n_cols = n, 1 + len(maps)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=figsize or (1.8 * n_cols, 1.8 * n_rows), squeeze=False, layout="constrained"
    )
    limits = {kind: _shared_limits([m for name, m in maps.items() if kinds[name] == kind], normalize, kind)
              for kind in set(kinds.values())} if shared else {}  # fmt: skip
    shown = {}
    for i, picture in enumerate(pictures):
        axes[i, 0].imshow(picture)
        for j, (name, value) in enumerate(maps.items(), start=1):
            kind, mode = kinds[name], None if shared else normalize
            low, high = limits.get(kind, (None, None))  # a signed map takes vmax alone
            shown[kind] = heatmap(value[i], ax=axes[i, j], signed=kind, normalize=mode, cmap=cmap,
                                  vmin=None if kind else low, vmax=high)  # fmt: skip
        if row_labels is not None:
            axes[i, 0].set_ylabel(str(row_labels[i]))
    for j, title in enumerate(titles):
        axes[0, j].set_title(str(title))
    for ax in axes.flat:
        ax.set(xticks=[], yticks=[])
    if shared if colorbar is None else colorbar:
        for kind in sorted(shown):  # the unsigned maps first: constrained layout puts the last bar nearest
            label = _bar_label(None if shared else normalize, kind, each=True)
            fig.colorbar(shown[kind], ax=axes[:, 1:], shrink=0.6, label=label)
    return fig


def _column_kinds(names: list[str], method, signed) -> dict[str, bool]:
    """Whether each column of a grid is signed, from one method or signedness, or a dict of them by column."""
    if isinstance(method, Mapping) or isinstance(signed, Mapping):
        argument, given = ("method", method) if isinstance(method, Mapping) else ("signed", signed)
        other = signed if argument == "method" else method
        if other is not None:
            raise ValueError(f"signed, method: expected one of them (the method declares whether its maps are "
                             f"signed), got both, {argument} as a dict")  # fmt: skip
        missing, extra = [n for n in names if n not in given], [n for n in given if n not in names]
        if missing or extra:
            raise ValueError(f"{argument}: expected one entry per column of maps {names}, got {list(given)} "
                             f"(missing {missing}, not in maps {extra})")  # fmt: skip
        if argument == "method":
            return {n: is_signed(given[n], f"method[{n!r}]") for n in names}
        bad = {n: v for n, v in given.items() if not isinstance(v, bool)}
        if bad:
            raise TypeError(f"signed: expected True or False for every column, got {bad}")
        return dict(given)
    kind = _check_signed(method, signed)
    return {n: kind for n in names}


def _shared_limits(maps: list[np.ndarray], mode: str | None, signed: bool) -> tuple[float, float]:
    """One pair of colour limits for batches of maps (N, C, H, W) or (N, H, W), channels summed."""
    values = np.concatenate([(m.sum(axis=1) if m.ndim == 4 else m).ravel() for m in maps])
    if signed:
        return _limits(values, None, True, vmax=_largest(values, mode, 99.5))
    return _limits(values, None, False, *_span(values, mode, 99.5))


def _class_indices(labels, n: int, classes: Sequence[str] | None) -> list[int]:
    """``labels`` as n ints, class indices into ``classes`` when it is given."""
    values = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
    if not (np.issubdtype(values.dtype, np.integer) or values.dtype == bool):
        raise TypeError(f"labels: expected integer class indices, got {describe(labels)}")
    if values.shape != (n,):
        raise ValueError(f"labels: expected {n} labels, one per image, got {describe(labels)}")
    if classes is not None and ((values < 0) | (values >= len(classes))).any():
        raise ValueError(f"labels: expected class indices in [0, {len(classes) - 1}] (classes), got {values.tolist()}")
    return [int(label) for label in values]


def _check_labels(labels: Sequence, n: int, name: str) -> None:
    if len(labels) != n:
        raise ValueError(f"{name}: expected {n} labels, got {len(labels)}")


def curve(
    x,
    ys,
    ax: Axes | None = None,
    *,
    labels: Sequence[str] | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    title: str | None = None,
    fill: bool = False,
) -> Axes:
    """Plot one or several curves over the same ``x``, e.g. deletion curves.

    Parameters
    ----------
    x : array (L,)
    ys : array (L,) for one curve, (K, L) or a list of K arrays (L,) for several.
    labels : K legend entries.
    fill : shade the area under each curve and write its AUC (trapezoidal rule over
        ``x``; give ``x`` as fractions in [0, 1] for the usual normalized AUC) in the legend.

    Returns
    -------
    The ``Axes``. Chapter 00.
    """
    _check_ax(ax)
    x = _to_numpy(x, "x")
    if x.ndim != 1:
        raise ValueError(f"x: expected a 1-D array, got {_shape(x)}")
    if isinstance(ys, (list, tuple)):
        curves = [_to_numpy(y, "ys") for y in ys]
        if not curves or any(y.shape != (len(x),) for y in curves):
            shapes = [y.shape for y in curves]
            raise ValueError(f"ys: expected a non-empty list of arrays ({len(x)},) like x, got shapes {shapes}")
        ys = np.stack(curves)
    ys = _to_numpy(ys, "ys")
    ys = ys[None] if ys.ndim == 1 else ys
    if ys.ndim != 2 or ys.shape[1] != len(x):
        raise ValueError(f"ys: expected shape ({len(x)},) or (K, {len(x)}) like x, got {_shape(ys)}")
    if labels is not None:
        _check_labels(labels, len(ys), "labels")
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 3), layout="constrained")
    for k, y in enumerate(ys):
        label = None if labels is None else str(labels[k])
        if fill:
            label = f"{label or 'curve'} (AUC {trapezoid(y, x):.3f})"
        (line,) = ax.plot(x, y, label=label)
        if fill:
            ax.fill_between(x, y, alpha=0.2, color=line.get_color())
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if labels is not None or fill:
        ax.legend()
    return ax


def show_images(images, labels=None, masks=None, classes: Sequence[str] | None = None, ncols: int = 8) -> Figure:
    """Show a gallery of images with their class names and, if given, mask outlines.

    Parameters
    ----------
    images : tensor or array (N, 3, H, W) in [0, 1]
    labels : N class indices (tensor, array or list), written above the images (as ``classes[label]``
        if given).
    masks : bool tensor or array (N, H, W); the outline of each mask is drawn over its image.
    classes : class names.
    ncols : images per row.

    Returns
    -------
    The ``Figure``. Chapter 00.
    """
    pictures = _as_batch(images)
    n = len(pictures)
    if labels is not None:
        labels = _class_indices(labels, n, classes)
    if masks is not None:
        given = np.asarray(masks.detach().cpu() if isinstance(masks, torch.Tensor) else masks)
        if given.shape != pictures.shape[:3] or not np.isin(given, (0, 1)).all():
            expected = f"bools or 0/1 of shape {pictures.shape[:3]} like images"
            raise ValueError(f"masks: expected {expected}, got {_shape(given)}")
        masks = given.astype(bool)
    if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols: expected an int >= 1, got {describe(ncols)}")
    n_cols = min(ncols, n)
    n_rows = math.ceil(n / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.5 * n_cols, 1.7 * n_rows), squeeze=False, layout="constrained")
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_axis_off()
            continue
        ax.imshow(pictures[i])
        if masks is not None and 0 < masks[i].sum() < masks[i].size:
            ax.contour(masks[i].astype(float), levels=[0.5], colors="black", linewidths=2.5)
            ax.contour(masks[i].astype(float), levels=[0.5], colors="white", linewidths=1)
        if labels is not None:
            ax.set_title(classes[labels[i]] if classes is not None else str(labels[i]), fontsize=9)
        ax.set(xticks=[], yticks=[])
    return fig


SOURCE_WIDTH = 100  # the longest line a chapter shows: it fits a notebook, a slide and a phone without wrapping


def source(*objects, docstring: bool = True) -> None:
    """Print the source code of the package's functions and classes, as the chapters show it.

    Only public objects (no name part starting with "_"): what a chapter shows, a student can call.
    ``docstring=False`` leaves the docstrings out. Chapter 00.
    """
    for obj in objects:
        name = f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"
        if not inspect.isfunction(obj) and not inspect.isclass(obj) or "._" in name or "<" in name:
            raise TypeError(f"objects: expected public functions or classes of the package, got {describe(obj)}")
        text = textwrap.dedent(inspect.getsource(obj))
        if not docstring:
            text = _without_docstrings(text)
        print(text)


def _without_docstrings(text: str) -> str:
    """``text`` (the source of a function or class) without the docstrings of its definitions."""
    lines = text.splitlines(keepends=True)
    drop = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and ast.get_docstring(node):
            first = node.body[0]
            drop.update(range(first.lineno - 1, first.end_lineno))
    return "".join(line for i, line in enumerate(lines) if i not in drop)
