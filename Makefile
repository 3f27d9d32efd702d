# The two commands of this project: `make demo` and `make test`. Both work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first and pinned: this exact version is a CPU wheel already on disk here;
# letting pip resolve torch through another package would download gigabytes of CUDA builds.
TORCH_PIN ?= torch==2.13.0

.PHONY: demo test lint install airflow bench clean

$(BIN)/sbi-core: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PIN)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/sbi-core  ## create .venv and install everything (idempotent)

demo: install  ## run sbi_pipeline on configs/benchmark.yaml at demo size (SQLite, local files, local backend)
	$(BIN)/python scripts/demo.py

test: install lint  ## ruff, then the test suite
	$(BIN)/python -m pytest -n 2 --dist loadfile --durations=25

lint: install
	$(BIN)/ruff check .

airflow: install  ## Airflow 3 on 127.0.0.1 with this project's DAGs and pools (Ctrl-C stops it)
	$(BIN)/python scripts/airflow_local.py

bench: install  ## benchmarks: measured ratios against baselines (python -m bench --help)
	$(BIN)/python -m bench --quick

clean:
	rm -rf .airflow artifacts .pytest_cache
