# Fresh clone: `make demo` reconstructs the sample scene, `make test` runs the suite,
# `make weights` rebuilds the training set and retrains the shipped weights (msk/weights/).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATASETS ?= $(or $(MSK_DATASETS),../shared/datasets)
SCENE ?= $(DATASETS)/eval/fountain-P11/images
DEMO_OUT ?= outputs/demo
DEMO_ARGS ?= --max-size 1024

.PHONY: install test demo weights clean

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

# Each step is seeded and deterministic: the same weights on the same machine (MODEL_CARD.md).
weights: install
	$(BIN)/msk data build $(DATASETS)/train --output outputs/train.h5
	$(BIN)/msk train descriptor outputs/train.h5
	$(BIN)/msk train matcher outputs/train.h5 --scenes $(DATASETS)/train --plot docs/img/match_decision_pr.png
	$(BIN)/msk train detector outputs/train.h5 --scenes $(DATASETS)/train

clean:
	rm -rf $(VENV) outputs
