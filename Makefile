# Quickstart: `make demo` then `make test`. Needs Python 3.11 or 3.12 and pip; everything else installs here.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test bench dev clean lock

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements.lock -e '.[test,ui]'
	touch $(STAMP)

## demo: generate the demo bill, run the nightly job on it, print the summary and where things are
demo: $(STAMP)
	$(BIN)/apportion demo
	$(BIN)/apportion run --config demo/apportion.yaml --json > /dev/null
	@echo "month close (docs/close.md): close the previous month, then AWS re-delivers it with a late credit"
	$(BIN)/apportion close --config demo/apportion.yaml --month previous --if-open
	$(BIN)/apportion demo --late-credit
	$(BIN)/apportion run --config demo/apportion.yaml
	@echo "Next: call the CLI as $(BIN)/apportion (or \`source $(BIN)/activate\`, then apportion), with --config demo/apportion.yaml,"
	@echo "      e.g. $(BIN)/apportion months --config demo/apportion.yaml   (README: Quickstart)"

## test: lint, then the whole test suite (CI runs exactly this)
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n $${TEST_WORKERS:-2} --dist loadgroup

## bench: end-to-end vs hand-written DuckDB query (ROWS=5000000 by default)
bench: $(STAMP)
	$(BIN)/python bench/bench_allocation.py --rows $${ROWS:-5000000}

## dev: the Dagster UI on the demo config (PORT=3000 by default), with the runs `apportion run` recorded
PORT ?= 3000
dev: $(STAMP)
	@mkdir -p data/.dagster
	@echo "Dagster UI: http://127.0.0.1:$(PORT)  (runs of \`apportion run\` on the demo are in data/.dagster)"
	DAGSTER_HOME=$(CURDIR)/data/.dagster APPORTION_CONFIG=$${APPORTION_CONFIG:-demo/apportion.yaml} \
		$(BIN)/dagster dev -m apportion.pipelines.definitions -h 127.0.0.1 -p $(PORT)

## lock: re-pin the full dependency set after changing pyproject.toml
lock: $(STAMP)
	$(BIN)/pip freeze --exclude-editable | grep -v '^apportion' > requirements.lock

clean:
	rm -rf data .dagster_home bench/out
