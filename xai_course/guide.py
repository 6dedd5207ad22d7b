"""The course's methods in one registry, a method chooser, and a combination of methods.

The survey (section 3) compares its methods in words. Here every method of chapters 00 to 07 and 10
carries the properties a student needs to pick one (what it needs from the model, which data it
explains, whether its maps show negative evidence, whether it is random, whether it gives a global
view, which completeness property it has) and, for attribution methods, a function in the calling
contract with the course's defaults. An attribution method's properties are the ones it declares next
to its code (``core.contract``); only the methods that return no map have theirs written here.
``evaluate.compare``, ``choose`` and the tests all use this one list, so the chooser's reasons are the
measured numbers of the same functions. The perturbation methods' budgets (RISE 1000 masks, Kernel SHAP 256
coalitions, the sliding window's 225 windows) are what chapter 08 can afford when it runs every method in
under a minute; chapters 02 and 03 show how their noise falls with a larger budget. RISE's 1000 masks, with
its control variate, bring its noise on the four canonical images to about 0.4 of the maps' contrast on average
(the paper's estimator at 300 masks: about 1.4); its scores in chapter 08 are then a few hundredths from their
values at 8000 masks, less than the gaps between the methods there (``benchmarks/rise_noise.py``). Chapter 08.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from . import cam, deconvnet, deep_taylor, gradient, lrp, occlusion, shap
from .core import ACCESS, check_input, check_model, contract, describe, is_signed
from .evaluate import METRICS, Scores

DATA = ("images", "time series", "tables")


@dataclass(frozen=True)
class Method:
    """One method of the course and the properties the chooser uses. Chapter 08.

    needs : "outputs" (black box: only predictions), "gradients" (backpropagation through the model)
        or "layers" (rules for each layer type: the model must be built of modules the method knows).
    data : the kinds of input it explains ("images", "time series", "tables").
    negative_evidence : its maps are signed, and negative means evidence against the target (deconvnet
        and guided backprop have signs too, but they hardly depend on the target: chapter 07).
    random : the result depends on a seed.
    global_view : it explains the model as a whole, not one input at a time.
    completeness : the quantity its attributions sum to, or None.
    explain : ``explain(model, x, target)`` with the course defaults, or None for methods that do not
        return attributions (rules, reconstructions, galleries).
    """

    name: str
    chapter: int
    summary: str
    needs: str
    data: tuple[str, ...]
    negative_evidence: bool
    random: bool
    global_view: bool
    completeness: str | None
    explain: Callable | None


def _bounds(x: torch.Tensor) -> tuple[float, float]:
    """zB's input bounds: [0, 1] for images in [0, 1], widened to the data's range otherwise."""
    return min(0.0, x.min().item()), max(1.0, x.max().item())


@contract(signed=True)
def _lrp(model, x, target=None):
    low, high = _bounds(x)
    return lrp.explain(model, x, target, composite="epsilon_gamma_box", low=low, high=high)


@contract(signed=True)
def _deep_taylor(model, x, target=None):
    low, high = _bounds(x)
    return deep_taylor.explain(model, x, target, input_rule="zb", low=low, high=high)


@contract(signed=True)
def _kernel_shap(model, x, target=None):
    segments = shap.superpixels(x, n_segments=16, method="grid")
    return shap.kernel(model, x, target, segments=segments, n_samples=256)


@contract(signed=True)
def _lime(model, x, target=None):
    segments = shap.superpixels(x, n_segments=16, method="grid")
    return shap.lime(model, x, target, segments=segments, n_samples=256)


@contract(signed=True)
def _deep_shap(model, x, target=None):
    batch, _ = check_input(check_model(model), x)  # x may be one unbatched sample
    mean_colour = batch.mean(dim=[0, *range(2, batch.ndim)], keepdim=True)  # one uniform input of the batch's mean
    return shap.deep(model, x, target, background=mean_colour.expand(1, *batch.shape[1:]))


@contract(signed=True)
def _sliding_window(model, x, target=None):
    return occlusion.sliding_window(model, x, target, window=8, stride=4, baseline="mean")


@contract(signed=False)
def _rise(model, x, target=None):
    return occlusion.rise(model, x, target, n_masks=1000, baseline="mean")


def last_conv(model: nn.Module) -> str:
    """The name of the last convolution of ``model`` (SIDU's feature maps). Chapter 08."""
    names = [name for name, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvNd)]
    if not names:
        raise NotImplementedError(
            f"model: SIDU needs a convolution for its feature maps; {type(model).__name__} has none"
        )
    return names[-1]


