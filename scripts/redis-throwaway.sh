#!/usr/bin/env bash
# Start a throwaway Redis on a free loopback port, in a temporary directory, with no persistence.
# Prints `export MINIGATE_TEST_REDIS_URL=...` and the directory to stop it with.
#   eval "$(scripts/redis-throwaway.sh start)"   ...   scripts/redis-throwaway.sh stop "$MINIGATE_REDIS_DIR"
set -euo pipefail

install_redis() {
  echo "Redis not found: installing it from Debian packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 && apt-get install -y -qq redis-server >&2
}

case "${1:-}" in
  start)
    command -v redis-server >/dev/null 2>&1 || install_redis
    dir=$(mktemp -d /tmp/minigate-redis.XXXXXX)
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --save '' --appendonly no \
      --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >/dev/null
    for _ in $(seq 1 100); do
      redis-cli -p "$port" ping >/dev/null 2>&1 && break
      sleep 0.1
    done
    redis-cli -p "$port" ping >/dev/null || { cat "$dir/redis.log" >&2; exit 1; }
    echo "export MINIGATE_TEST_REDIS_URL=redis://127.0.0.1:$port/0"
    echo "export MINIGATE_REDIS_DIR=$dir"
    ;;
  stop)
    dir=${2:?usage: stop DIR}
    [ -f "$dir/redis.pid" ] && kill "$(cat "$dir/redis.pid")" 2>/dev/null || true
    rm -rf "$dir"
    ;;
  *)
    echo "usage: $0 start | stop DIR" >&2; exit 2 ;;
esac
