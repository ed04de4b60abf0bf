#!/usr/bin/env bash
# Start or stop a private PostgreSQL for the tests, on loopback only.
#   scripts/postgres.sh start   -> prints the connection URI on stdout
#   scripts/postgres.sh stop
# Uses Debian's server binaries (apt-get install postgresql); runs the server as the
# 'postgres' user when invoked as root, since initdb refuses to run as root.
set -euo pipefail

PORT="${CLARKY_PG_PORT:-54329}"
DIR="${CLARKY_PG_DIR:-/tmp/clarky-provider-pg}"
BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
if [ -z "$BIN" ]; then
  echo "PostgreSQL server binaries not found; install them with: apt-get install postgresql" >&2
  exit 3
fi

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-}" in
  start)
    if ! as_pg "$BIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
      rm -rf "$DIR" && mkdir -p "$DIR"
      [ "$(id -u)" = 0 ] && chown postgres "$DIR"
      as_pg "$BIN/initdb" -D "$DIR/data" -U postgres --auth=trust -E UTF8 >"$DIR/initdb.log" 2>&1
      as_pg "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c fsync=off -c synchronous_commit=off" start >/dev/null
    fi
    echo "postgresql://postgres@127.0.0.1:$PORT/postgres"
    ;;
  stop)
    as_pg "$BIN/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null 2>&1 || true
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
