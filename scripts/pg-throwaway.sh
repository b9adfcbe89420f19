#!/usr/bin/env bash
# Start a throwaway PostgreSQL on a free loopback port, in a temporary directory owned by `postgres`
# (the server refuses to run as root). Prints `export MINIGATE_TEST_POSTGRES_URL=...` and the stop command.
#   eval "$(scripts/pg-throwaway.sh start)"   ...   scripts/pg-throwaway.sh stop "$MINIGATE_PG_DIR"
set -euo pipefail

find_bin() {
  local name=$1
  for dir in /usr/lib/postgresql/*/bin; do
    [ -x "$dir/$name" ] && { echo "$dir/$name"; return 0; }
  done
  command -v "$name" || return 1
}

install_pg() {
  echo "PostgreSQL not found: installing it from Debian packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 && apt-get install -y -qq postgresql >&2
}

run_as_pg() {
  if [ "$(id -u)" = 0 ]; then
    su postgres -s /bin/bash -c "$*"
  else
    bash -c "$*"
  fi
}

case "${1:-}" in
  start)
    find_bin initdb >/dev/null 2>&1 || install_pg
    INITDB=$(find_bin initdb); PG_CTL=$(find_bin pg_ctl)
    dir=$(mktemp -d /tmp/minigate-pg.XXXXXX)
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    run_as_pg "'$INITDB' -D '$dir/data' -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >'$dir/initdb.log' 2>&1" \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    # fsync stays on: the suite checks durability-sensitive code paths against a real server
    run_as_pg "'$PG_CTL' -D '$dir/data' -l '$dir/server.log' -w -t 60 \
      -o \"-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories='$dir' -c max_connections=300\" start >/dev/null" \
      || { cat "$dir/server.log" >&2; exit 1; }
    echo "export MINIGATE_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:$port/postgres"
    echo "export MINIGATE_PG_DIR=$dir"
    ;;
  stop)
    dir=${2:?usage: stop DIR}
    PG_CTL=$(find_bin pg_ctl)
    run_as_pg "'$PG_CTL' -D '$dir/data' -m immediate stop >/dev/null 2>&1" || true
    rm -rf "$dir"
    ;;
  *)
    echo "usage: $0 start | stop DIR" >&2; exit 2 ;;
esac
