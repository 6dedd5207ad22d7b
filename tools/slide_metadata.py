"""Set every cell's ``slideshow.slide_type``: ``python tools/slide_metadata.py notebooks/*.ipynb``.

The rules, in order (the first that applies):

* cells tagged ``solution`` or ``check``, code cells without output (set-up, definitions), the closing run-time cell,
  and ``inspect.getsource`` listings taller than ``LONG_LISTING`` lines, with the sentence introducing them: ``skip``;
* markdown cells starting with *Speaker notes:* (written by hand, one per section): ``notes``;
* the title cell and every ``## `` section: ``slide``; every ``### `` subsection: ``subslide``;
* the rest is laid out on slides of ``ROOM`` lines (of about 30 px, on the 1280 x 720 deck): a cell stays on the
  current slide (``-``) while it fits; a figure that follows its explanation builds on the same slide as a
  ``fragment`` (one click later); what does not fit, and text that follows a figure, starts a ``subslide``. Text
  that ends with a colon moves on together with the cell it introduces, and a slide that holds only a heading or a
  line (``FEW`` lines) keeps the next cell even when it then scrolls.

Sizes come from the executed notebook in ``build/executed/`` (matched by cell id) when there is one, else from the
source. Only ``metadata.slideshow`` changes; run it under the notebooks' lock when others edit them. A slide that
still comes out too tall scrolls (tools/templates/slides/).
"""

from __future__ import annotations

import argparse
import base64
import struct
import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from offline import widget_figures  # noqa: E402
from slides import ROOM, SKIPPED_TAGS, shows_code, split_markdown, text_lines  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTES = "*Speaker notes:*"
FEW = 6  # a slide holding no more than this keeps the next cell, even if the slide then scrolls
CODE_LINE = 0.7  # a line of code or printed output, in lines of text
FIGURE_MAX = 560 / 30  # the tallest figure, in lines (the decks' CSS caps images at 560 px)
LONG_LISTING = 22  # lines of text (about 31 of code): a longer inspect.getsource listing is skipped


def _png_lines(data: str) -> float:
    """The height of a PNG on the slide, in lines: scaled to the slide's width and capped."""
    raw = base64.b64decode(data)
    width, height = struct.unpack(">II", raw[16:24])
    shown = height * min(1.0, 1200 / width)
    return min(shown, FIGURE_MAX * 30) / 30 + 0.5


def _outputs(cell: nbformat.NotebookNode) -> tuple[float, float]:
    """(lines of text output, lines of figures) of an executed code cell."""
    text = figures = 0.0
    for out in cell.get("outputs", []):
        data = out.get("data", {})
        if out.get("output_type") == "stream":
            text += text_lines(out.get("text", ""), 130)
        elif "image/png" in data:
            figures += _png_lines(data["image/png"])
        elif "text/html" in data:
            text += 1
        elif "text/plain" in data:
            text += text_lines(data["text/plain"], 130)
    return text, figures


def _guess_outputs(source: str) -> tuple[float, float]:
    """(text, figure) lines of a cell that was not executed, guessed from its source."""
    figure = any(k in source for k in ("plt.", "xc.plot.", "fig =", "plot_tree(", "explorer("))
    return float(source.count("print(")), (12.0 if figure else 0.0)


def _executed(path: Path) -> dict:
    done = ROOT / "build" / "executed" / path.name
    if not done.exists():
        return {}
    return {cell.get("id"): cell for cell in widget_figures(nbformat.read(done, as_version=4)).cells}


def _measure(cell: nbformat.NotebookNode, index: int, executed: dict) -> tuple[str, list[float], float]:
    """(what the cell is, the heights of its pieces on the slides, in lines, and the lines of its figures)."""
    source = cell.source
    if SKIPPED_TAGS & set(cell.metadata.get("tags", [])):
        return "skip", [0.0], 0.0
    if cell.cell_type == "markdown":
        if source.startswith(NOTES):
            return "notes", [0.0], 0.0
        heights = [text_lines(text) + 0.5 for text, _ in split_markdown(source)]
        if index == 0 or source.startswith("## "):
            return "slide", heights, 0.0
        return ("subslide" if source.startswith("### ") else "text"), heights, 0.0
    done = executed.get(cell.get("id"))
    text, figures = _outputs(done) if done is not None else _guess_outputs(source)
    listing = "inspect.getsource" in source
    if (not text and not figures) or "start_time" in source or (listing and text * CODE_LINE > LONG_LISTING):
        return "skip", [0.0], 0.0
    lines = len(source.splitlines())
    code = lines * CODE_LINE + 0.5 if shows_code(source, bool(figures)) else 0.0
    return "code", [code + text * CODE_LINE + figures], figures


def slide_types(nb: nbformat.NotebookNode, executed: dict) -> list[str]:
    """The slide type of every cell of ``nb`` by the rules of the module's docstring."""
    measured = [_measure(cell, index, executed) for index, cell in enumerate(nb.cells)]
    shown = [i for i, (what, _, _) in enumerate(measured) if what not in ("skip", "notes")]
    follower = {i: j for i, j in zip(shown, shown[1:])}  # the next cell that shows on the slides
    types = []
    load, figure_shown = 0.0, False  # the current (sub)slide: its estimated height, and whether it holds a figure
    for index, (what, heights, figures) in enumerate(measured):
        following = next((j for j in range(index + 1, len(nb.cells)) if measured[j][0] != "notes"), None)
        if (
            what == "text"
            and following is not None
            and measured[following][0] == "skip"
            and "inspect.getsource" in nb.cells[following].source
            and nb.cells[index].source.rstrip().endswith(":")
        ):
            what = "skip"  # the introduction of a listing too long to show
        if what in ("skip", "notes", "slide", "subslide"):
            types.append(what)
            if what in ("slide", "subslide"):
                load, figure_shown = heights[-1], False
            continue
        height = heights[0]
        if what == "text":
            introduces = nb.cells[index].source.rstrip().endswith(":") and index in follower
            after = measured[follower[index]][1][0] if introduces else 0.0  # keep an introduction with its cell
            if load > FEW and (figure_shown or load + height + after > ROOM):
                kind = "subslide"
            else:
                kind = "-"
            load = (load if kind == "-" else 0.0) + height if len(heights) == 1 else heights[-1]
            figure_shown = figure_shown and kind == "-" and len(heights) == 1
            types.append(kind)
            continue
        if figures and not figure_shown and (load <= FEW or load + height <= ROOM + 3):
            kind = "fragment"  # the figure builds on the slide that explains it
        elif load > FEW and (figures or load + height > ROOM):
            kind = "subslide"
        else:
            kind = "-"
        types.append(kind)
        load = height if kind == "subslide" else load + height
        figure_shown = bool(figures) or (figure_shown and kind != "subslide")
    return types


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    args = parser.parse_args(argv)
    for path in args.notebooks:
        nb = nbformat.read(path, as_version=4)
        types = slide_types(nb, _executed(path))
        changed = 0
        for cell, kind in zip(nb.cells, types):
            if cell.metadata.get("slideshow", {}).get("slide_type") != kind:
                cell.metadata["slideshow"] = {"slide_type": kind}
                changed += 1
        if changed:
            nbformat.write(nb, path)
        counts = {kind: types.count(kind) for kind in ("slide", "subslide", "fragment", "-", "skip", "notes")}
        print(f"{path.name}: {changed} cells changed; " + ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
