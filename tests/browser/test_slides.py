"""The instructor's decks (``make slides``, ``build/slides/``) in a real browser: Debian's Chromium, from ``file://``.

Every deck loads with no console error and without a single request leaving the machine (every request is
recorded; anything but ``file:`` and ``data:`` fails); its title slide shows the chapter's title; the first slide
with a figure shows an ``<img>`` that loaded and fits the slide; the first slides with math show it typeset by
MathJax (no ``$`` left, no TeX error); every speaker note of the chapter is in the deck, and the speaker view
(key S) opens and shows the current slide's notes. Screenshots go to ``build/screens/slides_NN_*.png``.
Run by ``make test-browser``, which builds the decks first; without ``build/slides`` the tests fail and say so:
a deck that was not built is a failure of the build, not a reason to skip.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from playwright import sync_api as playwright  # in the [dev] extra; the browser is Debian's, never downloaded

ROOT = Path(__file__).resolve().parents[2]
SLIDES = ROOT / "build" / "slides"
EXECUTED = ROOT / "build" / "executed"
SCREENS = ROOT / "build" / "screens"
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHAPTERS = sorted(path.stem for path in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MATH_SLIDES = 3  # how many of the first slides with math are checked

# The first (sub)slide whose content matches a selector, as reveal.js indices; the first n of them.
FIRST_SLIDE = """selector => {
  for (const slide of Reveal.getSlides()) {
    if (slide.querySelector(selector)) { const i = Reveal.getIndices(slide); return [i.h, i.v || 0]; }
  }
  return null;
}"""
FIRST_SLIDES = """([selector, n]) => Reveal.getSlides().filter(slide => slide.querySelector(selector)).slice(0, n)
  .map(slide => { const i = Reveal.getIndices(slide); return [i.h, i.v || 0]; })"""
# The text of the current slide's markdown, without the TeX that MathJax keeps in <script> elements.
MARKDOWN_TEXT = """() => [...document.querySelectorAll('section.present .jp-RenderedMarkdown')].map(e => {
  const copy = e.cloneNode(true);
  copy.querySelectorAll('script').forEach(s => s.remove());
  return copy.textContent;
}).join(' ')"""


@pytest.fixture(scope="module")
def browser():
    if not (SLIDES / "index.html").exists():
        pytest.fail(f"{SLIDES.relative_to(ROOT)} is missing: run `make slides` first", pytrace=False)
    assert Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM}: apt-get install chromium (or set CHROMIUM)"
    SCREENS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


class Deck:
    """One deck opened in a fresh browser context, with every request and console error of its pages (popups too)."""

    def __init__(self, browser, name: str):
        self.path = SLIDES / name
        assert self.path.exists(), f"no deck {self.path.relative_to(ROOT)}: run `make slides`"
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.context = browser.new_context(viewport={"width": 1280, "height": 720})
        self.context.on("request", lambda request: self.requests.append(request.url))
        self.context.on("console", lambda msg: self.errors.append(msg.text) if msg.type == "error" else None)
        self.context.on("requestfailed", lambda request: self.errors.append(f"{request.url} failed"))
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.goto(self.path.as_uri(), wait_until="load")
        # tools/templates/slides marks the page when reveal.js is ready and when MathJax has typeset it
        self.page.wait_for_selector("html[data-reveal=ready]", state="attached", timeout=30_000)
        self.page.wait_for_selector("html[data-mathjax=done]", state="attached", timeout=30_000)

    def show(self, h: int, v: int) -> None:
        """Go to a slide and reveal all its fragments."""
        self.page.evaluate("([h, v]) => { Reveal.slide(h, v); while (Reveal.nextFragment()) {} }", [h, v])
        self.page.wait_for_function("([h, v]) => Reveal.getIndices().h === h && (Reveal.getIndices().v || 0) === v",
                                    arg=[h, v])  # fmt: skip
        self.page.evaluate("() => new Promise(done => MathJax.Hub.Queue(done))")  # the slide's math laid out again

    def check_offline_and_clean(self) -> None:
        remote = [url for url in self.requests if not url.startswith(("file:", "data:"))]
        assert remote == [], f"{self.path.name} asked the network for {remote}"
        assert self.errors == [], f"{self.path.name}: console errors {self.errors}"

    def close(self) -> None:
        self.context.close()


def _notes(chapter: str) -> int:
    """How many speaker notes the executed chapter holds."""
    cells = json.loads((EXECUTED / f"{chapter}.ipynb").read_text())["cells"]
    return sum(c.get("metadata", {}).get("slideshow", {}).get("slide_type") == "notes" for c in cells)


def test_index_lists_every_deck(browser):
    deck = Deck.__new__(Deck)  # the index is no deck: open it with the same recording, without waiting for reveal
    deck.path, deck.requests, deck.errors = SLIDES / "index.html", [], []
    deck.context = browser.new_context()
    deck.context.on("request", lambda request: deck.requests.append(request.url))
    deck.context.on("console", lambda msg: deck.errors.append(msg.text) if msg.type == "error" else None)
    deck.page = deck.context.new_page()
    deck.page.goto(deck.path.as_uri())
    hrefs = deck.page.eval_on_selector_all("a[href]", "links => links.map(a => a.getAttribute('href'))")
    assert hrefs == [f"{chapter}.slides.html" for chapter in CHAPTERS]
    assert all((SLIDES / href).is_file() for href in hrefs)
    deck.page.screenshot(path=SCREENS / "slides_index.png")
    deck.check_offline_and_clean()
    deck.close()


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_deck_offline_with_title_figures_math_and_notes(browser, chapter):
    number = chapter[:2]
    deck = Deck(browser, f"{chapter}.slides.html")
    page = deck.page
    try:
        title = page.locator("section.present h1").first
        assert title.is_visible() and title.inner_text().startswith(f"Chapter {number}"), "the title slide"
        page.screenshot(path=SCREENS / f"slides_{number}_title.png")

        figure = page.evaluate(FIRST_SLIDE, ".jp-OutputArea-output img")
        assert figure is not None, "no slide with a figure"
        deck.show(*figure)
        image = page.locator("section.present .jp-OutputArea-output img").first
        image.wait_for(state="visible")
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
        fits = image.evaluate(
            "img => { const s = img.closest('section'); "
            "return [img.offsetWidth, img.offsetHeight, s.clientWidth, s.clientHeight]; }"
        )
        assert fits[0] <= fits[2] and fits[1] <= fits[3], f"the figure ({fits[0]}x{fits[1]}) exceeds the slide"
        page.wait_for_timeout(300)  # the fragment's fade-in
        page.screenshot(path=SCREENS / f"slides_{number}_figure.png")

        with_math = page.evaluate(FIRST_SLIDES, ["script[type^='math/tex']", MATH_SLIDES])
        assert with_math, "no slide with math"
        for h, v in with_math:
            deck.show(h, v)
            text = page.evaluate(MARKDOWN_TEXT)
            assert "$" not in text, f"raw TeX left on slide {h}/{v}: {text[text.index('$') - 40 :][:100]!r}"
            assert page.locator("section.present .MathJax").count() > 0, f"no typeset math on slide {h}/{v}"
            assert page.locator("section.present .MathJax_Error, section.present merror").count() == 0
        deck.show(*with_math[0])
        page.screenshot(path=SCREENS / f"slides_{number}_math.png")

        assert page.locator("aside.notes").count() == _notes(chapter), "every speaker note is in the deck"
        deck.check_offline_and_clean()
    finally:
        deck.close()


def test_speaker_view_shows_the_notes(browser):
    deck = Deck(browser, f"{CHAPTERS[1]}.slides.html")
    try:
        section = deck.page.evaluate(FIRST_SLIDE, "aside.notes")
        deck.show(*section)
        expected = deck.page.locator("section.present aside.notes").first.inner_text().strip()
        with deck.page.expect_popup() as opened:
            deck.page.keyboard.press("s")
        speaker = opened.value
        speaker.set_viewport_size({"width": 1280, "height": 800})
        notes = speaker.locator(".speaker-controls-notes .value")
        notes.wait_for(state="visible", timeout=15_000)
        speaker.wait_for_function("e => e.innerText.trim().length > 0", arg=notes.element_handle())
        assert notes.inner_text().strip() == expected and expected.startswith("Speaker notes:")
        speaker.wait_for_timeout(500)  # the two previews finish loading their copies of the deck
        speaker.screenshot(path=SCREENS / "slides_speaker_view.png")
        deck.check_offline_and_clean()
    finally:
        deck.close()
