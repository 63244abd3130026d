#!/usr/bin/env bash
# Throwaway PostgreSQL and redis-server on loopback for the test suite.
#
#   eval "$(scripts/services.sh start DIR)"   # starts both, prints the exports below
#   scripts/services.sh stop DIR              # stops both
#
# It exports each URL in two forms: AIOSIGNALS_TEST_POSTGRES_URL / AIOSIGNALS_TEST_REDIS_URL
# for the test suite (a plain postgresql:// URL, as psql takes it), and DATABASE_URL
# (postgresql+asyncpg://, as SQLAlchemy takes it) / REDIS_URL for the examples.
#
# Each server gets a free port and lives entirely in DIR, so it never touches a system
# cluster and two checkouts can run side by side. PostgreSQL refuses to run as root, so
# under root it runs as the `postgres` user that Debian's package creates.
set -euo pipefail

cmd=${1:?usage: services.sh start|stop DIR}
dir=${2:?usage: services.sh start|stop DIR}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pg_bin() {
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$found" ]; then
    command -v pg_ctl >/dev/null || { echo "services.sh: PostgreSQL is not installed" >&2; exit 1; }
    found=$(dirname "$(command -v pg_ctl)")
  fi
  echo "$found"
}

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  local bin pg_port redis_port
  bin=$(pg_bin)
  pg_port=$(free_port)
  mkdir -p "$dir/pg"
  [ "$(id -u)" = 0 ] && chown postgres "$dir/pg" && chmod o+x "$dir"
  as_pg "$bin/initdb" -D "$dir/pg/data" -U postgres -A trust -E UTF8 --no-sync >"$dir/pg/initdb.log" 2>&1
  as_pg "$bin/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/server.log" -w -t 60 \
    -o "-h 127.0.0.1 -p $pg_port -k $dir/pg -c fsync=off -c max_connections=200" start >/dev/null
  echo "$pg_port" >"$dir/pg/port"

  redis_port=$(free_port)
  mkdir -p "$dir/redis"
  redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$dir/redis" --daemonize yes \
    --pidfile "$dir/redis/redis.pid" --logfile "$dir/redis/redis.log" --save '' --appendonly no
  for _ in $(seq 50); do
    redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  redis-cli -p "$redis_port" ping >/dev/null

  echo "export AIOSIGNALS_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:$pg_port/postgres"
  echo "export AIOSIGNALS_TEST_REDIS_URL=redis://127.0.0.1:$redis_port/0"
  echo "export DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:$pg_port/postgres"
  echo "export REDIS_URL=redis://127.0.0.1:$redis_port/0"
}

stop() {
  [ -d "$dir" ] || return 0
  if [ -d "$dir/pg/data" ]; then
    as_pg "$(pg_bin)/pg_ctl" -D "$dir/pg/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  if [ -f "$dir/redis/redis.pid" ]; then
    kill "$(cat "$dir/redis/redis.pid")" 2>/dev/null || true
  fi
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: services.sh start|stop DIR" >&2; exit 2 ;;
esac
