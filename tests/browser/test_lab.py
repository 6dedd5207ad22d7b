"""Chapter 00 in a real browser: JupyterLab on a free localhost port, driven by Debian's Chromium.

Run by ``make test-browser`` (``.ci/run`` installs Chromium when it is missing); screenshots go to
``build/screens/``. Opened, the notebook is not marked modified; Run All gives no error; the explorer renders,
and moving its image slider with the keyboard redraws the figure within a second.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from playwright import sync_api as playwright  # in the [dev] extra; the browser is Debian's, never downloaded

ROOT = Path(__file__).resolve().parents[2]
SCREENS = ROOT / "build" / "screens"
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
NOTEBOOK = "notebooks/00_introduction.ipynb"
ACTIVE = ".jp-NotebookPanel:not(.lm-mod-hidden)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab():
    port = _free_port()
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
               "--ServerApp.token=", "--ServerApp.password=", f"--ServerApp.root_dir={ROOT}",
               "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]  # fmt: skip
    if os.geteuid() == 0:
        command.append("--allow-root")
    SCREENS.mkdir(parents=True, exist_ok=True)
    log = open(SCREENS.parent / "lab.log", "w")  # closed after the server
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def page(lab):
    assert Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM}: apt-get install chromium (or set CHROMIUM)"
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{lab}/lab/workspaces/browser-check/tree/{NOTEBOOK}?reset")
        page.wait_for_selector(f"{ACTIVE} .jp-Notebook", timeout=90_000)
        page.get_by_text("| Idle").first.wait_for(timeout=90_000)  # the status bar: the kernel has started
        yield page
        browser.close()


def test_opened_notebook_is_not_marked_modified(page):
    page.screenshot(path=SCREENS / "lab-00-opened.png")
    assert page.locator(".lm-TabBar-tab.jp-mod-dirty").count() == 0


def test_run_all_gives_no_error_and_the_explorer_answers_the_keyboard(page):
    page.locator(f"{ACTIVE} .jp-Notebook").click(position={"x": 5, "y": 5})
    page.keyboard.press("Escape")
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_text("Run All Cells", exact=True).click()
    page.wait_for_function(  # every code cell has run: a number in each prompt, none waiting
        """() => { const p = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-InputPrompt')]
                   .map(e => e.textContent.trim()).filter(t => t !== '');
                   return p.length > 0 && p.every(t => /^\\[\\d+\\]:$/.test(t)); }""",
        timeout=240_000,
    )
    errors = page.locator(f"{ACTIVE} .jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    tracebacks = [t for t in errors.all_inner_texts() if "Traceback" in t or "Error" in t.split("\n")[0]]
    assert tracebacks == [], tracebacks[:1]
    explorer = page.locator(f"{ACTIVE} .widget-vbox").filter(has=page.locator(".widget-slider")).last
    explorer.scroll_into_view_if_needed()
    image = explorer.locator(".widget-output img").first
    image.wait_for(timeout=30_000)
    page.screenshot(path=SCREENS / "lab-00-explorer.png")
    explorer.evaluate("e => e.setAttribute('data-check', 'explorer')")
    readout = explorer.locator(".widget-readout").first
    assert readout.inner_text().strip() == "0"
    before = image.get_attribute("src")
    explorer.locator(".widget-slider .noUi-handle").first.focus()
    start = time.monotonic()
    page.keyboard.press("ArrowRight")
    page.wait_for_function(  # the output is redrawn: a new image element with another picture
        "old => { const img = document.querySelector('[data-check=explorer] .widget-output img');"
        " return img !== null && img.getAttribute('src') !== old; }",
        arg=before, timeout=5_000,
    )
    seconds = time.monotonic() - start
    page.screenshot(path=SCREENS / "lab-00-explorer-moved.png")
    assert readout.inner_text().strip() == "1"
    assert seconds < 1.0, f"the figure took {seconds:.2f} s to change"
