"""The course as a static site: ``python tools/site.py build/executed build/site`` (``make site``).

One page per executed chapter, with every figure and output, and ``index.html`` made from the README (the
course's introduction, its chapter table with links to the pages, and its tables of measurements). Every page has
a title, links to the previous and next chapter and back to the index. The pages open from the file system and
load nothing from the network: nbconvert's ``lab`` template, with the blocks that would load require.js, MathJax,
mermaid or the widget manager from a CDN replaced (``tools/templates/site/``), and MathJax 2 copied next to the
pages. Widgets become the figure they showed at their default setting (``offline.widget_figures``); solution
cells are folded, as in JupyterLab, and so are the speaker notes written for the slides.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from offline import MATHJAX, copy_assets, folders, mathjax_dir, remove_stale, widget_figures  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = Path(__file__).resolve().parent / "templates"
COURSE = "Explaining CNNs"
PREFACE = """\
*This is the course executed once, with every figure and output, for reading in a browser. The explorers
(widgets) show their figure at the default setting; to move their controls and run the code, clone the
repository and open the course with `make lab`. Names such as `tests/…`, `benchmarks/…` or `xai_course/…` are
files of the repository.*

**Start reading: [{first}]({href})**
"""
FENCE = re.compile(r"(^```.*?^```)", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)")
UNFOLD = re.compile(r"\A\*\*Solution\*\*\s*\(click to unfold\)\s*")
NOTES = re.compile(r"\A\*Speaker notes:\*\s*")


def _link_target(target: str, chapters: set[str]) -> str | None:
    """The page a course link points to, or None for a file of the repository (no page on the site)."""
    path, _, anchor = target.partition("#")
    stem = Path(path).name.removesuffix(".ipynb")
    if path.endswith(".ipynb") and stem in chapters:
        return f"{stem}.html" + (f"#{anchor}" if anchor else "")
    return None


def rewrite_links(markdown: str, chapters: set[str]) -> str:
    """Course links made to work on the site; code blocks untouched.

    ``[text](notebooks/NN_x.ipynb)`` becomes a link to ``NN_x.html``; a code span that names a chapter
    (`` `NN_x` `` or `` `notebooks/NN_x.ipynb` ``, as in the README's tables) becomes a link to its page; a link
    to any other relative path (``tests/``, ``benchmarks/``...) becomes plain text naming the repository file.
    """

    def link(match: re.Match) -> str:
        text, target = match.groups()
        if re.match(r"[a-z][a-z0-9+.-]*:|#", target):  # http:, mailto:, an anchor on the page
            return match.group(0)
        page = _link_target(target, chapters)
        if page is not None:
            return f"[{text}]({page})"
        return text if text.strip("`") == target else f"{text} (repository file `{target}`)"

    def code(match: re.Match) -> str:
        stem = match.group(2)
        return f"[{match.group(0)}]({stem}.html)" if stem in chapters else match.group(0)

    parts = FENCE.split(markdown)
    for i in range(0, len(parts), 2):  # the odd parts are fenced code blocks
        text = LINK.sub(link, parts[i])
        parts[i] = re.sub(r"(?<!\[)`(notebooks/)?(\d\d_\w+?)(?:\.ipynb)?`(?!\])", code, text)
    return "".join(parts)


def chapter_title(nb: nbformat.NotebookNode, fallback: str) -> str:
    """The chapter's first level-1 heading ("Chapter 01 · Layer-wise Relevance Propagation")."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return fallback


def short_title(title: str) -> str:
    """A title for the navigation links: up to the subtitle ("Chapter 04 · Inversion")."""
    return title.split(":")[0].strip()


def prepare(nb: nbformat.NotebookNode, chapters: set[str]) -> nbformat.NotebookNode:
    """An executed chapter made ready for a static page: figures for widgets, links for the site."""
    nb = widget_figures(nb)
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        cell.source = rewrite_links(cell.source, chapters)
        if "solution" in cell.metadata.get("tags", []):  # the fold's summary already says it
            cell.source = UNFOLD.sub("", cell.source)
        if cell.metadata.get("slideshow", {}).get("slide_type") == "notes":
            cell.source = NOTES.sub("", cell.source)
    return nb


def exporter() -> HTMLExporter:
    return HTMLExporter(
        template_name="site",
        extra_template_basedirs=[str(TEMPLATES)],
        extra_template_paths=[str(TEMPLATES)],  # offline_mathjax.html.j2, shared with the slides
        mathjax_url=MATHJAX,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )


def _page(title: str, stem: str) -> dict:
    return {"href": f"{stem}.html", "title": title}


def build(source: Path, target: Path) -> list[Path]:
    """Write the site of the executed notebooks in ``source`` to ``target``; return the pages written."""
    paths = sorted(source.glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise SystemExit(f"no executed chapters in {source}: run `make executed` first")
    target.mkdir(parents=True, exist_ok=True)
    chapters = {path.stem for path in paths}
    notebooks = [nbformat.read(path, as_version=4) for path in paths]
    titles = [chapter_title(nb, path.stem) for nb, path in zip(notebooks, paths)]
    index = {"href": "index.html", "title": f"{COURSE}: all chapters"}
    html = exporter()
    written = []
    for i, (path, nb, title) in enumerate(zip(paths, notebooks, titles)):
        nb = prepare(nb, chapters)
        nb.metadata["title"] = f"{title} · {COURSE}"
        course = {
            "prev": _page(f"{short_title(titles[i - 1])}", paths[i - 1].stem) if i > 0 else None,
            "next": _page(f"{short_title(titles[i + 1])}", paths[i + 1].stem) if i + 1 < len(paths) else None,
            "index": index,
        }
        body, _ = html.from_notebook_node(nb, resources={"course": course})
        written.append(target / f"{path.stem}.html")
        written[-1].write_text(body, encoding="utf-8")

    readme = rewrite_links((ROOT / "README.md").read_text(encoding="utf-8"), chapters)
    heading, _, rest = readme.partition("\n")  # the preface goes under the README's title
    preface = PREFACE.format(first=short_title(titles[0]), href=f"{paths[0].stem}.html")
    front = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_markdown_cell(f"{heading}\n\n{preface}\n{rest}")],
        metadata={"title": f"{COURSE}: a course on explaining convolutional neural networks"},
    )
    course = {"prev": None, "index": None, "next": _page(short_title(titles[0]), paths[0].stem)}
    body, _ = html.from_notebook_node(front, resources={"course": course})
    written.append(target / "index.html")
    written[-1].write_text(body, encoding="utf-8")

    remove_stale(target, written)
    copy_assets(mathjax_dir(), target / "mathjax")
    return written


def main() -> None:
    source, target = folders(__doc__.splitlines()[0], "the site's folder (build/site)")
    pages = build(source, target)
    print(f"{len(pages)} pages in {target}/ (open {target / 'index.html'})")


if __name__ == "__main__":
    main()
