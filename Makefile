# Every target bootstraps .venv first; on a fresh clone `make test` and `make book` need nothing else.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= ci

.PHONY: test book check-book chromium lab bench data lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

test: $(STAMP) chromium
	$(PY) -m ruff check .
	$(PY) -m pytest -q

book: $(STAMP)
	$(PY) -m analysis_lib reproduce --profile $(PROFILE)

# Every page of the built book in headless Chromium (see analysis_lib/book/browser.py);
# screenshots in _build/screenshots/.
check-book: $(STAMP) chromium
	$(PY) -m analysis_lib check-book

# Debian's Chromium for the browser tests, installed where missing (as root, with apt-get);
# elsewhere install it yourself, or those tests are skipped.
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	  >/dev/null; } || echo "no Chromium here and no apt-get as root: browser tests skipped"

# JupyterLab on the text notebooks (jupytext opens each .md as a notebook: Open With >
# Notebook); each runs top to bottom on the ci profile, or set `profile` in its first cell.
# LAB_ARGS passes options through, e.g. LAB_ARGS="--no-browser --port 8890" on a remote host.
LAB_ARGS ?=
lab: $(STAMP)
	$(PY) -m pip install --quiet -e ".[lab]"
	$(VENV)/bin/jupyter lab --notebook-dir=book/notebooks $(LAB_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/simulator.py
	$(PY) benchmarks/sparse_ops.py

data: $(STAMP)
	$(PY) -m analysis_lib data make --profile $(PROFILE)

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf _build book/executed book/_build
