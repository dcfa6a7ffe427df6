# Two commands on a fresh machine: `make demo` and `make test`.
# Each creates .venv in the repository root if it is missing and installs the project into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP_RUN := $(VENV)/.installed-run
STAMP_DEV := $(VENV)/.installed-dev
.PHONY: demo test test-all study-test lint bench bench-gpu install install-dev clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Re-install when the project's metadata changes (the stamp is older than pyproject.toml).
$(STAMP_RUN): pyproject.toml | $(PY)
	$(PY) -m pip install -e '.[data]'
	touch $@

$(STAMP_DEV): pyproject.toml | $(PY)
	$(PY) -m pip install -e '.[dev]'
	touch $@ $(STAMP_RUN)

install: $(STAMP_RUN)
install-dev: $(STAMP_DEV)

demo: $(STAMP_RUN)
	$(PY) -m mmix_applied.cli demo

lint: $(STAMP_DEV)
	$(PY) -m ruff check .

test: lint
	$(PY) -m pytest -m "not slow" -q

test-all: $(STAMP_DEV)
	$(PY) -m pytest -q

# The study drivers' own tests (studies/: research code, outside the package; `make test` never collects them).
study-test: $(STAMP_DEV)
	$(PY) -m pytest -q studies/tests

bench: $(STAMP_DEV)
	$(PY) benchmarks/overhead.py --memory
	$(PY) benchmarks/mix_floor.py

# On a GPU machine: resnet50 and Unet-r34, bf16 + channels_last, plain vs manifold, eager and compiled.
bench-gpu:
	bash benchmarks/gpu.sh

clean:
	rm -rf $(VENV) runs .pytest_cache

# The docs site (MkDocs + Material, API reference from the docstrings): warnings are errors; output in site/.
.PHONY: docs
docs: $(STAMP_DEV)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site
