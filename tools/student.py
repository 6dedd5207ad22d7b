"""Build the student edition of the course: the chapters without their worked solutions and speaker notes.

    python tools/student.py notebooks build/student

Each notebook of the source folder is written to the target folder under the same name, with every cell tagged
``solution`` removed; in place of each exercise's solution cells, an empty code cell for the student's answer
whose comments say what to do and, for exercises with a self-check (``metadata.exercise.check``), how to call
``xai_course.exercises.check``. Cells with ``metadata.slideshow.slide_type == "notes"`` (notes for instructors)
are dropped, and a short note after the title cell says which edition this is. Everything else is copied as is.
The output is stripped and deterministic: the same sources give the same bytes.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import nbformat

WIDTH = 116  # comment lines of the answer cells fit the course's line length (120)
NOTE = (
    "**Student edition.** This copy of the chapter has no worked solutions: after each exercise comes an empty "
    "cell for your answer. Where the answer is a number, a tensor or a short choice, the cell shows how to check "
    "it with `xc.exercises.check`, which says whether it is right without giving it away. The full course, with "
    "the worked solutions (folded under each exercise), is the `notebooks/` folder of the course's repository."
)


def is_solution(cell) -> bool:
    return "solution" in cell.metadata.get("tags", [])


def is_notes(cell) -> bool:
    return cell.metadata.get("slideshow", {}).get("slide_type") == "notes"


def answer_cell(solution):
    """The empty code cell that replaces an exercise's solution cells: its task, and its self-check if it has one."""
    exercise = solution.metadata.get("exercise")
    if exercise is None:
        raise ValueError(f"the solution starting {solution.source[:60]!r}: expected metadata.exercise (id, task, "
                         "check) on the first solution cell of every exercise")  # fmt: skip
    number = exercise["id"].split(".")[1]
    lines = textwrap.wrap(exercise["task"], WIDTH, initial_indent=f"# Exercise {number}: ", subsequent_indent="# ",
                          break_long_words=False, break_on_hyphens=False)  # fmt: skip
    if exercise["check"]:
        lines.append(f'# Check your answer: xc.exercises.check("{exercise["id"]}", answer)')
    cell = nbformat.v4.new_code_cell("\n".join(lines))
    cell.id = "exercise-" + exercise["id"].replace(".", "-")
    return cell


def note_cell():
    cell = nbformat.v4.new_markdown_cell(NOTE)
    cell.id = "student-edition"
    return cell


def strip(cell):
    """The cell without outputs or execution count (code cells)."""
    if cell.cell_type == "code":
        cell.outputs, cell.execution_count = [], None
    return cell


def student_cells(cells: list) -> list:
    """The title cell, the note, then every cell but solutions and notes, an answer cell for each exercise."""
    kept, in_solution = [strip(cells[0]), note_cell()], False
    for cell in cells[1:]:
        if is_notes(cell):
            continue
        if is_solution(cell) and not in_solution:  # the first solution cell of an exercise
            kept.append(answer_cell(cell))
        elif not is_solution(cell):
            kept.append(strip(cell))
        in_solution = is_solution(cell)
    return kept


def student_edition(notebook):
    """The student edition of one chapter (a new notebook; the source is left alone)."""
    edition = nbformat.from_dict(notebook)  # a deep copy
    edition.cells = student_cells(edition.cells)
    edition.metadata.pop("widgets", None)
    nbformat.validate(edition)
    return edition


def build(source: Path, target: Path) -> list[Path]:
    """Write the student edition of every notebook in ``source`` to ``target``; return the paths written."""
    paths = sorted(source.glob("*.ipynb"))
    if not paths:
        raise ValueError(f"source: expected a folder with notebooks, got {str(source)!r} (no *.ipynb in it)")
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        try:
            edition = student_edition(nbformat.read(path, as_version=4))
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None
        nbformat.write(edition, target / path.name)
        written.append(target / path.name)
    return written


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit("usage: python tools/student.py SOURCE_FOLDER TARGET_FOLDER (e.g. notebooks build/student)")
    for path in build(Path(argv[0]), Path(argv[1])):
        print(path)


if __name__ == "__main__":
    main(sys.argv[1:])
