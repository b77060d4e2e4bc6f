# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test unit install stack-up stack-down

$(BIN)/modelsiem: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(BIN)/modelsiem

# Stack up, worker and sink, a simulated attack, and the alerts that reached Elasticsearch.
demo: install
	$(BIN)/modelsiem demo

# Every test, against a real Kafka and Elasticsearch that this target starts and stops.
test: install
	@scripts/compose-cli || true
	$(BIN)/modelsiem stack up
	status=0; $(BIN)/python -m pytest $(PYTEST_ARGS) || status=$$?; $(BIN)/modelsiem stack down; exit $$status

# The tests that need no servers.
unit: install
	$(BIN)/python -m pytest -m "not integration" $(PYTEST_ARGS)
