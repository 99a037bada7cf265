# Two entry points: `make book` renders the book, `make test` runs the tests.
# Both create .venv and install the project into it on first use.
#   make book PROFILE=smoke          a 10-minute book (CI size)
#   make book PROFILE=full           publication size (meant for a GPU)
#   make book BUILD_FLAGS=--dry-run  any further `python -m ecglib build` flags
PYTHON ?= python3
PROFILE ?= default
BUILD_FLAGS ?=
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: book test data clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,ray]"
	touch $(STAMP)

data: $(STAMP)
	$(PY) -m ecglib fetch all

book: data
	$(PY) -m ecglib build --profile $(PROFILE) $(BUILD_FLAGS)
	@echo "Open _build/html/index.html"

test: $(STAMP)
	$(PY) -m pytest

clean:
	rm -rf _build _executed
