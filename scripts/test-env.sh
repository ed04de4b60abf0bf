#!/usr/bin/env bash
# Install what `make test` needs into the venv ($VENV, default .venv), and what the warehouse
# tests need on the machine where that is possible:
#   - as root where apt-get exists (CI, our machines), Debian's PostgreSQL and MariaDB servers,
#     libmariadb-dev + pkg-config, which mysqlclient (the MySQL provider's driver) builds
#     against, and redis-server, the Celery broker of tests/e2e/test_celery.py (which starts
#     its own on a free loopback port); CLARKY_SYSTEM_PACKAGES=no leaves the machine alone;
#   - the [dev] extra, plus [mysql] only where mysqlclient can build: elsewhere the MySQL/MariaDB
#     tests are skipped, and one line says which command enables them. Never a build failure.
# Re-running is cheap: the venv is reinstalled only when pyproject.toml or the extras change.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PACKAGES=(postgresql mariadb-server libmariadb-dev pkg-config redis-server)
ENABLE="apt-get install ${PACKAGES[*]} (as root), then make test"

missing_packages() {
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || echo postgresql
  [ -x /usr/sbin/mariadbd ] || echo mariadb-server
  command -v pkg-config >/dev/null || echo pkg-config
  pkg-config --exists libmariadb 2>/dev/null || echo libmariadb-dev
  command -v redis-server >/dev/null || echo redis-server
}

if [ "${CLARKY_SYSTEM_PACKAGES:-yes}" != no ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
  && [ -n "$(missing_packages)" ]; then
  echo "make test: installing Debian packages for the warehouse tests: ${PACKAGES[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >/dev/null
fi

# mysqlclient builds with a C compiler and a MySQL/MariaDB client library that pkg-config finds
extras=dev
if command -v cc >/dev/null && { pkg-config --exists mysqlclient 2>/dev/null || pkg-config --exists libmariadb 2>/dev/null; }; then
  extras=dev,mysql
else
  echo "make test: the MySQL/MariaDB tests will be skipped: mysqlclient cannot build here ($ENABLE)"
fi

stamp="$VENV/.installed"
wanted="$extras $(sha256sum pyproject.toml | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  "$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" -e ".[$extras]"
  echo "$wanted" >"$stamp"
fi
