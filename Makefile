# The quick start: `make demo` trains on the embedded corpus, `make test` runs the tests.
# Both create the virtual environment and install the project on first use.
VENV ?= .venv
PYTHON ?= python3

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test,serve,bench]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/charzoo train arch1 --data builtin --max-time 150 --run-dir runs/quickstart

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadfile --durations=15

.PHONY: install demo test
