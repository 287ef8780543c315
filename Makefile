# The two commands the README promises: `make demo` and `make test`.
# Everything they need is installed here, into .venv, on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: test test-unit lint up down demo clean

$(BIN)/fab: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

test: $(BIN)/fab
	$(BIN)/pytest -ra

test-unit: $(BIN)/fab
	$(BIN)/pytest -ra -m "not docker"

# ruff, configured in pyproject.toml: pyflakes, pycodestyle, isort and bugbear; tasks/ is also kept formatted.
lint: $(BIN)/fab
	$(BIN)/ruff check .
	$(BIN)/ruff format --check tasks fabfile.py

up: $(BIN)/fab
	$(BIN)/python docker/pair.py up

down: $(BIN)/fab
	$(BIN)/python docker/pair.py down

demo: $(BIN)/fab
	bash docker/setup-engine.sh
	$(BIN)/python docker/demo.py

clean: down
	rm -rf $(VENV) build logs
