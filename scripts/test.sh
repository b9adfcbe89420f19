#!/usr/bin/env bash
# The whole suite, on SQLite and on a throwaway PostgreSQL (started here unless
# MINIGATE_TEST_POSTGRES_URL already points at one). Fails loudly; never skips a backend silently.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

started_pg=""
cleanup() {
  if [ -n "$started_pg" ]; then scripts/pg-throwaway.sh stop "$started_pg"; fi
}
trap cleanup EXIT

if [ -z "${MINIGATE_TEST_POSTGRES_URL:-}" ]; then
  eval "$(scripts/pg-throwaway.sh start)"
  started_pg=$MINIGATE_PG_DIR
  echo "throwaway PostgreSQL: ${MINIGATE_TEST_POSTGRES_URL}"
fi
export MINIGATE_TEST_POSTGRES_URL

$BIN/python -m pytest -p no:cacheprovider "$@"
