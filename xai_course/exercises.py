"""Self-checks for the exercises: ``check("03.2", answer)`` says whether an answer is right, never what it is.

Every exercise whose answer is a number, a tensor or a short choice has an entry in ``EXERCISES``, under the id
its notebook shows, "CC.k" (chapter, exercise number): the form of the answer, how to get the right one, and how
to compare. Open questions ("explain why") have none. Where the right answer comes from the course's data and
models it is computed here with the package, seeded, on first use; a hand computation, and a verdict (a choice,
a yes or no) that the chapter's worked solution measures, are written out with where they come from. Every
worked solution ends by checking its own answer here, and the course's tests run them, so a written verdict
that stopped matching the measurement fails there. The verdict is one line: "right", or "not yet" with a hint
(the expected shape, too large or too small, not that option) that does not give the answer away. Chapter 00.
"""

from __future__ import annotations

import functools
import math
import numbers
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from . import core, data, evaluate, fuzzy, gradient, guide, models, rules
from .core import describe

ORDINALS = ("first", "second", "third")


def _plain(answer):
    """A one-element tensor, array or numpy scalar as a Python scalar; anything else unchanged."""
    if isinstance(answer, torch.Tensor) and answer.numel() == 1:
        return answer.item()
    if isinstance(answer, (np.ndarray, np.generic)) and answer.size == 1:
        return answer.item()
    return answer


def _spelling(value, name: str) -> str:
    """Text as compared: lower case, without a leading "the", spaces, '_' and '-'; True/False as yes/no."""
    value = _plain(value)
    if isinstance(value, bool):
        value = "yes" if value else "no"
    elif isinstance(value, numbers.Real):
        value = str(value)
    elif not isinstance(value, str):
        raise TypeError(f"{name}: expected text, got {describe(value)}")
    return re.sub(r"[\s_\-]+", "", value.strip().lower().removeprefix("the "))


@dataclass(frozen=True)
class Number:
    """A number, right within ``rel`` of the right one (relative) or ``atol`` (absolute), whichever is larger.

    A one-element tensor or array counts as a number. Chapter 00.
    """

    rel: float = 0.01
    atol: float = 0.0

    def hint(self, answer, right: float, name: str = "answer") -> str | None:
        value = _plain(answer)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name}: expected a number, got {describe(answer)}")
        if not math.isfinite(value):
            raise ValueError(f"{name}: expected a finite number, got {value}")
        if abs(value - right) <= max(self.atol, self.rel * abs(right)):
            return None
        off = f" (off by more than {self.rel:.0%})" if self.rel else ""
        return ("too large" if value > right else "too small") + off


EXACT = Number(rel=0.0, atol=1e-6)  # small integers and hand-computed values that theory says are exact
ZERO = Number(rel=0.0, atol=1e-5)  # a difference that theory says is zero, up to float rounding


@dataclass(frozen=True)
class Tensor:
    """A tensor, array or list of numbers, right when every entry is within ``atol + rtol * |right|``.

    Dimensions of size 1 do not count: a map of shape (1, 4) answers a question about 4 values. Chapter 02.
    """

    rtol: float = 1e-3
    atol: float = 1e-3

    def hint(self, answer, right: torch.Tensor, name: str = "answer") -> str | None:
        try:
            value = torch.as_tensor(answer.detach() if isinstance(answer, torch.Tensor) else answer).double()
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"{name}: expected a tensor, an array or numbers, got {describe(answer)}") from None
        if not torch.isfinite(value).all():
            raise ValueError(f"{name}: expected finite numbers, got NaN or inf in {describe(answer)}")
        value, right = value.squeeze(), right.double().squeeze()
        if value.shape != right.shape:
            return f"expected a tensor of shape {tuple(right.shape)}"
        close = torch.isclose(value, right, rtol=self.rtol, atol=self.atol)
        return None if close.all() else "some entries are off" if close.any() else "every entry is off"


@dataclass(frozen=True)
class Choice:
    """One of a few answers, as text (case, spaces, '_', '-' and a leading "the" do not count), as a number
    written like the option, or as True/False for "yes"/"no".

    ``options`` maps every answer the exercise allows, right or wrong, to its other accepted spellings. Chapter 00.
    """

    options: dict[str, tuple[str, ...]]

    def hint(self, answer, right: str, name: str = "answer") -> str | None:
        given = _spelling(answer, name)
        chosen = [o for o, spellings in self.options.items() if given in {_spelling(s, o) for s in (o, *spellings)}]
        if chosen == [right]:
            return None
        return "not that one" if chosen else "not one of the options the task names"


