"""Committed notebooks carry no outputs, no execution counts and no widget state; their exercises share one format,
their claim checks are tagged, and their metadata makes the instructor's slides."""

import ast
import inspect
import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert [p.name for p in NOTEBOOKS][:1] == ["00_introduction.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stripped(path):
    notebook = json.loads(path.read_text())
    assert "widgets" not in notebook.get("metadata", {}), "metadata.widgets must be stripped"
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"outputs left in a cell starting {cell['source'][:1]}"
            assert cell.get("execution_count") is None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_metadata_matches_the_kernel(path):
    """JupyterLab writes the kernel's language_info and kernelspec on open; if they are missing the notebook
    shows as modified before the student has done anything."""
    metadata = json.loads(path.read_text())["metadata"]
    kernelspec = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    assert metadata.get("kernelspec") == kernelspec
    info = metadata.get("language_info", {})
    assert info.get("name") == "python" and info.get("pygments_lexer") == "ipython3", info
    assert set(info) >= {"codemirror_mode", "file_extension", "mimetype", "nbconvert_exporter", "version"}, info


def _text(cell) -> str:
    return "".join(cell["source"])


def _is_solution(cell) -> bool:
    return "solution" in cell.get("metadata", {}).get("tags", [])


def _slide_type(cell) -> str:
    return cell.get("metadata", {}).get("slideshow", {}).get("slide_type", "-")


def _is_notes(cell) -> bool:
    return _slide_type(cell) == "notes"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_exercises_share_one_format(path):
    """Every exercise: a markdown statement, then its solution in cells tagged "solution" and folded in JupyterLab
    (markdown: source hidden; code: source and outputs hidden). Nothing else sits between two exercises."""
    cells = json.loads(path.read_text())["cells"]
    heading = [i for i, c in enumerate(cells) if re.match(r"## \d+\. Exercises", _text(c))]
    assert len(heading) == 1, "one '## N. Exercises' section"
    end = next(i for i in range(heading[0] + 1, len(cells)) if _text(cells[i]).startswith("## "))
    section = [c for c in cells[heading[0] : end] if not _is_notes(c)]  # the instructor's notes are no exercise
    assert all("<details>" not in _text(c) for c in cells), "solutions live in tagged cells, not in <details>"
    assert not any(_is_solution(c) for c in cells[: heading[0]] + cells[end:]), "solutions only among exercises"
    statements = 0
    for i, cell in enumerate(section):
        if _is_solution(cell):
            hidden = {"source_hidden": True} if cell["cell_type"] == "markdown" else {"source_hidden": True,
                                                                                      "outputs_hidden": True}
            assert cell["metadata"].get("jupyter") == hidden, _text(cell)[:60]
            first_line = _text(cell).split("\n")[0]  # what a folded cell shows: it must not give the answer away
            assert first_line.startswith(("# Solution", "**Solution**")), first_line
            continue
        assert cell["cell_type"] == "markdown" and "**Exercise" in _text(cell), f"untagged cell: {_text(cell)[:60]}"
        statements += 1
        following = section[i + 1 :]
        answer = next((j for j, c in enumerate(following) if not _is_solution(c)), len(following))
        assert any(c["cell_type"] == "code" for c in following[:answer]), f"no solution code after {_text(cell)[:60]}"
    assert statements >= 3


def _tags(cell) -> list:
    return cell.get("metadata", {}).get("tags", [])


def _statements(cell) -> tuple[list, list]:
    """The statements of a code cell (nested ones included) and those among them that assert."""
    code = "\n".join(line for line in _text(cell).splitlines() if not line.lstrip().startswith(("%", "!")))
    statements = [node for node in ast.walk(ast.parse(code)) if isinstance(node, ast.stmt)]
    asserts = [s for s in statements if isinstance(s, ast.Assert) or (isinstance(s, ast.Expr)
               and isinstance(s.value, ast.Call) and "assert" in ast.unparse(s.value.func))]  # assert_close too
    return statements, asserts


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_claim_checks_are_tagged(path):
    """A cell that mostly asserts (at least 3 asserts, at least half of its statements) verifies the text rather
    than teaching: it carries the tag "check" (the site folds its code, the slides skip it). Shorter cells that only
    re-verify a printed number may carry it too. A check is code, and never a solution."""
    for cell in json.loads(path.read_text())["cells"]:
        tags = _tags(cell)
        assert not ("check" in tags and "solution" in tags), f"check and solution at once: {_text(cell)[:60]}"
        if "check" in tags:
            assert cell["cell_type"] == "code", f"a check is a code cell: {_text(cell)[:60]}"
        if cell["cell_type"] != "code" or "solution" in tags:
            continue
        statements, asserts = _statements(cell)
        if len(asserts) >= 3 and 2 * len(asserts) >= len(statements):
            assert "check" in tags, f"{len(asserts)} of {len(statements)} statements assert: {_text(cell)[:60]}"


SLIDE_TYPES = {"slide", "subslide", "fragment", "-", "skip", "notes"}
NOTES = "*Speaker notes:*"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_slideshow_metadata(path):
    """The instructor's deck (tools/slides.py) comes from cell metadata: the title and every `## ` section start a
    slide, every `### ` subsection a subslide; claim checks and solutions are skipped; every section has speaker
    notes (a markdown cell of type "notes" starting with *Speaker notes:*, dropped from the student edition)."""
    cells = json.loads(path.read_text())["cells"]
    assert all(_slide_type(c) in SLIDE_TYPES for c in cells), {_slide_type(c) for c in cells} - SLIDE_TYPES
    assert _slide_type(cells[0]) == "slide" and _text(cells[0]).startswith("# "), "the title cell is a slide"
    section = None
    notes = {}
    for cell in cells:
        text = _text(cell)
        if cell["cell_type"] == "markdown" and text.startswith("## "):
            assert _slide_type(cell) == "slide", f"a section is a slide: {text[:60]}"
            section = text.splitlines()[0]
            notes[section] = 0
        elif cell["cell_type"] == "markdown" and text.startswith("### "):
            assert _slide_type(cell) == "subslide", f"a subsection is a subslide: {text[:60]}"
        if {"check", "solution"} & set(_tags(cell)):
            assert _slide_type(cell) == "skip", f"checks and solutions are skipped: {text[:60]}"
        if _is_notes(cell) or text.startswith(NOTES):
            assert cell["cell_type"] == "markdown" and text.startswith(NOTES) and _is_notes(cell), text[:60]
            assert section is not None, "speaker notes belong to a section"
            notes[section] += 1
    assert notes, "no sections"
    assert [s for s, n in notes.items() if n != 1] == [], "each section has one notes cell"


def _shown_sources(path: Path) -> list[tuple[str, bool]]:
    """The expressions a notebook passes to ``xc.plot.source``, with whether it shows their docstrings."""
    shown = []
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] != "code" or "plot.source(" not in "".join(cell["source"]):
            continue
        for node in ast.walk(ast.parse("".join(cell["source"]))):
            if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("plot.source"):
                docstring = all(not (k.arg == "docstring" and ast.unparse(k.value) == "False") for k in node.keywords)
                shown += [(ast.unparse(arg), docstring) for arg in node.args]
    return shown


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_code_a_chapter_shows_is_public_fits_the_screen_and_shown_one_way(path):
    import xai_course as xc
    from xai_course import plot

    text = "".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
    assert "getsource" not in text, "show the package's code with xc.plot.source"
    modules = {name: getattr(xc, name) for name in xc.__all__} if hasattr(xc, "__all__") else {}
    namespace = {"xc": xc, **modules, **{m: getattr(xc, m) for m in dir(xc) if not m.startswith("_")}}
    for expression, docstring in _shown_sources(path):
        obj = eval(expression, namespace)  # noqa: S307 - a notebook's own expression, on the package
        assert "._" not in f"{obj.__module__}.{obj.__qualname__}", f"{expression} is private"
        source = inspect.getsource(obj)
        lines = (source if docstring else plot._without_docstrings(source)).splitlines()
        long = [line for line in lines if len(line) > plot.SOURCE_WIDTH]
        assert not long, f"{expression}: {len(long)} lines over {plot.SOURCE_WIDTH} characters: {long[0]!r}"
