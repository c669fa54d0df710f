# Fresh machine: `make demo` or `make test` (each installs into .venv first).
# The test, bench and docs extras are installed at the versions in constraints.txt (what main
# was last tested with); the library's own dependency ranges in pyproject.toml stay loose.
# `make lock` refreshes constraints.txt from the newest releases the ranges allow.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS := test,bench,docs
LOCK := constraints.txt

.PHONY: install demo test test-fast docs bench bench-batch lock clean

install: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --constraint $(LOCK) -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: install
	$(PY) benchmarks/demo.py

# One BLAS thread per process: pytest -n 2 on 2 cores would otherwise oversubscribe
# (JAX's CPU LAPACK runs on scipy's OpenBLAS, whose spinning threads then fight).
test: install
	OPENBLAS_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadfile -q

# The tests not marked slow, without the notebooks.
test-fast: install
	OPENBLAS_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadfile -q -m "not slow" tests

# The documentation site (mkdocs.yml, docs/) into site/, offline; any warning is an error.
docs: install
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

bench: install
	$(PY) benchmarks/cutest.py

bench-batch: install
	OPENBLAS_NUM_THREADS=1 $(PY) benchmarks/batch.py --host-devices 2

# A fresh venv without constraints, the newest releases the ranges allow, frozen.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet -e ".[$(EXTRAS)]"
	{ echo "# Versions make install uses for the extras [$(EXTRAS)]; refresh with make lock."; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^#'; } > $(LOCK)
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .pytest_cache site dist
