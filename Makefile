# taskscout: `make demo` and `make test` each work on a fresh machine.
# TORCH pins the CPU build that lies on this machine's disk; GPU users override it,
# e.g. `make test TORCH=2.5.1` (any torch>=2.3 works).
PYTHON ?= python3
TORCH ?= 2.13.0
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(TORCH)

.PHONY: install demo test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet "torch==$(TORCH)"
	$(PY) -m pip install --quiet -e ".[datasets,dev,distributed]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/taskscout search studies/planted.toml --out reports/demo

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check taskscout tests

bench: $(STAMP)
	$(VENV)/bin/taskscout bench

clean:
	rm -rf $(VENV) build *.egg-info
