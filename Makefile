# crysgen: `make demo` runs the main job, `make test` runs the test suite (both install first).
PYTHON ?= python3
VENV ?= .venv
SHARED ?= ../shared
# the CPU wheel; on a CUDA machine install the matching torch build first (see pytorch.org)
TORCH_VERSION ?= 2.13.0
BIN := $(VENV)/bin
DEMO := demo

.PHONY: install demo test lint clean

$(BIN)/crysgen: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==$(TORCH_VERSION)
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

install: $(BIN)/crysgen

demo: install
	@mkdir -p $(DEMO)
	$(BIN)/crysgen data prepare $(SHARED)/data/perov_5/test.csv.gz --out $(DEMO)/perov_5_test.npz --workers 2
	$(BIN)/crysgen codec roundtrip $(DEMO)/perov_5_test.npz --workers 2 --quiet
	$(BIN)/crysgen codec roundtrip $(DEMO)/perov_5_test.npz --workers 2 --quiet --noise 0.01 --json > $(DEMO)/roundtrip_noise0.01.json
	@echo
	@echo "results in $(DEMO)/: perov_5_test.npz (CrystalSet), perov_5_test.report.json (what prepare kept and dropped),"
	@echo "                    roundtrip_noise0.01.json (the same round trip with Gaussian noise 0.01)"

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .ruff_cache .hypothesis
