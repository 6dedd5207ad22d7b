# The course's two commands: `make lab` opens the notebooks, `make test` runs every test and notebook.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: lab test lint benchmark clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

# Two workers on two cores, one thread each: the notebooks' xc.core.set_threads(2) obeys OMP_NUM_THREADS.
test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadfile --nbval-lax --nbval-current-env --nbval-cell-timeout=300 tests notebooks

lint: $(STAMP)
	$(VENV)/bin/ruff check xai_course tests benchmarks

benchmark: $(STAMP)
	$(PY) benchmarks/notebooks.py

clean:
	rm -rf $(VENV)