YES_NO = Choice({"yes": ("true", "y"), "no": ("false", "n")})


@dataclass(frozen=True)
class Names:
    """A list of names in any order, spelled as for ``Choice``. Chapter 01."""

    def hint(self, answer, right: list[str], name: str = "answer") -> str | None:
        if isinstance(answer, str) or not isinstance(answer, Iterable):
            raise TypeError(f"{name}: expected a list of names, got {describe(answer)}")
        given = [_plain(a) for a in answer]
        if not all(isinstance(a, str) for a in given):
            raise TypeError(f"{name}: expected a list of names (text), got {describe(answer)}")
        given, wanted = {_spelling(a, name) for a in given}, {_spelling(r, name) for r in right}
        missing, extra = len(wanted - given), len(given - wanted)
        wrong = ([f"{missing} missing"] if missing else []) + ([f"{extra} not among them"] if extra else [])
        return ", ".join(wrong) or None


@dataclass(frozen=True)
class Several:
    """A tuple (or list) of answers, each compared by its own rule. Chapter 00."""

    parts: tuple

    def hint(self, answer, right: tuple, name: str = "answer") -> str | None:
        if not isinstance(answer, (tuple, list)):
            raise TypeError(f"{name}: expected a tuple of {len(self.parts)} answers, got {describe(answer)}")
        if len(answer) != len(self.parts):
            raise ValueError(f"{name}: expected a tuple of {len(self.parts)} answers, got {len(answer)}")
        hints = [(i, part.hint(a, r, f"{name}[{i}]")) for i, (part, a, r) in enumerate(zip(self.parts, answer, right))]
        return "; ".join(f"{ORDINALS[i]} part: {hint}" for i, hint in hints if hint is not None) or None


@dataclass(frozen=True)
class Exercise:
    """One checkable exercise: the form of its answer, a function giving the right one, the comparison. Chapter 00."""

    asked: str
    right: Callable[[], object]
    compare: Number | Tensor | Choice | Names | Several


# ----------------------------------------------------------------------------- right answers from the package


def _relative_changes() -> tuple[float, float]:
    """00.2: relative L2 change of the gradient and of gradient x input when canonical image 0 is brightened."""
    model, x0 = models.load("shapes_cnn"), data.canonical().images[:1]
    x1, target = (x0 + 0.1).clamp(0, 1), model(x0).argmax(1)

    def change(method) -> float:
        a, b = method(model, x0, target), method(model, x1, target)
        return ((a - b).norm() / a.norm()).item()

    return change(functools.partial(gradient.saliency, abs=False)), change(gradient.gradient_x_input)


def _share_on_tag() -> float:
    """00.3: positive gradient x input on the tag, first 32 tagged non-circles the Clever Hans model calls circle."""
    hans = models.load("shapes_cnn_clever_hans")
    test = data.shapes(500, split="test", seed=123)  # the first 500 of chapter 00's 1000 test images, the same ones
    tagged, tag_masks = data.add_tag(test.images[test.labels != data.TAG_CLASS])
    fooled = core.predict(hans, tagged).argmax(1) == data.TAG_CLASS
    gxi = gradient.gradient_x_input(hans, tagged[fooled][:32], target=data.TAG_CLASS)
    return evaluate.relevance_mass_accuracy(gxi, tag_masks[fooled][:32]).mean().item()


def _batchnorm_names() -> list[str]:
    """01.4: the BatchNorm modules of shapes_resnet, which canonization merges into the layer before."""
    resnet = models.load("shapes_resnet")
    return [name for name, module in resnet.named_modules() if isinstance(module, torch.nn.BatchNorm2d)]


def _fuzzy_fidelities() -> tuple[float, float]:
    """05.3: test fidelity of fuzzy rules over income, amount and duration, with three and with five words."""
    black_box = rules.black_box(models.load("loan_mlp"))
    train, test = data.loans(2000, "train", seed=1), data.loans(2000, "test", seed=0)
    decisions = black_box(test.features)

    def fidelity(words: int) -> float:
        base = fuzzy.fuzzy_rules(black_box, train, features=["income", "amount", "duration"], words=words)
        return float(np.mean(base.predict(test.features.numpy()) == decisions))

    return fidelity(3), fidelity(5)


