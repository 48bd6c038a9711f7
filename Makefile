# crysgen: `make demo` runs the main job (sample crystals from the bundled model), `make test` runs the test suite, `make lint` ruff, mypy and the import contracts (all install first).
PYTHON ?= python3
VENV ?= .venv
SHARED ?= ../shared
# the CPU wheel; on a CUDA machine install the matching torch build first (see pytorch.org)
TORCH_VERSION ?= 2.13.0
BIN := $(VENV)/bin
DEMO := demo
# Heun steps of the demo (benchmarks/results/atom_steps_cpu.json)
DEMO_STEPS := 10

.PHONY: install demo test lint clean

$(BIN)/crysgen: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==$(TORCH_VERSION)
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

install: $(BIN)/crysgen

demo: install  # a fresh demo folder every time (a folder sampled before is not resumed: the model may have changed)
	rm -rf $(DEMO)
	$(BIN)/crysgen sample -n 64 --steps $(DEMO_STEPS) --out $(DEMO)
	@echo
	@echo "64 crystals sampled from the bundled mp_20 atom diffusion model ($(DEMO_STEPS) Heun steps):"
	@echo "  $(DEMO)/cifs/          one CIF per decoded crystal"
	@echo "  $(DEMO)/samples.csv    one row per sample (formula, sites, space groups, failure reason, diagnostics)"
	@echo "  $(DEMO)/summary.json   counts, failure reasons, speed"

test: install
	$(BIN)/python -m pytest -q

lint: install  # style (ruff), types (mypy on src/crysgen) and the import layers of DESIGN.md (import-linter); settings in pyproject.toml
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .ruff_cache .hypothesis
