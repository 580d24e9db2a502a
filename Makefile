# The two commands: `make run` (the service on its embedded default) and `make test` (the whole suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test venv lint demo services bench

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
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .

demo: venv
	bash scripts/demo.sh
