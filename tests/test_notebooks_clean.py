"""Committed notebooks carry no outputs, no execution counts and no widget state."""

import json
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
