# The course's two commands: `make lab` opens the notebooks, `make test` runs every test and notebook.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: lab test test-browser lint benchmark clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The lab's file browser starts at the repository root (README, tests, benchmarks), with chapter 00 open in front.
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=. notebooks/00_introduction.ipynb $(if $(filter 0,$(shell id -u)),--allow-root)

NBVAL := --nbval-lax --nbval-current-env --nbval-cell-timeout=300
# Another CPU code path: PyTorch's kernels without AVX and oneDNN capped at SSE4.1. Float results differ in the
# last bits, as on another machine, so a chapter that compares floats bitwise across batch sizes fails here.
OTHER_CPU := ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41

# Two workers on two cores, one thread each: the notebooks' xc.core.set_threads(2) obeys OMP_NUM_THREADS.
# Then the notebooks once more on the other CPU code path.
test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadfile $(NBVAL) --ignore=tests/browser tests notebooks
	OMP_NUM_THREADS=1 $(OTHER_CPU) $(PY) -m pytest -n 2 --dist loadfile $(NBVAL) -p no:cacheprovider notebooks

# Chapter 00 in JupyterLab, driven by Debian's Chromium (apt-get install chromium); screenshots in build/screens/.
test-browser: $(STAMP)
	$(PY) -m pytest -p no:cacheprovider tests/browser

lint: $(STAMP)
	$(VENV)/bin/ruff check xai_course tests benchmarks

benchmark: $(STAMP)
	$(PY) benchmarks/notebooks.py

clean:
	rm -rf $(VENV)
