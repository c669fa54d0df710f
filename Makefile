# Fresh machine: `make demo` or `make test` (each installs into .venv first).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast bench bench-batch clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,bench]"
	touch $(STAMP)

demo: install
	$(PY) benchmarks/demo.py

# One BLAS thread per process: pytest -n 2 on 2 cores would otherwise oversubscribe
# (JAX's CPU LAPACK runs on scipy's OpenBLAS, whose spinning threads then fight).
test: install
	OPENBLAS_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadfile -q

test-fast: install
	OPENBLAS_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadfile -q -m "not slow"

bench: install
	$(PY) benchmarks/cutest.py

bench-batch: install
	OPENBLAS_NUM_THREADS=1 $(PY) benchmarks/batch.py --host-devices 2

clean:
	rm -rf $(VENV) .pytest_cache
