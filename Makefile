# qdrant-librarian: every target creates .venv and installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HELM   := $(BIN)/helm
IMAGE  ?= qdrant-librarian:dev
# Where `make release` says to push the chart (helm push ... oci://$(REGISTRY)/charts).
REGISTRY ?= ghcr.io/qdrant-librarian

export PYTHONDONTWRITEBYTECODE := 1

.PHONY: lock demo test lint unit integration operator packaging bench tools clean e2e image release

LOCK   := requirements/constraints.txt

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c $(LOCK) -e '.[dev,bench,local]'
	touch $(STAMP)

## make lock: re-resolve every dependency (all extras, any platform, Python 3.11+) into the lock
lock: $(STAMP)
	$(PY) -m pip install -q uv
	$(BIN)/uv pip compile --universal --python-version 3.11 --all-extras --upgrade \
		pyproject.toml -o $(LOCK) --no-header

$(HELM): | $(STAMP)
	$(PY) tools/install_helm.py $(BIN)

tools: $(STAMP) $(HELM)

## make demo: the embedded default, end to end
demo: $(STAMP)
	$(BIN)/librarian demo

## make lint: ruff, mypy (strict) and the import-layer contracts
lint: $(STAMP)
	$(BIN)/ruff check operator tests benchmarks tools
	$(BIN)/ruff format --check operator tests benchmarks tools
	$(BIN)/mypy
	$(BIN)/lint-imports

## make test: lint, then every test suite (on TEST_WORKERS workers, 2 by default)
TEST_WORKERS ?= 2
test: lint tools
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --durations=25

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit
integration: $(STAMP)
	$(BIN)/pytest -q tests/integration
operator: $(STAMP)
	$(BIN)/pytest -q tests/operator
packaging: tools
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pytest -q tests/packaging

## make bench: speed, memory and quality benchmarks (ratios against in-process baselines)
bench: $(STAMP)
	$(PY) benchmarks/run_all.py

## make image: the container image of the operator, the router and the migration Jobs
image:
	docker build -t $(IMAGE) .

## make release: the same version everywhere (VERSION=X.Y.Z sets a new one first), the image
## (docker or podman) and the chart packaged into dist/; prints the push commands (your step)
release: tools
ifdef VERSION
	$(PY) tools/set_version.py $(VERSION)
endif
	PATH="$(abspath $(BIN)):$$PATH" $(PY) tools/release.py --registry $(REGISTRY)

## make e2e: a real kind cluster with two Qdrant servers (needs Docker and kind; see README)
e2e: tools
	IMAGE=qdrant-librarian:e2e bash hack/e2e-kind.sh

clean:
	rm -rf $(VENV) .demo .bench dist
