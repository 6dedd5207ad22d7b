"""What the site and the slides share: executed notebooks made readable without a kernel, and local assets.

A widget needs a running kernel. In an executed notebook (``build/executed/``, run with the widget state
stored) each explorer's Output widget still holds the figure it drew at its default setting: ``widget_figures``
puts that figure in place of the widget, under a note saying the explorer is interactive in JupyterLab, and
drops progress bars (widgets with no figure). The JavaScript the pages need (reveal.js, MathJax) comes from
packages of the ``[docs]`` extra, never from a CDN.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import nbformat

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
MATHJAX = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"  # the one config jupyter-server-mathjax ships
NOTE = (
    "<p class='course-widget-note'><em>Interactive in JupyterLab: move the controls there. "
    "Here, what it shows at its default setting.</em></p>"
)


def _widget_state(nb: nbformat.NotebookNode) -> dict:
    """The stored state of every widget model, by model id (empty when none was stored)."""
    return nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})


def _captured(model_id: str, state: dict) -> list:
    """The outputs captured by the Output widgets in the tree of widget ``model_id``, in display order."""
    model = state.get(model_id)
    if model is None:
        return []
    if model["model_name"] == "OutputModel":
        return list(model["state"].get("outputs", []))
    children = model["state"].get("children", [])
    return [out for child in children for out in _captured(child.removeprefix("IPY_MODEL_"), state)]


def _replace(output: dict, state: dict) -> list:
    """The outputs that stand for one output of a cell: itself, or a widget's figures under the note."""
    if WIDGET_VIEW not in output.get("data", {}):
        return [output]
    figures = _captured(output["data"][WIDGET_VIEW]["model_id"], state)
    if not figures:
        return []  # a progress bar or a control without output
    note = nbformat.v4.new_output("display_data", data={"text/html": NOTE})
    return [note, *(nbformat.from_dict(figure) for figure in figures)]


def widget_figures(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of the executed notebook ``nb`` whose widgets are replaced by the figures they showed."""
    nb = nbformat.from_dict(nb)
    state = _widget_state(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [new for output in cell.outputs for new in _replace(output, state)]
    nb.metadata.pop("widgets", None)
    return nb


def _package_dir(module: str, *parts: str) -> Path:
    """A folder shipped inside an installed package of the ``[docs]`` extra."""
    try:
        package = __import__(module)
    except ImportError as error:
        raise SystemExit(f"{module} is missing: pip install -e '.[docs]' (make does it)") from error
    return Path(package.__file__).parent.joinpath(*parts)


def reveal_dir() -> Path:
    """reveal.js (dist/, plugin/), as shipped by sphinx-revealjs."""
    return _package_dir("sphinx_revealjs", "_static", "revealjs")


def mathjax_dir() -> Path:
    """MathJax 2 (MathJax.js, config/, jax/, fonts/), as shipped by jupyter-server-mathjax."""
    return _package_dir("jupyter_server_mathjax", "static")


def remove_stale(target: Path, written: list[Path]) -> None:
    """Delete the pages in ``target`` that this build did not write (a chapter renamed or removed)."""
    for stale in set(target.glob("*.html")) - set(written):
        stale.unlink()


def copy_assets(source: Path, target: Path) -> None:
    """Copy the folder ``source`` to ``target`` unless it is already there."""
    if not target.exists():
        shutil.copytree(source, target)


def folders(description: str, target: str) -> tuple[Path, Path]:
    """The two command-line arguments of a builder: the executed notebooks' folder and its output folder."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("source", type=Path, help="the executed notebooks (build/executed)")
    parser.add_argument("target", type=Path, help=target)
    args = parser.parse_args()
    return args.source, args.target
