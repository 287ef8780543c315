# The two commands the README promises: `make demo` and `make test`.
# Everything they need is installed here, into .venv, on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: test test-unit up down demo clean

$(BIN)/fab: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

test: $(BIN)/fab
	$(BIN)/pytest -ra

test-unit: $(BIN)/fab
	$(BIN)/pytest -ra -m "not docker"

up: $(BIN)/fab
	$(BIN)/python docker/pair.py up

down: $(BIN)/fab
	$(BIN)/python docker/pair.py down

demo: $(BIN)/fab
	bash docker/setup-engine.sh
	$(BIN)/python docker/demo.py

clean: down
	rm -rf $(VENV) build logs
