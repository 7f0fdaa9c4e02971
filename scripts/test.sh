#!/usr/bin/env bash
# Runs the whole test suite: lint, then pytest on SQLite and on the real PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-services.sh

export TUNEFORGE_TEST_REQUIRE_POSTGRES="${TUNEFORGE_TEST_REQUIRE_POSTGRES:-1}"
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
.venv/bin/pytest "$@"
