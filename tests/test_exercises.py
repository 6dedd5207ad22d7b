"""The exercises' self-checks: right answers pass, wrong ones fail without the verdict giving the answer away."""

import json
import re
from pathlib import Path

import pytest
import torch

from xai_course import exercises
from xai_course.exercises import EXERCISES, Choice, Number, Several, Tensor

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
IDS = list(EXERCISES)


def is_solution(cell) -> bool:
    return "solution" in cell["metadata"].get("tags", [])


def is_notes(cell) -> bool:
    return cell["metadata"].get("slideshow", {}).get("slide_type") == "notes"


def notebook_exercises() -> dict[str, tuple[dict, str]]:
    """id -> (metadata.exercise, the code of the exercise's solution cells), from the course notebooks."""
    found = {}
    for path in NOTEBOOKS:
        cells = [c for c in json.loads(path.read_text())["cells"] if not is_notes(c)]  # notes for the instructor
        for i, cell in enumerate(cells):
            if is_solution(cell) and not is_solution(cells[i - 1]):  # the first solution cell of an exercise
                meta = cell["metadata"]["exercise"]
                number = re.findall(r"\*\*Exercise (\d+)", "".join(cells[i - 1]["source"]))[-1]
                assert meta["id"] == f"{path.name[:2]}.{number}", (path.name, meta)
                end = next((j for j in range(i, len(cells)) if not is_solution(cells[j])), len(cells))
                code = ["".join(c["source"]) for c in cells[i:end] if c["cell_type"] == "code"]
                found[meta["id"]] = (meta, "\n".join(code))
    return found


def wrong(compare, right):
    """An answer of the right form that is wrong: a changed number, tensor, option or list of names."""
    if isinstance(compare, Several):
        return (wrong(compare.parts[0], right[0]), *right[1:])
    if isinstance(compare, Number):
        return right * 1.5 + 1
    if isinstance(compare, Tensor):
        return right + 1
    if isinstance(compare, Choice):
        others = [o for o in compare.options if o != right]
        return others[0] if others else "something else"
    return list(right[1:]) + ["no_such_module"]  # Names


def revealing(right) -> set[str]:
    """How the right answer could show in a verdict (as a whole word): numbers at 2 to 4 significant digits, text."""
    if isinstance(right, (tuple, list)):
        return set().union(*(revealing(r) for r in right))
    if isinstance(right, torch.Tensor):
        return set().union(*(revealing(v) for v in right.flatten().tolist()))
    if isinstance(right, str):
        return {right}
    return {f"{right:.{digits}g}" for digits in (2, 3, 4)}


def verdict(capsys, exercise: str) -> str:
    """The printed verdict, without its 'Exercise CC.k:' prefix (whose digits are the id's)."""
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"Exercise {exercise}: ") and "\n" not in line, line
    return line.removeprefix(f"Exercise {exercise}: ")


@pytest.mark.parametrize("exercise", IDS)
def test_the_right_answer_passes_and_a_wrong_one_fails_without_giving_it_away(exercise, capsys):
    right = exercises._right(exercise)
    assert exercises.check(exercise, right) is True
    assert verdict(capsys, exercise) == "right."
    assert exercises.check(exercise, wrong(EXERCISES[exercise].compare, right)) is False
    said = verdict(capsys, exercise)
    assert said.startswith("not yet: ")
    assert not [r for r in revealing(right) if re.search(rf"(?<![\w.]){re.escape(r)}(?![\w.])", said)], said


def test_hints_say_what_is_wrong(capsys):
    assert not exercises.check("03.1", [2.0, 1.75, 1.75]) and "shape (4,)" in capsys.readouterr().out
    assert not exercises.check("00.3", 0.9) and "too large (off by more than 1%)" in capsys.readouterr().out
    assert not exercises.check("03.2", "0.3") and "not one of the options" in capsys.readouterr().out
    assert not exercises.check("07.1", (2, 1, 15)) and "third part: too small." in capsys.readouterr().out


def test_answers_are_read_the_way_students_write_them(capsys):
    assert exercises.check("08.1", torch.tensor([[2.5, 0.0, 1.0, 2.5]]) / 3)  # a (1, 4) map answers 4 values
    assert exercises.check("03.2", 0.5) and exercises.check("03.2", "P = 0.5")  # a number, or text in any case
    assert exercises.check("04.3", torch.tensor([False]))  # a comparison of one-element tensors: "no"
    assert exercises.check("05.1", ["{age<=27} -> deny", False])
    assert exercises.check("08.2", ({"sliding window", "Kernel SHAP", "LIME"}, "sliding-window"))
    assert exercises.check("06.2", torch.tensor(-0.25))
    capsys.readouterr()


@pytest.mark.parametrize(
    ("exercise", "answer", "error", "words"),
    [
        ("05.2", 1.0, ValueError, "expected one of the exercises with a self-check ['00.1'"),  # an open question
        ("3.2", 1.0, ValueError, "got '3.2'"),
        (3.2, 1.0, TypeError, "exercise: expected an id like '03.2' (text), got float 3.2"),
        ("00.3", "0.2", TypeError, "answer: expected a number, got str '0.2' (exercise 00.3 asks for"),
        ("00.3", float("nan"), ValueError, "answer: expected a finite number, got nan"),
        ("00.3", torch.ones(2), TypeError, "answer: expected a number, got a torch.float32 tensor of shape (2,)"),
        ("03.1", "2, 1.75", TypeError, "answer: expected a tensor, an array or numbers, got str"),
        ("03.2", None, TypeError, "answer: expected text, got NoneType None"),
        ("00.2", 0.6, TypeError, "answer: expected a tuple of 2 answers, got float 0.6"),
        ("00.2", (0.6, 0.6, 0.6), ValueError, "answer: expected a tuple of 2 answers, got 3"),
        ("04.1", (3, "flat"), TypeError, "answer[1]: expected a tensor"),
        ("01.4", "bn1", TypeError, "answer: expected a list of names, got str 'bn1'"),
    ],
)
def test_bad_ids_and_answers_get_clear_errors(exercise, answer, error, words):
    with pytest.raises(error) as raised:
        exercises.check(exercise, answer)
    assert words in str(raised.value)


def test_the_registry_is_the_notebooks_checkable_exercises():
    found = notebook_exercises()
    assert len(found) >= 27
    assert {key for key, (meta, _) in found.items() if meta["check"]} == set(EXERCISES)
    for key, (meta, source) in found.items():
        assert set(meta) == {"id", "task", "check"} and len(meta["task"]) > 40, key
        assert re.fullmatch(r"\d\d\.\d+", key), key
        # every worked solution of a checkable exercise checks its own answer, so nbval proves the checker takes it
        assert (f'xc.exercises.check("{key}", ' in source) == meta["check"], key
        assert ("Set answer to" in meta["task"]) == meta["check"], key
