"""The static site (``make site``, ``build/site/``) in a real browser: Debian's Chromium, pages opened from ``file://``.

Every page (the index and one per chapter) loads with no console error and without a single request leaving the
machine (every request is recorded; anything but ``file:`` and ``data:`` fails); its links to other pages resolve
to files of the site. A chapter page shows every figure of its executed notebook (each ``<img>`` decoded, none
wider than the page), its math typeset by MathJax (no TeX delimiters left in the text, no TeX error), its
solutions and the code of its claim checks folded, and each widget replaced by its figure under a note.
Screenshots go to ``build/screens/site_*.png``.
Run by ``make test-browser``, which builds the site first; without ``build/site`` the tests fail and say so.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat
import pytest
from playwright import sync_api as playwright  # in the [dev] extra; the browser is Debian's, never downloaded

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "build" / "site"
EXECUTED = ROOT / "build" / "executed"
SCREENS = ROOT / "build" / "screens"
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHAPTERS = sorted(path.stem for path in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MIN_FIGURES = 3  # every chapter shows at least this many figures
IMAGES = ("image/png", "image/jpeg", "image/svg+xml")

_spec = importlib.util.spec_from_file_location("course_offline", ROOT / "tools" / "offline.py")
offline = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(offline)  # offline.widget_figures: what tools/site.py does to the executed notebooks


class Visit:
    """One page of the site in a browser context of its own, with every request and console error it caused."""

    def __init__(self, browser, name: str):
        self.path = SITE / f"{name}.html"
        assert self.path.exists(), f"no page {self.path.relative_to(ROOT)}: run `make site`"
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("requestfailed", lambda request: self.errors.append(f"{request.url} failed"))
        self.page.on("console", lambda message: self.errors.append(message.text) if message.type == "error" else None)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.goto(self.path.as_uri(), wait_until="commit")  # loads on while the previous page is checked

    def ready(self) -> Visit:
        self.page.wait_for_load_state("load")
        # tools/templates/site marks the page when MathJax has typeset it (its "End" startup hook)
        self.page.wait_for_selector("html[data-mathjax=done]", state="attached", timeout=30_000)
        return self

    def check_offline_and_clean(self) -> None:
        remote = [url for url in self.requests if not url.startswith(("file:", "data:"))]
        assert remote == [], f"{self.path.name} asked the network for {remote}"
        assert self.errors == [], f"{self.path.name}: console errors {self.errors}"

    def check_links(self) -> list[str]:
        """Every link to a local file resolves; returns the hrefs of the links to pages."""
        hrefs = self.page.eval_on_selector_all("a[href]", "links => links.map(a => a.getAttribute('href'))")
        local = [href for href in hrefs if not href.startswith(("#", "http:", "https:", "mailto:"))]
        for href in local:
            target = self.path.parent / unquote(urlsplit(href).path)
            assert target.is_file(), f"{self.path.name} links to {href}, which is not in the site"
        return local

    def close(self) -> None:
        self.context.close()


class Site:
    """Opens the pages in order, each one while the one before is checked (MathJax takes seconds on a chapter)."""

    def __init__(self, browser):
        self.browser = browser
        self.loading: dict[str, Visit] = {}

    def visit(self, name: str) -> Visit:
        visit = self.loading.pop(name, None) or Visit(self.browser, name)
        pages = ["index", *CHAPTERS]
        after = pages[pages.index(name) + 1] if pages.index(name) + 1 < len(pages) else None
        if after is not None and after not in self.loading and (SITE / f"{after}.html").exists():
            self.loading[after] = Visit(self.browser, after)
        return visit.ready()

    def close(self) -> None:
        for visit in self.loading.values():
            visit.close()


@pytest.fixture(scope="module")
def site():
    if not (SITE / "index.html").exists():
        pytest.fail(f"{SITE.relative_to(ROOT)} is missing: run `make site` first", pytrace=False)
    pages = {path.name: SITE / f"{path.stem}.html" for path in EXECUTED.glob("*.ipynb")}
    stale = [name for name, page in pages.items()
             if not page.exists() or (EXECUTED / name).stat().st_mtime > page.stat().st_mtime]  # fmt: skip
    if stale:
        pytest.fail(f"build/site is older than build/executed ({', '.join(stale)}): run `make site`", pytrace=False)
    assert Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM}: apt-get install chromium (or set CHROMIUM)"
    SCREENS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        site = Site(browser)
        yield site
        site.close()
        browser.close()


def _executed(chapter: str) -> nbformat.NotebookNode | None:
    path = EXECUTED / f"{chapter}.ipynb"
    return offline.widget_figures(nbformat.read(path, as_version=4)) if path.exists() else None


def test_index(site):
    visit = site.visit("index")
    try:
        visit.page.screenshot(path=SCREENS / "site_index.png")
        visit.check_offline_and_clean()
        assert visit.page.title().startswith("Explaining CNNs")
        linked = {href.removesuffix(".html") for href in visit.check_links()}
        assert set(CHAPTERS) <= linked, f"the index does not link to {sorted(set(CHAPTERS) - linked)}"
        tables = visit.page.locator(".jp-MarkdownOutput table").count()
        assert tables >= 4, f"the README's tables are missing from the index ({tables} tables)"
        assert "$$" not in visit.page.locator("main").inner_text()
    finally:
        visit.close()


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter(site, chapter):
    visit = site.visit(chapter)
    page = visit.page
    short = chapter[:2]
    try:
        page.screenshot(path=SCREENS / f"site_{short}_top.png")
        visit.check_offline_and_clean()
        assert page.title().startswith(f"Chapter {short}"), page.title()

        # navigation: the index, the neighbours, in this order; all of them files of the site
        i = CHAPTERS.index(chapter)
        nav = page.locator("nav.course-top")
        expected = {"prev": CHAPTERS[i - 1] if i > 0 else None, "index": "index",
                    "next": CHAPTERS[i + 1] if i + 1 < len(CHAPTERS) else None}  # fmt: skip
        for rel, target in expected.items():
            link = nav.locator(f"a[rel={rel}]")
            assert link.count() == (target is not None), f"{chapter}: {rel} link"
            if target is not None:
                assert link.get_attribute("href") == f"{target}.html"
        visit.check_links()

        # figures: every one decoded and scaled to the page, as many as the executed notebook has
        images = page.eval_on_selector_all("main img", "imgs => imgs.map(i => i.complete && i.naturalWidth > 0)")
        assert all(images), f"{chapter}: an image did not load"
        nb = _executed(chapter)
        figures = MIN_FIGURES
        if nb is not None:
            outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
            figures = max(figures, sum(any(kind in o.get("data", {}) for kind in IMAGES) for o in outputs))
        assert len(images) >= figures, f"{chapter}: {len(images)} images on the page, {figures} expected"
        main_width = page.eval_on_selector("main", "m => m.getBoundingClientRect().width")
        widths = page.eval_on_selector_all("main img", "imgs => imgs.map(i => i.getBoundingClientRect().width)")
        assert max(widths) <= main_width + 1, f"{chapter}: an image is wider than the page"
        figure = page.locator(".jp-OutputArea-output img").nth(min(2, len(images) - 1))
        figure.scroll_into_view_if_needed()
        figure.screenshot(path=SCREENS / f"site_{short}_figure.png")

        # math: typeset, with nothing left in TeX delimiters or in error
        prose = page.eval_on_selector_all(  # the markdown's text, folded cells included, less code and typeset math
            ".jp-MarkdownOutput",
            "cells => cells.map(c => { const k = c.cloneNode(true); k.querySelectorAll('code, pre, script, .MathJax,"
            " .MathJax_Display, .MathJax_Preview, .MJX_Assistive_MathML').forEach(e => e.remove());"
            " return k.textContent; })",
        )
        raw = [m.group(0) for text in prose for m in re.finditer(r"\$\$|\$[^$\n]+\$|\\\(|\\\[", text)]
        assert raw == [], f"{chapter}: math left untypeset: {raw[:3]}"
        assert page.locator(".MathJax, .MathJax_Display").count() > 0, f"{chapter}: no math typeset"
        assert page.locator(".MathJax .merror, .MathJax .noError").count() == 0, f"{chapter}: a TeX error"

        # widgets: each one's figure, under the note that it is interactive in JupyterLab
        notes = page.locator(".jp-OutputArea:has(.course-widget-note)")
        if nb is not None and any("course-widget-note" in str(o.get("data", {})) for o in outputs):
            assert notes.count() > 0, f"{chapter}: the widgets' notes are missing"
        if notes.count():
            area = notes.first
            shown = area.evaluate(  # what follows the note: the figure (or the text) the explorer showed
                "a => { const note = a.querySelector('.course-widget-note').closest('.jp-OutputArea-child');"
                " const next = note.nextElementSibling; return next ? next.innerText.trim().length"
                " + next.querySelectorAll('img').length : 0; }"
            )
            assert shown > 0, f"{chapter}: a widget note with nothing under it"
            area.scroll_into_view_if_needed()
            area.screenshot(path=SCREENS / f"site_{short}_widget.png")

        # solutions: folded (nothing of them visible), and they open
        folds = page.locator("details.course-solution")
        solutions = 0 if nb is None else sum("solution" in c.metadata.get("tags", []) for c in nb.cells)
        assert (folds.count() > 0) == (solutions > 0) or nb is None, f"{chapter}: solutions not folded"
        if folds.count():
            assert page.locator("details.course-solution[open]").count() == 0
            assert not folds.first.locator(".jp-Cell").first.is_visible()
            folds.first.locator("summary").click()
            assert folds.first.locator(".jp-Cell").first.is_visible()
            folds.first.scroll_into_view_if_needed()
            folds.first.screenshot(path=SCREENS / f"site_{short}_solution.png")
        # claim checks: their code folded, their result shown
        code = [] if nb is None else [cell for cell in nb.cells if cell.cell_type == "code"]
        checks = sum("check" in cell.metadata.get("tags", []) for cell in code)
        if checks:
            assert page.locator("details.course-check").count() == checks, f"{chapter}: claim checks not folded"
            assert page.locator("details.course-check[open]").count() == 0
        visit.check_offline_and_clean()  # nothing fetched or failed while scrolling and unfolding
    finally:
        visit.close()
