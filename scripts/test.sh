#!/usr/bin/env bash
# The whole suite, on SQLite and on a throwaway PostgreSQL and Redis (started here unless
# MINIGATE_TEST_POSTGRES_URL / MINIGATE_TEST_REDIS_URL already point at them). Fails loudly; never skips a
# backend silently.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

started_pg=""
started_redis=""
cleanup() {
  if [ -n "$started_pg" ]; then scripts/pg-throwaway.sh stop "$started_pg"; fi
  if [ -n "$started_redis" ]; then scripts/redis-throwaway.sh stop "$started_redis"; fi
}
trap cleanup EXIT

if [ -z "${MINIGATE_TEST_POSTGRES_URL:-}" ]; then
  eval "$(scripts/pg-throwaway.sh start)"
  started_pg=$MINIGATE_PG_DIR
  echo "throwaway PostgreSQL: ${MINIGATE_TEST_POSTGRES_URL}"
fi
export MINIGATE_TEST_POSTGRES_URL

if [ -z "${MINIGATE_TEST_REDIS_URL:-}" ]; then
  eval "$(scripts/redis-throwaway.sh start)"
  started_redis=$MINIGATE_REDIS_DIR
  echo "throwaway Redis: ${MINIGATE_TEST_REDIS_URL}"
fi
export MINIGATE_TEST_REDIS_URL

# The mini-program SDK's own tests, on the machine's Node.js (installed from Debian when missing).
if ! command -v node >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get install -y -q nodejs >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q nodejs >/dev/null; }
  fi
  command -v node >/dev/null 2>&1 || { echo "Node.js is needed for the SDK tests: install nodejs" >&2; exit 1; }
fi
(cd clients/miniprogram && node --test test/)

# The console's browser tests drive Debian's Chromium through Playwright (no browser download).
if [ ! -x "${MINIGATE_CHROMIUM:-/usr/bin/chromium}" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get install -y -q chromium >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
  fi
  [ -x "${MINIGATE_CHROMIUM:-/usr/bin/chromium}" ] || { echo "Chromium is needed for the console tests: apt-get install chromium" >&2; exit 1; }
fi

$BIN/python -m pytest -p no:cacheprovider "$@"