@contract(signed=False)
def _sidu(model, x, target=None):
    return occlusion.sidu(model, x, target, layer=last_conv(model), baseline="mean")


@contract(signed=False)
def _grad_cam(model, x, target=None):
    return cam.grad_cam(model, x, target, layer=cam.last_feature_map(model, x))


@contract(signed=False)
def _grad_cam_plus_plus(model, x, target=None):
    return cam.grad_cam_plus_plus(model, x, target, layer=cam.last_feature_map(model, x))


_ANY = DATA
_SIGNALS = ("images", "time series")


def _declared(name, chapter, summary, method, data, explain=None, negative_evidence=None, global_view=False) -> Method:
    """The row of an attribution method: what it needs, whether it is random and what it sums to are what
    ``method`` declares (``core.contract``); its maps show negative evidence when they are signed, unless
    ``negative_evidence`` says otherwise. ``explain`` (default ``method``) runs it with the course's defaults."""
    negative = is_signed(method) if negative_evidence is None else negative_evidence
    needs, random, sums_to = method.needs, method.random, method.sums_to
    return Method(name, chapter, summary, needs, data, negative, random, global_view, sums_to, explain or method)


def _described(name, chapter, summary, needs, data, *, random=False, global_view=False) -> Method:
    """The row of a method that returns no attribution map (rules, reconstructions, galleries)."""
    return Method(name, chapter, summary, needs, data, False, random, global_view, None, None)


METHODS = {
    m.name: m
    for m in [
        _declared("saliency", 0, "|gradient| of the logit", gradient.saliency, _ANY),
        _declared("gradient_x_input", 0, "gradient times input", gradient.gradient_x_input, _ANY),
        _declared("lrp", 1, "LRP, composite epsilon-gamma-box", lrp.explain, _ANY, _lrp),
        # shap.global_importance averages SHAP values over a data set: a global view
        _declared("kernel_shap", 2, "Kernel SHAP on 16 grid superpixels, 256 coalitions", shap.kernel, ("images",),
                  _kernel_shap, global_view=True),
        _declared("lime", 2, "LIME on 16 grid superpixels, 256 coalitions", shap.lime, ("images",), _lime),
        _declared("deep_shap", 2, "Deep SHAP against the batch's mean colour", shap.deep, _ANY, _deep_shap,
                  global_view=True),
        _declared("sliding_window", 3, "occlusion by an 8-pixel window, stride 4, mean fill",
                  occlusion.sliding_window, _SIGNALS, _sliding_window),
        _declared("rise", 3, "RISE, 1000 random masks, mean fill", occlusion.rise, _SIGNALS, _rise),
        _declared("sidu", 3, "SIDU, masks from the last convolution's feature maps", occlusion.sidu, _SIGNALS, _sidu),
        _declared("timereise", 3, "TimeREISE, random slices of a series", occlusion.timereise, ("time series",)),
        # signed, but the sign hardly depends on the target (z+ keeps relevance positive; chapters 06 and 07)
        _declared("deep_taylor", 6, "deep Taylor decomposition, z+ hidden and zB input", deep_taylor.explain, _ANY,
                  _deep_taylor, negative_evidence=False),
        _declared("deconvnet", 7, "deconvnet (ReLU on the backward signal)", deconvnet.deconvnet, _ANY,
                  negative_evidence=False),
        _declared("guided_backprop", 7, "guided backpropagation", deconvnet.guided_backprop, _ANY,
                  negative_evidence=False),
        _declared("integrated_gradients", 10, "Integrated Gradients from a black input, 50 trapezoid steps",
                  gradient.integrated_gradients, _ANY),
        _declared("smoothgrad", 10, "SmoothGrad, the mean gradient over 50 copies with 15 % noise", gradient.smoothgrad,
                  _ANY),
        _declared("grad_cam", 10, "Grad-CAM at the last feature map", cam.grad_cam, _SIGNALS, _grad_cam),
        _declared("grad_cam_plus_plus", 10, "Grad-CAM++ at the last feature map", cam.grad_cam_plus_plus, _SIGNALS,
                  _grad_cam_plus_plus),
        # the methods that return no attribution map: their properties are written here
        _described("inversion", 4, "rebuild the input from a layer's features (optimization or decoder)",
                   "gradients", ("images",), random=True),
        _described("lore", 5, "a local decision rule and counterfactual rules", "outputs", ("tables",), random=True),
        _described("surrogate_tree", 5, "a decision tree that mimics the model, read as rules", "outputs",
                   ("tables",), global_view=True),
        _described("concept_rules", 5, "rules over concepts of the last convolution, named by the masks", "layers",
                   ("images",), global_view=True),
        _described("top_activations", 7, "the inputs that excite a feature map most, projected back", "layers",
                   ("images",), global_view=True),
        _described("tcav", 10, "concept activation vectors: does the class's logit rise along a concept", "gradients",
                   ("images", "time series"), global_view=True),
    ]
}  # fmt: skip


