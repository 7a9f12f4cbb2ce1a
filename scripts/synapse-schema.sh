#!/usr/bin/env bash
# Prepares what the attached-mode and import tests need to create a real,
# empty Synapse 1.163 schema (server/tests/common/synapse_db.rs):
#   - matrix-synapse 1.163.0 and psycopg2-binary in .tools/synapse-venv
#     (the venv scripts/synapse-interop.sh uses), from PyPI, once;
#   - PostgreSQL's server binaries (/usr/lib/postgresql/*/bin/initdb): Debian's
#     `postgresql` is installed with apt only when they are missing.
# The tests start their own throwaway cluster; nothing here starts a server.
#
#   scripts/synapse-schema.sh            (make synapse-venv, run before `make unit`)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.tools/synapse-venv
synapse_version=1.163.0

have() {
  "$venv/bin/python" - "$synapse_version" 2>/dev/null <<'PY'
import importlib.metadata as m, sys
sys.exit(m.version('matrix-synapse') != sys.argv[1])
import psycopg2  # noqa: F401
PY
}
if ! have || ! "$venv/bin/python" -c 'import psycopg2' 2>/dev/null; then
  echo "installing matrix-synapse $synapse_version and psycopg2-binary into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "matrix-synapse==$synapse_version" psycopg2-binary
fi

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "installing Debian's postgresql (server binaries for the tests' throwaway clusters)"
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql
fi
