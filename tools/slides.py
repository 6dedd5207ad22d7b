"""The instructor's decks: ``python tools/slides.py build/executed build/slides`` (``make slides``).

One reveal.js deck per executed chapter (``NN_name.slides.html``) and ``index.html`` listing them. The decks open
from the file system and load nothing from the network: nbconvert's ``reveal`` template with the blocks that load
require.js, jQuery, mermaid and reveal.js from CDNs replaced (``tools/templates/slides/``); reveal.js 5 (with its
notes plugin: press S for the speaker view) and MathJax 2 are copied next to the decks.

What a deck shows follows each cell's ``slideshow.slide_type`` (set by ``tools/slide_metadata.py``); cells tagged
``solution`` or ``check`` are always skipped. Markdown cells are split at ``### `` headings and before **Learning
objectives.** and **References.**, and a piece taller than a slide between paragraphs, each piece a subslide. Code: a
cell whose output holds a figure shows the figure only, as does a cell of more than ``SHORT_CODE`` lines or one that
asserts; short demonstrations with text output show their code and its output. Widgets become the figure they
showed at their default setting (``offline.widget_figures``). In the decks, figures shrink and wide equations and
printed tables get a smaller font until they fit the slide; what still does not fit scrolls.
"""

from __future__ import annotations

import math
import re
import shutil
import sys
from pathlib import Path

import jinja2
import nbformat
from nbconvert import SlidesExporter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from offline import MATHJAX, copy_assets, folders, mathjax_dir, remove_stale, reveal_dir, widget_figures  # noqa: E402

TEMPLATES = Path(__file__).resolve().parent / "templates"
COURSE = "Explaining CNNs"
REVEAL = "reveal.js"  # the folder next to the decks
SHORT_CODE = 8  # code cells up to this many lines may show their code on the slides (shows_code)
ASSERT = re.compile(r"^\s*assert\b|assert_close\(", re.MULTILINE)
# Where a markdown cell is cut into several slides: a subsection, and the two long lists of every chapter.
SPLIT = re.compile(r"### |\*\*Learning objectives\.\*\*|\*\*References\.\*\*")
SKIPPED_TAGS = {"solution", "check"}
ROOM = 21  # lines of text (about 30 px each) on one slide of the 1280 x 720 deck
CHARS = 118  # characters in one line of text on a slide


def slide_type(cell: nbformat.NotebookNode) -> str:
    if SKIPPED_TAGS & set(cell.metadata.get("tags", [])):
        return "skip"
    return cell.metadata.get("slideshow", {}).get("slide_type", "-")


def text_lines(text: str, chars: int = CHARS) -> float:
    """The height of markdown text on a slide, in lines of about 30 px (a blank line counts 0.4)."""
    return sum(math.ceil(len(line) / chars) if line.strip() else 0.4 for line in text.splitlines())


def _paragraphs(text: str) -> list[str]:
    """``text`` cut at blank lines, except inside a code block or displayed math."""
    pieces, current, fenced = [], [], False
    for line in text.splitlines():
        if line.startswith("```") or line.strip() == "$$" or (line.count("$$") % 2 == 1):
            fenced = not fenced
        if not line.strip() and not fenced and current:
            pieces.append("\n".join(current))
            current = []
        elif line.strip() or current:
            current.append(line)
    return pieces + (["\n".join(current)] if current else [])


def _pack(text: str) -> list[str]:
    """``text`` as few pieces of whole paragraphs as fit on a slide each (a paragraph taller than a slide alone);
    a paragraph that ends with a colon starts the next piece rather than end one."""
    if text_lines(text) <= ROOM:
        return [text]
    packed = []  # lists of paragraphs
    for paragraph in _paragraphs(text):
        if packed and text_lines("\n\n".join(packed[-1] + [paragraph])) <= ROOM:
            packed[-1].append(paragraph)
        elif len(packed) and len(packed[-1]) > 1 and packed[-1][-1].rstrip().endswith(":"):
            packed.append([packed[-1].pop(), paragraph])  # an introduction moves on with what it introduces
        else:
            packed.append([paragraph])
    return ["\n\n".join(paragraphs) for paragraphs in packed]


def split_markdown(source: str) -> list[tuple[str, str | None]]:
    """A markdown cell's source cut into (text, slide type of the piece) for the slides; None keeps the cell's own.

    A piece starts at a ``### `` heading, at **Learning objectives.** and at **References.** (never inside a code
    block, never at the cell's first line); a piece taller than a slide (``ROOM`` lines) is cut further between
    paragraphs. Every piece after the first is a subslide.
    """
    pieces, fenced = [[]], False
    for line in source.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and SPLIT.match(line) and any(text.strip() for text in pieces[-1]):
            pieces.append([])
        pieces[-1].append(line)
    texts = [packed for lines in pieces for packed in _pack("\n".join(lines).strip("\n"))]
    return [(text, None if i == 0 else "subslide") for i, text in enumerate(texts)]