def _outputs_only_signed() -> list[str]:
    """08.2: the methods that need only the model's outputs and show negative evidence."""
    return guide.choose(access="outputs", negative_evidence=True).names


def _shifted_combination_mass() -> float:
    """08.3: relevance mass accuracy of LRP + RISE (rank maps in [0, 1]) minus 0.5 on the four canonical images."""
    model, four = models.load("shapes_cnn"), data.canonical()[:4]
    combined = guide.combine(guide.attribution_methods("images", ["lrp", "rise"]))(model, four.images)
    return evaluate.relevance_mass_accuracy(combined - 0.5, four.masks).mean().item()


# ----------------------------------------------------------------------------- the exercises

EXERCISES: dict[str, Exercise] = {
    # theory: a linear model's gradient is its weight vector, whatever the image (the solution compares two maps)
    "00.1": Exercise('"the model" or "the image"', lambda: "the model",
                     Choice({"the model": (), "the image": ()})),
    "00.2": Exercise("a pair (relative change of the gradient, of gradient × input)", _relative_changes,
                     Several((Number(), Number()))),
    "00.3": Exercise("the share of positive gradient × input on the tag (a number in [0, 1])", _share_on_tag,
                     Number()),
    # by hand, chapter 01 section 2's toy: f = 9 of which R_h keeps 8.1, R_x keeps 6.7125
    "01.1": Exercise("a pair (relevance absorbed in the top layer, in the bottom layer)", lambda: (0.9, 1.3875),
                     Several((Number(), Number()))),
    # theory: z+ and alpha-beta with alpha = 1, beta = 0 are the same rule, for inputs of either sign
    "01.2": Exercise("the largest absolute difference between the two maps (a number)", lambda: 0.0, ZERO),
    # the flat rule spreads by construction; the solution measures more relevance on the ring with it
    "01.3": Exercise('"flat" or "epsilon_gamma_box"', lambda: "flat",
                     Choice({"flat": ("flat first layer", "flat rule", "lrp.Flat"),
                             "epsilon_gamma_box": ("ε-γ-zB", "epsilon gamma box", "zB")})),  # fmt: skip
    "01.4": Exercise("a list of module names", _batchnorm_names, Names()),
    # by hand (the glove game): phi_R = 4 of 6 orders = 2/3, the left gloves share the rest
    "02.1": Exercise("a tensor (phi_L1, phi_L2, phi_R)", lambda: torch.tensor([1 / 6, 1 / 6, 2 / 3]), Tensor()),
    # measured and asserted by the solution (Kernel SHAP on the eight canonical images)
    "02.2": Exercise('"slic" or "grid"', lambda: "slic", Choice({"slic": (), "grid": ("regular grid",)})),
    # theory: without biases the multipliers of a black reference are the ReLU derivatives (the exercise's hint)
    "02.3": Exercise("the largest absolute difference between the two maps (a number)", lambda: 0.0, ZERO),
    # by hand, chapter 03 section 2's toy: windows {1, 2, 3} and {2, 3, 4} drop 2 and 1.5, shared pixels average
    "03.1": Exercise("a tensor of the four map values", lambda: torch.tensor([2.0, 1.75, 1.75, 1.5]), Tensor()),
    # measured and asserted by the solution (RISE, 200 masks, on the four canonical images)
    "03.2": Exercise('"0.1" or "0.5"', lambda: "0.5", Choice({"0.1": ("p = 0.1",), "0.5": ("p = 0.5",)})),
    # measured and asserted by the solution (overlays of canonical image 0)
    "03.3": Exercise('"outside" or "on the circle"', lambda: "on the circle",
                     Choice({"on the circle": ("on it", "on", "inside", "on the shape"),
                             "outside": ("outside the circle", "around it", "around")})),  # fmt: skip
    # by hand: one equation in four unknowns; every pixel moves alike to the mean 0.55 of chapter 04's x_toy
    "04.1": Exercise("a pair (null-space dimension, the pre-image as a tensor)",
                     lambda: (3, torch.full((4,), 0.55)), Several((EXACT, Tensor()))),
    # measured and asserted by the solution (the four solutions of section 6)
    "04.2": Exercise('a pair ("yes"/"no": closer than each solution?, "yes"/"no": still a pre-image?)',
                     lambda: ("yes", "no"), Several((YES_NO, YES_NO))),
    # measured and asserted by the solution: 150 steps lower the feature error, hardly the pixel error
    "04.3": Exercise('"yes" or "no"', lambda: "no", YES_NO),
    # by hand, chapter 05 section 2's toy tree and black box (deny: age <= 25 and amount > 5000)
    "05.1": Exercise('a pair (the counterfactual as str(rule) prints it, "yes"/"no": valid?)',
                     lambda: ("{age <= 27} -> deny", "no"),
                     Several((Choice({"{age <= 27} -> deny": ("age <= 27", "{age <= 27}")}), YES_NO))),
    "05.3": Exercise("a pair (fidelity with three words, with five words)", _fuzzy_fidelities,
                     Several((Number(), Number()))),
    # by hand: v = (2, 1.5, -0.5), v.w = 8, relevance v_i w_i / 8
    "06.1": Exercise("a tensor of the three relevances", lambda: torch.tensor([0.5, 0.375, 0.125]), Tensor()),
    # by hand: the root (1 - t, 0.25) with t = z is in the domain for b = -0.25 (t = 0.25), not for b = 1 (t = 1.5)
    "06.2": Exercise("the bias (a number)", lambda: -0.25, EXACT),
    # theory: with b <= 0 LRP z+'s denominators are DTD's (the solution's relative difference)
    "06.3": Exercise("the largest relative difference between the two maps (a number)", lambda: 0.0, ZERO),
    # by hand, chapter 07 section 2's map a: the 4 at row 2, column 1 wins four windows
    "07.1": Exercise("a tuple (row, column, amount)", lambda: (2, 1, 16), Several((EXACT, EXACT, EXACT))),
    # by hand: kernel 4, stride 2: two copies along each axis
    "07.2": Exercise("the number of copies covering a pixel inside the border", lambda: 4, EXACT),
    # by hand: sorted -2, 0, 4, 4; ranks 0, 1 and 2.5 for the tied pair, divided by 3
    "08.1": Exercise("a tensor of the four ranks", lambda: torch.tensor([2.5, 0.0, 1.0, 2.5]) / 3, Tensor()),
    # the names from guide.choose; the call counts of section 5: 225 + 1 windows, 256 + 1 coalitions (Kernel SHAP, LIME)
    "08.2": Exercise("a pair (the names of the methods, the one with fewer calls)",
                     lambda: (_outputs_only_signed(), "sliding_window"),
                     Several((Names(), Choice({"sliding_window": ("occlusion",), "kernel_shap": (), "lime": ()})))),
    "08.3": Exercise("the relevance mass accuracy (a number)", _shifted_combination_mass, Number()),
}  # fmt: skip


