# The two commands a newcomer needs: `make demo` and `make test`. Both create or reuse .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export VENV

.PHONY: demo test test-env lint bench clean

$(UV):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv

# The demo needs the base install alone: Airflow, its SQLite provider and this package.
$(VENV)/.demo-installed: pyproject.toml | $(UV)
	$(UV) pip install --quiet --python $(PY) -e .
	touch $@

demo: $(VENV)/.demo-installed
	$(PY) scripts/demo.py

# The tests' packages (and, as root with apt, the warehouse servers): scripts/test-env.sh
test-env: | $(UV)
	scripts/test-env.sh

test: test-env
	scripts/with-warehouses.sh $(PY) -m pytest $(PYTEST_ARGS)

lint: test-env
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

$(VENV)/.bench-installed: pyproject.toml | test-env
	$(UV) pip install --quiet --python $(PY) -e ".[dev,bench]"
	touch $@

# e.g. make bench BENCH_ARGS="pipeline --contacts 20000" (installs the optional dlt baseline)
bench: $(VENV)/.bench-installed
	scripts/with-warehouses.sh $(PY) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .airflow demo_output
