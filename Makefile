# accel: two commands on a fresh machine (Python 3.11, gcc/g++, make, perl):
#   make demo   - set up .venv, then compile and run the bundled digits example
#   make test   - set up .venv, then run the whole test suite (unit tests + `make sim`)

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
# Tests run in parallel on the 2 cores; `make test JOBS=1` runs them serially.
JOBS   ?= 2

.PHONY: all venv test unit sim demo clean distclean

all: test

# torch first, from the CPU wheel (see ../shared/TOOLCHAIN.md): a bare `torch`
# requirement would pull a multi-GB CUDA build. Everything else is pinned by constraints.txt.
$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check torch==2.13.0
	$(PIP) install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $@

venv: $(STAMP)

unit: $(STAMP)
	$(PY) -m pytest -n $(JOBS) --ignore=tests/sim tests

sim: $(STAMP)
	$(PY) -m pytest -n $(JOBS) tests/sim

test: unit sim

demo: $(STAMP)
	$(PY) examples/demo.py

clean:
	rm -rf .cache build .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) *.egg-info
