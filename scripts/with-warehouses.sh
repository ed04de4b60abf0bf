#!/usr/bin/env bash
# Run a command with the test warehouse servers on loopback, when installed: a private
# PostgreSQL (CLARKY_TEST_POSTGRES_URI) and a private MariaDB (CLARKY_TEST_MYSQL_URI). A server
# that is not installed is left out, and its tests are skipped (CI requires both).
set -euo pipefail
cd "$(dirname "$0")/.."
stops=()
trap 'for stop in "${stops[@]}"; do $stop; done' EXIT
if uri="$(scripts/postgres.sh start)"; then
  export CLARKY_TEST_POSTGRES_URI="$uri"
  stops+=("scripts/postgres.sh stop")
else
  echo "PostgreSQL is not installed: it will be left out (apt-get install postgresql)." >&2
fi
if uri="$(scripts/mariadb.sh start)"; then
  export CLARKY_TEST_MYSQL_URI="$uri"
  stops+=("scripts/mariadb.sh stop")
else
  echo "MariaDB is not installed: it will be left out (apt-get install mariadb-server)." >&2
fi
"$@"
