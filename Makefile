# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test,export]"
	touch $(STAMP)

# two workers (pytest-xdist), each test file on one of them so module fixtures are made once
PARALLEL ?= -n 2 --dist loadfile

demo: $(STAMP)
	$(BIN)/genforge demo --out demo --overwrite

test: $(STAMP)
	bash tests/ensure_chromium.sh  # the browser test needs Debian's chromium: installed when missing
	bash tests/ensure_fluidsynth.sh  # music's audio test renders with Debian's fluidsynth and fluid-soundfont-gm
	bash tests/ensure_espeak.sh  # the built-in spoken-digits set is spoken by Debian's espeak-ng
	$(BIN)/python -m pytest -q $(PARALLEL)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q $(PARALLEL) -m "not slow"

clean:
	rm -rf $(VENV) demo runs .pytest_cache
