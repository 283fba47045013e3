# Every command a developer needs. `make up` runs the studio; `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test lint format typecheck pytest install migration migration-initial emulator clean

up: $(STAMP) ## Run the studio (embedded PostgreSQL/Redis and the BFL emulator where unset)
	$(BIN)/studio up

test: $(STAMP) ## Lint, type-check and run every test against real PostgreSQL and Redis
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

install: $(STAMP) ## Create .venv with the pinned dependencies and the front-end libraries

$(STAMP): requirements/main.txt requirements/dev.txt pyproject.toml package.json
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements/main.txt -r requirements/dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	npm ci --no-audit --no-fund --loglevel=error
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) ## Only the tests; pass ARGS="-k name" to narrow
	$(BIN)/python -m pytest $(ARGS)

emulator: $(STAMP) ## Run the BFL emulator alone
	$(BIN)/studio emulator

migration: $(STAMP) ## New migration from model changes: make migration NAME="add x"
	$(BIN)/python -m scripts.migrations new "$(NAME)"

migration-initial: $(STAMP) ## Before the first release only: rebuild the initial migration
	$(BIN)/python -m scripts.migrations initial

clean:
	rm -rf $(VENV) node_modules static/vendor
