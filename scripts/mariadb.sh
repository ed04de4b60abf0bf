#!/usr/bin/env bash
# Start or stop a private MariaDB for the tests, on loopback only.
#   scripts/mariadb.sh start   -> prints the connection URI on stdout (waits until it accepts TCP)
#   scripts/mariadb.sh stop
# Uses Debian's server binaries (apt-get install mariadb-server). Runs as root (--user=root);
# root@localhost / root@127.0.0.1 have no password (--auth-root-authentication-method=normal).
set -euo pipefail

PORT="${CLARKY_MARIADB_PORT:-33069}"
DIR="${CLARKY_MARIADB_DIR:-/tmp/clarky-provider-mariadb}"
MARIADBD="${MARIADBD:-/usr/sbin/mariadbd}"
if [ ! -x "$MARIADBD" ] || ! command -v mariadb-install-db >/dev/null; then
  echo "MariaDB server binaries not found; install them with: apt-get install mariadb-server" >&2
  exit 3
fi

ping() { mariadb-admin --no-defaults --protocol=tcp -h127.0.0.1 -P"$PORT" -uroot ping >/dev/null 2>&1; }

case "${1:-}" in
  start)
    if ! ping; then
      if [ -f "$DIR/pid" ] && kill -0 "$(cat "$DIR/pid")" 2>/dev/null; then
        echo "a server from $DIR is running but not answering on port $PORT" >&2; exit 1
      fi
      rm -rf "$DIR" && mkdir -p "$DIR"
      mariadb-install-db --no-defaults --datadir="$DIR/data" --user="$(id -un)" \
        --auth-root-authentication-method=normal --skip-test-db >"$DIR/install.log" 2>&1
      # fsync off and a small log: a throwaway test server. utf8mb4 everywhere; strict mode is
      # the default (STRICT_TRANS_TABLES); local_infile is on by default in 10.11 (checked).
      "$MARIADBD" --no-defaults --datadir="$DIR/data" --socket="$DIR/sock" --pid-file="$DIR/pid" \
        --port="$PORT" --bind-address=127.0.0.1 --user="$(id -un)" --skip-name-resolve \
        --character-set-server=utf8mb4 --collation-server=utf8mb4_bin \
        --innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0 --innodb-buffer-pool-size=256M \
        --max-allowed-packet=256M --local-infile=1 --log-error="$DIR/server.log" \
        >/dev/null 2>&1 </dev/null &
      for _ in $(seq 1 150); do   # up to 30 s
        ping && break
        sleep 0.2
      done
      if ! ping; then
        echo "MariaDB did not start; see $DIR/server.log" >&2
        tail -n 20 "$DIR/server.log" >&2 || true
        exit 1
      fi
    fi
    echo "mysql://root@127.0.0.1:$PORT/"
    ;;
  stop)
    if ping; then
      mariadb-admin --no-defaults --protocol=tcp -h127.0.0.1 -P"$PORT" -uroot shutdown >/dev/null 2>&1 || true
    fi
    if [ -f "$DIR/pid" ]; then
      pid="$(cat "$DIR/pid")"
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -0 "$pid" 2>/dev/null && kill "$pid" || true
    fi
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
