# Fresh clone: `make demo` reconstructs the sample scene, `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SCENE ?= ../shared/datasets/eval/fountain-P11/images
DEMO_OUT ?= outputs/demo
DEMO_ARGS ?= --max-size 1024

.PHONY: install test demo clean

$(BIN)/msk: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/msk

test: install
	$(BIN)/python -m pytest -q

demo: install
	$(BIN)/msk run $(SCENE) --output $(DEMO_OUT) $(DEMO_ARGS)

clean:
	rm -rf $(VENV) outputs
