#!/usr/bin/env bash
# Run the test suite, with a private PostgreSQL on loopback when the server is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${VENV:-.venv}/bin/python"
if uri="$(scripts/postgres.sh start)"; then
  export CLARKY_TEST_POSTGRES_URI="$uri"
  trap 'scripts/postgres.sh stop' EXIT
else
  echo "PostgreSQL is not installed: the PostgreSQL tests will be skipped (apt-get install postgresql)." >&2
fi
"$PY" -m pytest "$@"
