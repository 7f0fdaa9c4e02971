#!/usr/bin/env bash
# Runs the whole test suite: lint, then pytest on SQLite and on the real PostgreSQL; tests
# marked own_process run afterwards in a pytest process of their own.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-services.sh

export TUNEFORGE_TEST_REQUIRE_POSTGRES="${TUNEFORGE_TEST_REQUIRE_POSTGRES:-1}"
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
if [ "$#" -gt 0 ]; then
  .venv/bin/pytest "$@"
else
  .venv/bin/pytest -m "not own_process"
  .venv/bin/pytest -m own_process
fi