def _exercise(exercise) -> Exercise:
    if not isinstance(exercise, str):
        raise TypeError(f"exercise: expected an id like '03.2' (text), got {describe(exercise)}")
    if exercise not in EXERCISES:
        raise ValueError(f"exercise: expected one of the exercises with a self-check {list(EXERCISES)}, "
                         f"got {exercise!r}")  # fmt: skip
    return EXERCISES[exercise]


@functools.cache
def _right(exercise: str):
    """The right answer, computed once per session; the student's random state and grad mode are left alone."""
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        return EXERCISES[exercise].right()


def check(exercise: str, answer) -> bool:
    """Print whether ``answer`` is right for ``exercise`` (an id "CC.k": chapter, number) and return True or False.

    The printed verdict is "right" or "not yet" with a hint, never the right answer. An answer of the wrong
    form (text where a number is asked, a tuple of the wrong length) raises a ``TypeError`` or ``ValueError``
    that says what the exercise asks for. Chapter 00.
    """
    entry, right = _exercise(exercise), _right(exercise)
    try:
        hint = entry.compare.hint(answer, right)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{error} (exercise {exercise} asks for {entry.asked})") from None
    print(f"Exercise {exercise}: " + ("right." if hint is None else f"not yet: {hint}."))
    return hint is None
