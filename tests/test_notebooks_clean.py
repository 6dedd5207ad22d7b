"""Committed notebooks carry no outputs, no execution counts and no widget state."""

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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_exercises_share_one_format(path):
    """Every exercise: a markdown statement, then its solution in cells tagged "solution" and folded in JupyterLab
    (markdown: source hidden; code: source and outputs hidden). Nothing else sits between two exercises."""
    cells = json.loads(path.read_text())["cells"]
    heading = [i for i, c in enumerate(cells) if re.match(r"## \d+\. Exercises", _text(c))]
    assert len(heading) == 1, "one '## N. Exercises' section"
    end = next(i for i in range(heading[0] + 1, len(cells)) if _text(cells[i]).startswith("## "))
    section = cells[heading[0] : end]
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
