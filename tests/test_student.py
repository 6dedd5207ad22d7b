"""The student edition (tools/student.py): no solution survives, every exercise keeps an answer cell."""

import importlib.util
import json
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
_spec = importlib.util.spec_from_file_location("student", ROOT / "tools" / "student.py")
student = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(student)


@pytest.fixture(scope="module")
def edition(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("student")
    student.main([str(ROOT / "notebooks"), str(target)])
    return target


def text(cell) -> str:
    return "".join(cell["source"])


def is_solution(cell) -> bool:
    return "solution" in cell["metadata"].get("tags", [])


def solution_lines(cells) -> set[str]:
    """The non-trivial lines of the solution cells that occur nowhere else in the chapter."""
    elsewhere = "\n".join(text(c) for c in cells if not is_solution(c))
    return {
        line.strip()
        for cell in cells
        if is_solution(cell)
        for line in text(cell).splitlines()
        if len(line.strip()) > 20 and line.strip() not in elsewhere
    }


def exercises(cells) -> list[dict]:
    return [c["metadata"]["exercise"] for c in cells if "exercise" in c["metadata"]]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_solution_survives(edition, path):
    cells = json.loads(path.read_text())["cells"]
    raw = (edition / path.name).read_text()
    sources = "\n".join(text(c) for c in json.loads(raw)["cells"])
    lines = solution_lines(cells)
    assert len(lines) >= 5
    assert not [line for line in lines if line in raw or line in sources]
    assert '"solution"' not in raw and "**Solution**" not in raw and "# Solution" not in raw


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_each_exercise_has_its_answer_cell_after_its_statement(edition, path):
    course = nbformat.read(path, as_version=4)
    cells = nbformat.read(edition / path.name, as_version=4).cells
    answers = {c.id: i for i, c in enumerate(cells) if c.id.startswith("exercise-")}
    for exercise in exercises(course.cells):
        i = answers.pop("exercise-" + exercise["id"].replace(".", "-"))
        lines = cells[i].source.splitlines()
        number = exercise["id"].split(".")[1]
        assert cells[i].cell_type == "code" and all(line.startswith("# ") for line in lines), cells[i].source
        assert lines[0].startswith(f"# Exercise {number}: ") and cells[i - 1].source.count(f"**Exercise {number}")
        check = f'# Check your answer: xc.exercises.check("{exercise["id"]}", answer)'
        assert (lines[-1] == check) == exercise["check"]
        assert " ".join(line.removeprefix("# ") for line in lines).count(exercise["task"]) == 1
    assert not answers


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_edition_is_valid_stripped_and_otherwise_unchanged(edition, path):
    course = nbformat.read(path, as_version=4)
    built = nbformat.read(edition / path.name, as_version=4)
    nbformat.validate(built)
    assert built.metadata == course.metadata and "widgets" not in built.metadata
    assert built.cells[0] == course.cells[0] and built.cells[1].id == "student-edition"
    assert "Student edition" in built.cells[1].source
    assert all(c.outputs == [] and c.execution_count is None for c in built.cells if c.cell_type == "code")
    assert not [c for c in built.cells if c.metadata.get("slideshow", {}).get("slide_type") == "notes"]
    kept = [c for c in course.cells if not student.is_solution(c) and not student.is_notes(c)]
    assert [c for c in built.cells if c.id != "student-edition" and not c.id.startswith("exercise-")] == kept


def test_the_build_is_deterministic(edition, tmp_path):
    again = student.build(ROOT / "notebooks", tmp_path)
    assert [p.name for p in again] == [p.name for p in NOTEBOOKS]
    assert all(p.read_bytes() == (edition / p.name).read_bytes() for p in again)


def test_notes_go_and_a_solution_without_its_exercise_metadata_is_refused(tmp_path):
    def solution(source, **metadata):
        return nbformat.v4.new_code_cell(source, metadata={"tags": ["solution"], **metadata})

    def notes():
        return nbformat.v4.new_markdown_cell("*Speaker notes:* say it", metadata={"slideshow": {"slide_type": "notes"}})

    exercise = {"id": "99.1", "task": "Compute it. Set answer to the number.", "check": False}
    title, statement = nbformat.v4.new_markdown_cell("# Title"), nbformat.v4.new_markdown_cell("**Exercise 1.** Do it.")
    first, second = solution("# Solution\nthe_answer = 42", exercise=exercise), solution("print(the_answer)")
    cells = [title, statement, notes(), first, notes(), second]
    built = student.student_edition(nbformat.v4.new_notebook(cells=cells))
    first_lines = [c.source.splitlines()[0] for c in built.cells]
    assert first_lines == ["# Title", student.NOTE, "**Exercise 1.** Do it.", "# Exercise 1: " + exercise["task"]]
    del cells[3].metadata["exercise"]
    with pytest.raises(ValueError, match="expected metadata.exercise"):
        student.student_edition(nbformat.v4.new_notebook(cells=cells))
    with pytest.raises(ValueError, match="source: expected a folder with notebooks"):
        student.build(tmp_path, tmp_path / "out")
