# The two commands a newcomer needs: `make demo` and `make test`. Both create or reuse .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export VENV

.PHONY: demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv
	$(VENV)/bin/uv pip install --quiet --python $(PY) -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(PY) scripts/demo.py

test: $(VENV)/.installed
	scripts/with-warehouses.sh $(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

$(VENV)/.bench-installed: $(VENV)/.installed
	$(VENV)/bin/uv pip install --quiet --python $(PY) -e ".[dev,bench]"
	touch $@

# e.g. make bench BENCH_ARGS="pipeline --contacts 20000" (installs the optional dlt baseline)
bench: $(VENV)/.bench-installed
	scripts/with-warehouses.sh $(PY) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .airflow demo_output
