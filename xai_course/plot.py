"""Figures of the course: signed heatmaps, method grids, curves and image galleries.

Every heatmap uses one colour map, ``RdBu_r`` (ColorBrewer, colour-blind safe),
symmetric around zero: red is evidence for the class, blue evidence against it,
white is no evidence. Maps are normalized the same way everywhere (see
``normalize``), so figures of different chapters can be compared. The functions
draw on a matplotlib ``Axes`` they are given, or on a new figure; they never call
``plt.show()``. Introduced in chapter 00.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from .core import describe

CMAP = "RdBu_r"
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


def _as_map(attribution, name: str = "attribution") -> np.ndarray:
    """Sum the channels of a ``(C, H, W)``, ``(H, W)`` or ``(1, C, H, W)`` map into ``(H, W)``."""
    r = _to_numpy(attribution, name)
    if r.ndim == 4 and r.shape[0] == 1:
        r = r[0]
    if r.ndim == 3:
        return r.sum(axis=0)
    if r.ndim == 2:
        return r
    raise ValueError(f"{name}: expected one map of shape (C, H, W), (H, W) or (1, C, H, W), got {_shape(r)}")


def _as_series(attribution, name: str = "attribution") -> np.ndarray:
    """Sum the channels of a ``(C, L)``, ``(L,)`` or ``(1, C, L)`` series into ``(L,)``."""
    r = _to_numpy(attribution, name)
    if r.ndim == 3 and r.shape[0] == 1:
        r = r[0]
    if r.ndim == 2:
        return r.sum(axis=0)
    if r.ndim == 1:
        return r
    raise ValueError(f"{name}: expected one series of shape (C, L), (L,) or (1, C, L), got {_shape(r)}")


def _as_image(image, name: str = "image") -> np.ndarray:
    """An image ``(C, H, W)`` (C = 1 or 3), ``(1, C, H, W)`` or ``(H, W)`` in [0, 1] as ``(H, W, 3)``."""
    x = _to_numpy(image, name)
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim == 2:
        x = x[None]
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


def _check_alpha(alpha) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha: expected a number in [0, 1], got {describe(alpha)}")


def _check_mode(mode, percentile: float, name: str) -> None:
    if mode not in MODES:
        raise ValueError(f"{name}: expected 'robust', 'max' or None, got {describe(mode)}")
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 0 < percentile <= 100:
        raise ValueError(f"percentile: expected a number in (0, 100], got {describe(percentile)}")


def _check_vmax(vmax, mode: str | None) -> None:
    if vmax is None:
        return
    if isinstance(vmax, bool) or not isinstance(vmax, (int, float)) or not 0 < vmax < math.inf:
        raise ValueError(f"vmax: expected a finite number > 0 or None, got {describe(vmax)}")
    if mode is not None:
        raise ValueError(f"vmax: only with normalize=None (a normalized map lies in [-1, 1]), got normalize={mode!r}")


def _largest(r: np.ndarray, mode: str | None, percentile: float) -> float:
    """The robust (``percentile`` of |r|) or absolute maximum of |r|; 0 only for an all-zero ``r``."""
    magnitude = np.abs(r)
    scale = np.percentile(magnitude, percentile) if mode == "robust" else 0.0
    if scale == 0:  # mode "max" or None, or a sparse map whose percentile is zero
        scale = magnitude.max()
    return float(scale)


def _scale(r: np.ndarray, mode: str | None, percentile: float) -> np.ndarray:
    """Divide ``r`` by its robust or absolute maximum and clip to [-1, 1]; zero stays zero."""
    if mode is None:
        return r
    scale = _largest(r, mode, percentile)
    if scale == 0:  # an all-zero map: nothing to normalize
        return np.zeros_like(r)
    return np.clip(r / scale, -1.0, 1.0)


def _limit(r: np.ndarray, mode: str | None, vmax: float | None = None) -> float:
    """The colour limit ``vmax`` (with ``vmin = -vmax``) of a map scaled with ``mode``, unless one is given."""
    if mode is not None:
        return 1.0
    if vmax is not None:
        return vmax
    largest = float(np.abs(r).max())
    return largest if largest > 0 else 1.0  # vmin == vmax == 0 would colour zero blue


def normalize(attribution, mode: str | None = "robust", percentile: float = 99.5) -> np.ndarray:
    """Sum the channels of one attribution map and scale it into [-1, 1].

    Parameters
    ----------
    attribution : tensor or array (C, H, W), (H, W) or (1, C, H, W)
    mode : "robust" divides by the ``percentile``-th percentile of |R|, so that a few
        extreme pixels do not wash out the rest (values beyond it are clipped to +-1;
        if that percentile is zero, the maximum is used); "max" divides by max |R|;
        None returns the summed map unscaled.
    percentile : float in (0, 100]

    Returns
    -------
    numpy array (H, W), in [-1, 1] unless ``mode`` is None. An all-zero map stays
    all zero. Chapter 00.
    """
    _check_mode(mode, percentile, "mode")
    return _scale(_as_map(attribution), mode, percentile)


def _bar_label(mode: str | None) -> str:
    return "relevance" if mode is None else "relevance (scaled)"


def _no_ticks(ax: Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def heatmap(
    attribution,
    image=None,
    ax: Axes | None = None,
    *,
    normalize: str | None = "robust",
    percentile: float = 99.5,
    alpha: float = 0.6,
    title: str | None = None,
    colorbar: bool = False,
    cmap: str = CMAP,
    vmax: float | None = None,
) -> AxesImage:
    """Draw one attribution map: red for, blue against, white no evidence.

    Parameters
    ----------
    attribution : tensor or array (C, H, W), (H, W) or (1, C, H, W); channels are summed.
    image : optional image (3, H, W) in [0, 1], drawn in grey underneath the map,
        which is then drawn with transparency ``alpha``.
    ax : the Axes to draw on; a new figure when None.
    normalize, percentile : how the map is scaled, see ``normalize``; the colour limits
        are always symmetric (vmin = -vmax), so zero is white. With None the raw values
        are drawn between -max |R| and max |R|.
    title, colorbar, cmap : decoration; ``cmap`` should stay diverging and symmetric.
    vmax : with ``normalize=None``, the colour limit instead of the map's own max |R|: maps
        drawn with the same ``vmax`` can be compared by their amplitude (values beyond it saturate).

    Returns
    -------
    The ``AxesImage`` of the map (its ``.axes`` and ``.figure`` lead to the rest). Chapter 00.
    """
    _check_mode(normalize, percentile, "normalize")
    _check_ax(ax)
    _check_alpha(alpha)
    _check_vmax(vmax, normalize)
    r = _scale(_as_map(attribution), normalize, percentile)
    if ax is None:
        _, ax = plt.subplots(figsize=(3, 3), layout="constrained")
    if image is not None:
        grey = _as_image(image).mean(axis=2)
        if grey.shape != r.shape:
            raise ValueError(f"image: expected height and width {r.shape} like attribution, got {grey.shape}")
        ax.imshow(grey, cmap="gray", vmin=0, vmax=1)
    vmax = _limit(r, normalize, vmax)
    shown = ax.imshow(r, cmap=cmap, vmin=-vmax, vmax=vmax, alpha=alpha if image is not None else None)
    _no_ticks(ax)
    if title is not None:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(shown, ax=ax, shrink=0.8, label=_bar_label(normalize))
    return shown


def series(
    attribution,
    signal,
    ax: Axes | None = None,
    *,
    normalize: str | None = "robust",
    percentile: float = 99.5,
    alpha: float = 0.8,
    title: str | None = None,
    colorbar: bool = False,
    cmap: str = CMAP,
) -> AxesImage:
    """Draw a time series as lines over a background shaded by its attribution.

    Parameters
    ----------
    attribution : tensor or array (C, L), (L,) or (1, C, L); channels are summed.
    signal : tensor or array (C, L), (L,) or (1, C, L); one black line per channel.
    ax, normalize, percentile, alpha, title, colorbar, cmap : as in ``heatmap``.

    Returns
    -------
    The ``AxesImage`` of the shading. Chapter 03.
    """
    _check_mode(normalize, percentile, "normalize")
    _check_ax(ax)
    _check_alpha(alpha)
    r = _scale(_as_series(attribution), normalize, percentile)
    lines = _to_numpy(signal, "signal")
    lines = lines[0] if lines.ndim == 3 and lines.shape[0] == 1 else lines
    lines = lines[None] if lines.ndim == 1 else lines
    if lines.ndim != 2 or lines.shape[1] != r.shape[0]:
        raise ValueError(
            f"signal: expected shape (C, {r.shape[0]}) or ({r.shape[0]},) like attribution, got {_shape(lines)}"
        )
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 2.5), layout="constrained")
    low, high = lines.min(), lines.max()
    margin = 0.05 * (high - low) or 0.5
    vmax = _limit(r, normalize)
    extent = (-0.5, r.shape[0] - 0.5, low - margin, high + margin)
    shown = ax.imshow(r[None], cmap=cmap, vmin=-vmax, vmax=vmax, alpha=alpha, aspect="auto", extent=extent)
    for channel in lines:
        ax.plot(np.arange(r.shape[0]), channel, color="black", linewidth=1)
    ax.set_xlabel("time step")
    if title is not None:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(shown, ax=ax, label=_bar_label(normalize))
    return shown


def grid(
    images,
    maps: Mapping[str, object] | None = None,
    *,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    cmap: str = CMAP,
    figsize: tuple[float, float] | None = None,
    normalize: str | None = "robust",
    colorbar: bool = False,
    shared: bool = False,
) -> Figure:
    """A figure of images x methods: one row per image, the image first, then one map per method.

    Parameters
    ----------
    images : tensor or array (N, 3, H, W) in [0, 1]
    maps : dict method name -> attributions (N, C, H, W) or (N, H, W); None shows the images only.
    row_labels : N labels written left of the rows (e.g. class names).
    col_labels : 1 + len(maps) column titles; default "image" and the method names.
    cmap, normalize : as in ``heatmap``; each map is normalized on its own.
    colorbar : add one colour bar for all maps (with ``normalize=None`` and without ``shared``
        each map keeps its own scale and the bar shows the last one's).
    shared : draw every map on one colour scale, the 99.5th percentile of |R| over all maps
        (``normalize="robust"``) or their max |R|, so that amplitudes can be compared across
        images and methods; by default each map is scaled on its own.

    Returns
    -------
    The ``Figure``, with N x (1 + len(maps)) axes (plus the colour bar). Chapter 00.
    """
    _check_mode(normalize, 99.5, "normalize")
    if not isinstance(shared, bool):
        raise TypeError(f"shared: expected True or False, got {describe(shared)}")
    if maps is not None and not isinstance(maps, Mapping):
        raise TypeError(f"maps: expected a dict method name -> attributions, got {describe(maps)}")
    pictures = _as_batch(images)
    maps = {name: _to_numpy(value, f"maps[{name!r}]") for name, value in (maps or {}).items()}
    for name, value in maps.items():
        if value.ndim not in (3, 4) or len(value) != len(pictures) or value.shape[-2:] != pictures.shape[1:3]:
            raise ValueError(
                f"maps[{name!r}]: expected shape ({len(pictures)}, C, {pictures.shape[1]}, "
                f"{pictures.shape[2]}) like images, got {_shape(value)}"
            )
    titles = list(col_labels) if col_labels is not None else ["image", *maps]
    _check_labels(titles, 1 + len(maps), "col_labels")
    if row_labels is not None:
        _check_labels(row_labels, len(pictures), "row_labels")
    n_rows, n_cols = len(pictures), 1 + len(maps)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=figsize or (1.8 * n_cols, 1.8 * n_rows), squeeze=False, layout="constrained"
    )
    vmax = _shared_limit(list(maps.values()), normalize) if shared and maps else None
    for i, picture in enumerate(pictures):
        axes[i, 0].imshow(picture)
        for j, value in enumerate(maps.values(), start=1):
            shown = heatmap(value[i], ax=axes[i, j], normalize=None if shared else normalize, cmap=cmap, vmax=vmax)
        if row_labels is not None:
            axes[i, 0].set_ylabel(str(row_labels[i]))
    for j, title in enumerate(titles):
        axes[0, j].set_title(str(title))
    for ax in axes.flat:
        _no_ticks(ax)
    if colorbar and maps:
        fig.colorbar(shown, ax=axes[:, 1:], shrink=0.6, label=_bar_label(None if shared else normalize))
    return fig


def _shared_limit(maps: list[np.ndarray], mode: str | None) -> float:
    """One colour limit for batches of maps (N, C, H, W) or (N, H, W), channels summed."""
    limit = _largest(np.concatenate([(m.sum(axis=1) if m.ndim == 4 else m).ravel() for m in maps]), mode, 99.5)
    return limit if limit > 0 else 1.0


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


def _auc(x: np.ndarray, y: np.ndarray) -> float:
    """Area under ``y`` over ``x`` by the trapezoidal rule."""
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)))


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
            label = f"{label or 'curve'} (AUC {_auc(x, y):.3f})"
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
            raise ValueError(
                f"masks: expected bools or 0/1 of shape {pictures.shape[:3]} like images, got {_shape(given)}"
            )
        masks = given.astype(bool)
    if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols: expected an int >= 1, got {describe(ncols)}")
    n_cols = min(ncols, n)
    n_rows = -(-n // n_cols)
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
        _no_ticks(ax)
    return fig