def attribution_methods(data: str = "images", names: Sequence[str] | None = None) -> dict[str, Callable]:
    """name -> ``explain(model, x, target)`` of the attribution methods for ``data``, for ``evaluate.compare``.

    ``names`` picks and orders them (default: all, in chapter order). Chapter 08.
    """
    _check_choice("data", data, DATA)
    chosen = [m for m in METHODS.values() if m.explain is not None and data in m.data]
    if names is None:
        return {m.name: m.explain for m in sorted(chosen, key=lambda m: m.chapter)}
    available = {m.name: m.explain for m in chosen}
    unknown = [name for name in names if name not in available]
    if unknown:
        raise ValueError(f"names: expected attribution methods for {data} among {sorted(available)}, got {unknown}")
    return {name: available[name] for name in names}


def _check_choice(name: str, value, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {list(choices)}, got {describe(value)}")


# ----------------------------------------------------------------------------- the chooser


@dataclass
class Recommendation:
    """A suitable method, why it suits, and the measured numbers behind it (if scores were given). Chapter 08."""

    method: Method
    reasons: list[str]
    scores: Scores | None = None


@dataclass
class Choice:
    """``choose``'s answer: the suitable methods, best measured first, and why the others were left out. Chapter 08."""

    suitable: list[Recommendation]
    excluded: dict[str, str]

    @property
    def names(self) -> list[str]:
        return [r.method.name for r in self.suitable]

    def __repr__(self) -> str:
        lines = ["Suitable:"] + [f"  {r.method.name}: {'; '.join(r.reasons)}" for r in self.suitable]
        lines += ["Left out:"] + [f"  {name}: {why}" for name, why in self.excluded.items()]
        return "\n".join(lines)


def _scores_by_name(scores) -> dict[str, Scores]:
    if scores is None:
        return {}
    if not isinstance(scores, Sequence) or not all(isinstance(row, Scores) for row in scores):
        raise TypeError(f"scores: expected the rows of evaluate.compare (a list of Scores), got {describe(scores)}")
    return {row.method: row for row in scores}


def why_not(m: Method, access, data, negative_evidence, global_view, seconds, row) -> str | None:
    """The first requirement ``m`` fails, in words, or None. Chapter 08."""
    if ACCESS.index(m.needs) > ACCESS.index(access):
        return f"needs {m.needs}, you have {access}"
    if data not in m.data:
        return f"explains {', '.join(m.data)}, not {data}"
    if negative_evidence and not m.negative_evidence:
        return "shows no negative evidence"
    if global_view and not m.global_view:
        return "explains one input at a time"
    if not global_view and m.explain is None and m.global_view:
        return "a global view, not an explanation of one input"
    if seconds is not None and row is not None and row.seconds_per_image > seconds:
        return f"measured {row.seconds_per_image:.3g} s per input, over the budget of {seconds:g} s"
    return None


def _reasons(m: Method, seconds, row: Scores | None) -> list[str]:
    reasons = [m.summary, f"needs {m.needs} (chapter {m.chapter:02d})"]
    if m.negative_evidence:
        reasons.append("signed: shows evidence against the class too")
    if m.completeness:
        reasons.append(f"sums to {m.completeness}")
    if m.random:
        reasons.append("random: seeded, but a different seed gives a different answer")
    if row is not None:
        measured = f"insertion {row.insertion_auc:.2f}, deletion {row.deletion_auc:.2f}, AOPC {row.aopc:.3g}"
        if not math.isnan(row.road_morf):
            measured += f", ROAD MoRF {row.road_morf:.2f}, LeRF {row.road_lerf:.2f}"
        reasons.append(f"measured: {measured}")
        if not math.isnan(row.mass_accuracy):
            reasons.append(f"mass on the object {row.mass_accuracy:.2f}, rank accuracy {row.rank_accuracy:.2f}")
        reasons.append(f"{row.seconds_per_image:.3g} s per input")
    elif seconds is not None and m.explain is not None:
        reasons.append("runtime not measured: pass scores to check the budget")
    return reasons


RANK_BY: dict[str, Callable[[Scores], float]] = {
    "faithfulness": METRICS["insertion - deletion"],
    "aopc": METRICS["AOPC"],
    "road": METRICS["ROAD LeRF - MoRF"],
    "localization": METRICS["rank"],
    "speed": lambda row: -row.seconds_per_image,
}
"""How ``choose`` orders the suitable methods by their measured scores, larger first (``evaluate.METRICS``)."""


def choose(
    *,
    access: str = "layers",
    data: str = "images",
    negative_evidence: bool = False,
    global_view: bool = False,
    seconds_per_input: float | None = None,
    scores: Sequence[Scores] | None = None,
    rank_by: str = "faithfulness",
) -> Choice:
    """The methods that suit a situation, with reasons and, given ``scores``, the measured numbers.

    Parameters
    ----------
    access : what you can do with the model: "outputs" (black box), "gradients" or "layers" (all of it).
    data : "images", "time series" or "tables".
    negative_evidence : you need maps that also show what speaks against the class.
    global_view : you need to explain the model as a whole rather than one input.
    seconds_per_input : a time budget per explained input, checked against the measured runtimes.
    scores : rows of ``evaluate.compare`` on your model (named as in ``METHODS``); with them, the
        suitable methods are sorted by a measured score, best first; unmeasured ones (or NaN scores) last.
    rank_by : the score that orders them, one of ``RANK_BY``: "faithfulness" (insertion minus deletion
        AUC, the default), "aopc" (region perturbation), "road" (ROAD, least minus most relevant first:
        scores from ``compare(..., with_road=True)``), "localization" (relevance rank accuracy) or "speed"
        (seconds per input). Pick one that separates the methods from the random baseline on your data
        (``evaluate.metric_check``; chapter 08 shows why).

    Chapter 08.
    """
    _check_choice("access", access, ACCESS)
    _check_choice("data", data, DATA)
    _check_choice("rank_by", rank_by, list(RANK_BY))
    if seconds_per_input is not None and not (isinstance(seconds_per_input, int | float) and seconds_per_input > 0):
        raise ValueError(f"seconds_per_input: expected a positive number or None, got {describe(seconds_per_input)}")
    measured = _scores_by_name(scores)
    suitable, excluded = [], {}
    for m in METHODS.values():
        row = measured.get(m.name)
        why = why_not(m, access, data, negative_evidence, global_view, seconds_per_input, row)
        if why is None:
            suitable.append(Recommendation(m, _reasons(m, seconds_per_input, row), row))
        else:
            excluded[m.name] = why

    def order(r: Recommendation) -> float:
        value = RANK_BY[rank_by](r.scores) if r.scores is not None else math.nan
        return math.inf if math.isnan(value) else -value

    suitable.sort(key=order)
    return Choice(suitable, excluded)


# ----------------------------------------------------------------------------- one table


_COLUMNS = {
    "seconds_per_image": "s/image",
    "deletion_auc": "deletion",
    "insertion_auc": "insertion",
    "aopc": "AOPC",
    "road_morf": "ROAD MoRF",
    "road_lerf": "ROAD LeRF",
    "mass_accuracy": "mass",
    "rank_accuracy": "rank",
    "pointing_game": "pointing",
    "completeness_error": "completeness",
    "spread": "spread",
    "max_sensitivity": "max-sens.",
    "randomized_spearman": "randomized",
}


def properties(name: str) -> dict[str, str] | None:
    """What ``name`` needs, whether its maps are signed evidence, whether it is random, as short strings.

    ``name`` is a method of ``METHODS`` or a combination "a + b + ..." of them (``combine``): it needs
    what its most demanding part needs, is unsigned (ranks), and is random if a part is. None for
    anything else (the random baseline of ``compare``). Chapter 08.
    """
    parts = [METHODS.get(part.strip()) for part in name.split(" + ")]
    if not parts or None in parts:
        return None
    needs = max((p.needs for p in parts), key=ACCESS.index)
    signed = len(parts) == 1 and parts[0].negative_evidence
    random = any(p.random for p in parts)
    return {"needs": needs, "signed": "yes" if signed else "no", "random": "yes" if random else "no"}


def table(
    scores: Sequence[Scores], *, extra: Mapping[str, Mapping[str, float]] | None = None, markdown: bool = False
) -> str:
    """The rows of ``evaluate.compare`` as one table: each method's properties beside its measured scores.

    Columns: the method, ``properties`` (needs, signed, random), the scores that are measured for at
    least one row (short names: "s/image", "deletion", "insertion", "AOPC", "ROAD MoRF", "ROAD LeRF", "mass",
    "rank", "pointing", "completeness", "spread", "max-sens.", "randomized"), then ``extra`` columns (column
    name -> method name -> value, e.g. scores measured elsewhere). Missing or NaN cells print as "-". Plain
    text, or a Markdown table with ``markdown=True`` (the README's). Chapter 08.
    """
    rows = list(_scores_by_name(scores).values()) if scores else []
    extra = dict(extra or {})
    if not all(isinstance(values, Mapping) for values in extra.values()):
        raise TypeError(f"extra: expected a dict column -> {{method: value}}, got {describe(extra)}")
    measured = [f for f in _COLUMNS if any(not math.isnan(getattr(row, f)) for row in rows)]
    header = ["method", "needs", "signed", "random", *(_COLUMNS[f] for f in measured), *extra]

    def cell(value) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    body = []
    for row in rows:
        props = properties(row.method) or {"needs": "-", "signed": "-", "random": "-"}
        values = [getattr(row, f) for f in measured] + [column.get(row.method) for column in extra.values()]
        body.append([row.method, props["needs"], props["signed"], props["random"], *map(cell, values)])
    if markdown:
        lines = [header, ["---"] * len(header), *body]
        return "\n".join("| " + " | ".join(line) + " |" for line in lines)
    widths = [max(len(line[j]) for line in [header, *body]) for j in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(line, widths)))
        for line in [header, *body]
    )


