# taskscout: `make demo` and `make test` each work on a fresh machine.
# TORCH pins the CPU build that lies on this machine's disk; GPU users override it,
# e.g. `make test TORCH=2.5.1` (any torch>=2.3 works).
PYTHON ?= python3
TORCH ?= 2.13.0
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(TORCH)

.PHONY: install demo test lint bench docs clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet "torch==$(TORCH)"
	$(PY) -m pip install --quiet -e ".[datasets,dev,distributed,docs]"
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

# The documentation site (mkdocs.yml, docs/) into site/: strict, so a broken link or a docstring
# mkdocstrings cannot read fails the build; nothing is fetched from the network. (Material's
# banner about its end of life is informational; NO_MKDOCS_2_WARNING hides it.)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) build site *.egg-info
