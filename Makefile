# The course's commands: `make lab` opens the notebooks, `make test` runs every test and notebook; `make student`,
# `make slides` and `make site` build the student edition, the instructor's decks and the static site in build/.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: lab test test-browser executed student slides site lint benchmark clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,docs]"
	touch $(STAMP)

# The lab's file browser starts at the repository root (README, tests, benchmarks), with chapter 00 open in front.
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=. notebooks/00_introduction.ipynb $(if $(filter 0,$(shell id -u)),--allow-root)

NBVAL := --nbval-lax --nbval-current-env --nbval-cell-timeout=300
# Another CPU code path: PyTorch's kernels without AVX and oneDNN capped at SSE4.1. Float results differ in the
# last bits, as on another machine, so a chapter that compares floats bitwise across batch sizes fails here.
OTHER_CPU := ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41

# Two workers on two cores, one thread each: the notebooks' xc.core.set_threads(2) obeys OMP_NUM_THREADS.
# Then the notebooks once more on the other CPU code path (into build/executed/, see below), and the student
# edition, which must run without its solutions.
test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadfile $(NBVAL) --ignore=tests/browser tests notebooks
	$(MAKE) executed student
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadfile $(NBVAL) -p no:cacheprovider build/student

# Chapter 00 in JupyterLab, the slide decks and the site, driven by Debian's Chromium (apt-get install chromium);
# screenshots in build/screens/.
test-browser: site slides
	$(PY) -m pytest -p no:cacheprovider tests/browser

# Every chapter executed once, into build/executed/ with its widget state, for the site, the slides and the browser
# checks; a chapter runs again only when it, the package or the shipped data changed. It runs on the other CPU
# code path: with `make test`, this is the notebooks' second pass.
NOTEBOOKS := $(wildcard notebooks/*.ipynb)
EXECUTED := $(patsubst notebooks/%,build/executed/%,$(NOTEBOOKS))
PACKAGE := $(wildcard xai_course/*.py data/*)
EXECUTE := --ExecutePreprocessor.store_widget_state=True --ExecutePreprocessor.timeout=600

executed: $(STAMP)
	$(MAKE) -j2 $(EXECUTED)

# The student edition (build/student/): each exercise's solution replaced by an empty cell and a self-check.
student: $(STAMP)
	$(PY) tools/student.py notebooks build/student

build/executed/%.ipynb: notebooks/%.ipynb $(PACKAGE) | $(STAMP)
	OMP_NUM_THREADS=1 $(OTHER_CPU) $(VENV)/bin/jupyter nbconvert --to notebook --execute $(EXECUTE) \
		--log-level=WARN --output-dir build/executed $<

# The static site (build/site/index.html): the README as its index, one page per executed chapter, readable from
# the file system with no network (MathJax copied in).
site: executed
	$(PY) tools/site.py build/executed build/site

# The instructor's decks (build/slides/index.html): one reveal.js deck per executed chapter, with its figures and
# speaker notes (key S), readable from the file system with no network (reveal.js and MathJax copied in). The slide
# types come from the notebooks' metadata: `python tools/slide_metadata.py notebooks/*.ipynb` sets them.
slides: executed
	$(PY) tools/slides.py build/executed build/slides

lint: $(STAMP)
	$(VENV)/bin/ruff check xai_course tests benchmarks tools

benchmark: $(STAMP)
	$(PY) benchmarks/notebooks.py

clean:
	rm -rf $(VENV)