# ----------------------------------------------------------------------------- combining methods


def rank_normalize(attribution: torch.Tensor) -> torch.Tensor:
    """Each sample's map replaced by the ranks of its values, scaled to [0, 1]; tied values share
    their mean rank. Chapter 08."""
    flat = attribution.flatten(1).contiguous()
    ordered = flat.sort(1).values
    first = torch.searchsorted(ordered, flat, side="left")
    last = torch.searchsorted(ordered, flat, side="right") - 1
    ranks = (first + last).to(attribution.dtype) / 2
    return (ranks / max(flat.shape[1] - 1, 1)).view_as(attribution)


def combine(methods: Mapping[str, Callable] | Sequence[Callable]) -> Callable:
    """A new method: the mean of the rank-normalized maps of ``methods``, the survey's closing idea.

    Ranks put maps of different scales (logits, probabilities, gradients) on one footing; the
    result orders pixels by their average rank and is no longer signed (``plot`` draws it so).
    Chapter 08.
    """
    parts = list(methods.values()) if isinstance(methods, Mapping) else list(methods)
    if len(parts) < 2 or not all(callable(p) for p in parts):
        expected = "at least two methods method(model, x, target)"
        raise TypeError(f"methods: expected {expected}, got {describe(methods)}")

    @contract(signed=False)  # mean ranks in [0, 1]
    def combined(model, x, target=None):
        batch, unbatched = check_input(model, x)
        result = torch.stack([rank_normalize(part(model, batch, target)) for part in parts]).mean(0)
        return result[0] if unbatched else result

    return combined
