#!/usr/bin/env bash
# Synapse from PyPI in a venv, with psycopg2 for PostgreSQL:
#   scripts/synapse-venv.sh [VENV] [VERSION]
# Installs matrix-synapse VERSION (default 1.163.0) and psycopg2-binary into
# VENV (default .tools/synapse-venv) unless they are there already.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.tools/synapse-venv}
version=${2:-1.163.0}
# (Not synapse.__version__: inside a git work tree it carries the branch.)
if ! "$venv/bin/python" -c "import importlib.metadata as m, sys, psycopg2; sys.exit(m.version('matrix-synapse') != '$version')" 2>/dev/null; then
  echo "installing matrix-synapse $version and psycopg2-binary into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "matrix-synapse==$version" psycopg2-binary
fi
