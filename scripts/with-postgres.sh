#!/usr/bin/env bash
# Run a command with a private PostgreSQL on loopback (CLARKY_TEST_POSTGRES_URI) when the
# server is installed; without it, the command runs alone and PostgreSQL tests are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
if uri="$(scripts/postgres.sh start)"; then
  export CLARKY_TEST_POSTGRES_URI="$uri"
  trap 'scripts/postgres.sh stop' EXIT
else
  echo "PostgreSQL is not installed: it will be left out (apt-get install postgresql)." >&2
fi
"$@"
