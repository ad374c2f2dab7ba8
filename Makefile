# The two commands a newcomer needs: `make demo` and `make test`.
# Both create ./.venv and install optix into it the first time.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

$(BIN)/activate: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,examples]'
	touch $(BIN)/activate

.PHONY: demo test test-all docs bench bench-quick
demo: $(BIN)/activate
	$(BIN)/python examples/compare_optimizers.py --out out/compare_optimizers.png

test: $(BIN)/activate
	$(BIN)/python -m pytest -n 2 -q tests

# Everything, including the `slow` cells and load tests; the reliability matrix table goes to
# out/matrix.md as well as the end of the output.
test-all: $(BIN)/activate
	OPTIX_MATRIX_OUT=out/matrix.md $(BIN)/python -m pytest -n 2 -q -m "slow or not slow" tests

# The optimizer suite (benchmarks/suite.py): every optimizer tuned with the same trials on each
# workload, time to tuned AdamW's loss, performance profiles; runs resume from out/bench*.
bench: $(BIN)/activate
	$(BIN)/python -m benchmarks.suite --out out/bench

bench-quick: $(BIN)/activate
	$(BIN)/python -m benchmarks.suite --quick --out out/bench-quick

docs: $(BIN)/activate
	$(BIN)/python -m sphinx -W --keep-going -q -b html docs docs/_build/html
	@echo "open docs/_build/html/index.html"
