# Every target sets up what it needs: a fresh clone only needs python3 (3.11+), java 17 and mvn.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: demo test lint system-deps clean

demo: $(VENV)/.installed
	$(BIN)/xdrec demo

test: $(VENV)/.installed system-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

system-deps:
	bash deploy/install-system-deps.sh

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c requirements.lock -e ".[dev]"
	touch $@

clean:
	rm -rf $(VENV) .xdrec