def has_figure(cell: nbformat.NotebookNode) -> bool:
    return any("image/png" in out.get("data", {}) or "image/svg+xml" in out.get("data", {}) for out in cell.outputs)


def shows_code(source: str, figure: bool) -> bool:
    """Whether the slides show a code cell's code: a short demonstration with text output. A figure is the point of
    its cell, and a long cell or one that asserts (a measurement checked) shows its results only."""
    return not figure and len(source.splitlines()) <= SHORT_CODE and not ASSERT.search(source)


def show_input(cell: nbformat.NotebookNode) -> bool:
    return shows_code(cell.source, has_figure(cell))


def prepare(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """An executed chapter made ready for its deck: skipped cells dropped, markdown split, long code hidden."""
    nb = widget_figures(nb)
    cells = []
    first_piece = -1  # where the last cell shown begins: its notes go right after its first piece
    for cell in nb.cells:
        kind = slide_type(cell)
        if kind == "skip":
            continue
        if kind == "notes":
            cells.insert(first_piece + 1, cell)
            first_piece += 1  # several notes keep their order
            continue
        first_piece = len(cells)
        if cell.cell_type == "markdown":
            for text, piece_type in split_markdown(cell.source):
                piece = nbformat.v4.new_markdown_cell(text, metadata=dict(cell.metadata))
                piece.metadata["slideshow"] = {"slide_type": piece_type or kind}
                cells.append(piece)
            continue
        if cell.cell_type == "code" and not show_input(cell):
            cell.metadata["transient"] = {"remove_source": True}
        cells.append(cell)
    for cell in cells:
        cell.pop("id", None)  # the pieces of a split cell would share one id
    nb.cells = cells
    nb.nbformat_minor = 4
    return nb


def chapter_title(nb: nbformat.NotebookNode, fallback: str) -> str:
    """The chapter's level-1 heading ("Chapter 01 · Layer-wise Relevance Propagation")."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return fallback


def exporter() -> SlidesExporter:
    return SlidesExporter(
        template_name="slides",
        extra_template_basedirs=[str(TEMPLATES)],
        extra_template_paths=[str(TEMPLATES)],  # for the shared include offline_mathjax.html.j2
        reveal_url_prefix=REVEAL,
        reveal_theme="white",  # "simple", nbconvert's default, loads its fonts from Google
        reveal_transition="none",
        reveal_number="c/t",
        reveal_width="1280",
        reveal_height="720",
        mathjax_url=MATHJAX,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )


def build(source: Path, target: Path) -> list[Path]:
    """Write a deck per executed notebook in ``source`` and an index to ``target``; return the files written."""
    paths = sorted(source.glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise SystemExit(f"no executed chapters in {source}: run `make executed` first")
    target.mkdir(parents=True, exist_ok=True)
    slides = exporter()
    decks, written = [], []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        title = chapter_title(nb, path.stem)
        nb = prepare(nb)
        nb.metadata["title"] = f"{title} · {COURSE}"
        body, _ = slides.from_notebook_node(nb)
        deck = target / f"{path.stem}.slides.html"
        deck.write_text(body, encoding="utf-8")
        written.append(deck)
        count = sum(slide_type(c) in {"slide", "subslide"} for c in nb.cells)
        decks.append({"href": deck.name, "title": title, "slides": count})

    index = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
    html = index.get_template("slides_index.html.j2").render(course=COURSE, decks=decks)
    written.append(target / "index.html")
    written[-1].write_text(html, encoding="utf-8")

    remove_stale(target, written)
    copy_assets(reveal_dir(), target / REVEAL)
    copy_assets(mathjax_dir(), target / "mathjax")
    for unused in ("css", "plugin/markdown", "plugin/highlight", "plugin/math", "plugin/search", "plugin/zoom"):
        shutil.rmtree(target / REVEAL / unused, ignore_errors=True)  # sources and plugins the decks never load
    return written


def main() -> None:
    source, target = folders(__doc__.splitlines()[0], "the decks' folder (build/slides)")
    files = build(source, target)
    print(f"{len(files) - 1} decks in {target}/ (open {target / 'index.html'}; press S for speaker notes)")


if __name__ == "__main__":
    main()
