# The two commands: `make run` (the service on its embedded default) and `make test` (the whole suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test venv lint demo services bench mutation

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch/torchvision come from this disk through plain pip (uv/poetry would download ~3 GB).
	$(BIN)/pip install -c constraints.txt -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

run: venv
	$(BIN)/binwatch serve --with-worker

test: venv
	bash scripts/ensure-services.sh
	bash scripts/ensure-browser.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .

# Mutation testing of the pure rule modules ([tool.mutmut] in pyproject.toml; docs/testing.md). Outside CI:
# it reruns their tests once per mutant (about 20 minutes on 2 cores).
mutation: venv
	$(BIN)/pip install -q mutmut==3.8.1
	$(BIN)/mutmut run --max-children 2
	$(BIN)/mutmut results

demo: venv
	bash scripts/demo.sh
