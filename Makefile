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
	$(BIN)/python -m pytest -n 2 -q --durations=25 tests

# Everything, including the `slow` cells and load tests; the reliability matrix table goes to
# out/matrix.md as well as the end of the output.
test-all: $(BIN)/activate
	OPTIX_MATRIX_OUT=out/matrix.md $(BIN)/python -m pytest -n 2 -q -m "slow or not slow" tests

# The optimizer suite (benchmarks/suite.py): every optimizer tuned with the same trials (5) on
# each workload, time to tuned AdamW's loss, performance profiles; runs resume from out/bench6*.
bench: $(BIN)/activate
	$(BIN)/python -m benchmarks.suite --out out/bench6

bench-quick: $(BIN)/activate
	$(BIN)/python -m benchmarks.suite --quick --out out/bench6-quick

# The lowest declared versions (ci/lowest.txt) in a second venv, on the tests that exercise the
# dependencies' APIs (optax parity and wrappers, Flax NNX, chex, orbax checkpoints, the kernels built against the
# main venv's jaxlib, loaded by the lowest jaxlib). It imports the checkout's optix.
LOWEST       := .venv-lowest
LOWEST_TESTS ?= tests/test_parity.py tests/test_interop.py tests/test_fused.py tests/test_readme.py \
                tests/test_security.py tests/test_parallel.py::test_state_shardings_restore_checkpoint_sharded

$(LOWEST)/bin/activate: ci/lowest.txt
	$(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/pip install --quiet --upgrade pip
	$(LOWEST)/bin/pip install --quiet -r ci/lowest.txt pytest pytest-xdist hypothesis
	touch $(LOWEST)/bin/activate

.PHONY: test-lowest
test-lowest: $(BIN)/activate $(LOWEST)/bin/activate
	$(LOWEST)/bin/python -m pytest -n 2 -q $(LOWEST_TESTS)

# Mutation testing (mutmut 3) of the numerics core, one file at a time against the smallest fast
# test selection that covers it (docs/guides/testing.md has the scores). Each file runs in
# out/mutate/<file>/ under its own generated [mutmut] config; `mutmut results` and
# `mutmut show <mutant>` there list the survivors. One mutant at a time (--max-children 1: the
# machine is shared). Files whose tests only build transforms are forked from the warm test
# process; those that run XLA fork from a server that has collected (imported) the selection but
# not started XLA (XLA is not fork-safe once it has started), so a selection's test modules must
# not compute at import (tests/registry.py does: no registry-wide files here). XLA compiles are
# kept in a persistent cache shared by the mutants (out/mutate/.jax-cache). MUTATE_FILES picks
# files, MUTATE_ONLY_<file> limits a file to some functions' mutants (mutmut's name globs),
# MUTATE_TIMEOUT caps each run (s).
MUTATE_FILES   ?= _validate transforms/moments transforms/adaptive transforms/clipping transforms/safety fused schedules/standard schedules/warmup_decay schedules/cyclical
MUTATE_TIMEOUT ?= 3600
MUTATE_TESTS__validate := tests/test_validate.py tests/test_validation.py::test_rejected_with_a_clear_message
MUTATE_TESTS_transforms/moments := tests/test_formulas.py tests/test_moments.py
MUTATE_TESTS_transforms/adaptive := tests/test_formulas.py tests/test_adaptive_mutants.py
MUTATE_TESTS_transforms/clipping := tests/test_formulas.py tests/test_clipping_mutants.py
MUTATE_TESTS_transforms/safety := tests/test_safety_mutants.py
MUTATE_TESTS_fused := tests/test_fused_mutants.py
MUTATE_ONLY_fused := optix.fused.x_plan* optix.fused.x_fusable* optix.fused.x_use_kernel* optix.fused.x_apply_step* optix.fused.x__links* optix.fused.x__static*
MUTATE_TESTS_schedules/standard := tests/test_formulas.py tests/test_schedule_properties.py tests/test_schedule_mutants.py
MUTATE_TESTS_schedules/warmup_decay := tests/test_formulas.py tests/test_schedule_properties.py tests/test_schedule_mutants.py
MUTATE_TESTS_schedules/cyclical := tests/test_formulas.py tests/test_schedule_properties.py tests/test_schedule_mutants.py
MUTATE_FORK := _validate
MUTATE_ENV := JAX_COMPILATION_CACHE_DIR=$(CURDIR)/out/mutate/.jax-cache \
	JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=-1

define mutate_one
	@d=out/mutate/$(subst /,_,$(1)); rm -rf $$d; mkdir -p $$d; \
	ln -s $(CURDIR)/optix $$d/optix; ln -s $(CURDIR)/tests $$d/tests; \
	printf '[mutmut]\nsource_paths = optix\nonly_mutate = optix/$(1).py\nuse_git_change_detection = false\n%b\npytest_add_cli_args = -q\npytest_add_cli_args_test_selection =\n%b\n[tool:pytest]\naddopts = -m "not slow"\n' \
	  '$(if $(filter $(1),$(MUTATE_FORK)),process_isolation = fork\ntimeout_constant = 20,process_isolation = forkserver\nforkserver_warmup = collect\ntimeout_constant = 20\ntimeout_multiplier = 5)' \
	  '$(foreach t,$(MUTATE_TESTS_$(1)),    $(t)\n)' > $$d/setup.cfg; \
	echo "== optix/$(1).py"; \
	(cd $$d && $(MUTATE_ENV) timeout $(MUTATE_TIMEOUT) $(CURDIR)/$(BIN)/mutmut run --max-children 1 \
	   $(foreach m,$(MUTATE_ONLY_$(1)),'$(m)') > run.log 2>&1; \
	 $(CURDIR)/$(BIN)/mutmut results --all true | awk '{print $$NF}' | sort | uniq -c)

endef

.PHONY: mutate
mutate: $(BIN)/activate
	$(BIN)/python -c 'import mutmut' 2>/dev/null || $(BIN)/pip install --quiet -e '.[mutate]'
	$(foreach f,$(MUTATE_FILES),$(call mutate_one,$(f)))

docs: $(BIN)/activate
	$(BIN)/python -m sphinx -W --keep-going -q -b html docs docs/_build/html
	@echo "open docs/_build/html/index.html"
