#!/usr/bin/env bash
# Herald attached to a real Synapse 1.163 (`[synapse]`), on SQLite and on
# PostgreSQL, driven in Chromium:
#
#   scripts/synapse-attached.sh [HERALD_BIN] [sqlite|postgresql ...]   (make attached)
#
# For each database kind: a throwaway Synapse (and for PostgreSQL a
# throwaway cluster in a temp directory on a free port, as the `postgres`
# user) gets its schema from Synapse itself, then — Synapse stopped — 120
# destinations in every state with rooms (scripts/synapse-db.py). Synapse
# starts; an admin and a non-admin are registered on it; `herald serve`
# starts attached to it (refresh_interval 1s, token_cache 2s). Then
# end2end/attached/*.spec.ts (Playwright, Chromium) signs in with Synapse's
# admin and sees Synapse's destinations, is refused as the non-admin,
# resets a destination through Herald and checks with Synapse's own admin
# API that Synapse reset it, and changes a row in Synapse's database and
# sees it in Herald within the documented delay. Everything runs in a temp
# directory and is stopped at the end, pass or fail.
set -euo pipefail
cd "$(dirname "$0")/.."
herald=$(realpath "${1:-target/release/herald}")
shift || true
kinds=("${@:-sqlite postgresql}")
read -r -a kinds <<<"${kinds[*]}"
venv=.tools/synapse-venv
# The venv's own python (not the interpreter its symlink points at).
python="$PWD/$venv/bin/python"

scripts/synapse-schema.sh

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

run_kind() {
  local kind=$1
  local dir pids=() pg=""
  dir=$(mktemp -d -t herald-attached-XXXXXX)
  cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "$pg" ]; then scripts/pg-cluster.sh stop "$pg" || true; fi
    if [ "${KEEP:-}" ]; then echo "kept $dir"; else rm -rf "$dir"; fi
  }
  trap cleanup RETURN
  local syn_client her_admin server_name db db_yaml
  syn_client=$(free_port); her_admin=$(free_port)
  server_name="attached.test"

  if [ "$kind" = postgresql ]; then
    pg=$(scripts/pg-cluster.sh start)
    local port=${pg##*:}
    psql_url="postgresql://herald@127.0.0.1:$port"
    "$venv/bin/python" - "$psql_url/postgres" <<'EOF'
import sys, psycopg2
c = psycopg2.connect(sys.argv[1]); c.autocommit = True
c.cursor().execute("CREATE DATABASE synapse ENCODING 'UTF8' LC_COLLATE='C' LC_CTYPE='C' TEMPLATE template0")
EOF
    db="$psql_url/synapse"
    db_yaml="{name: psycopg2, args: {user: herald, database: synapse, host: 127.0.0.1, port: $port, cp_min: 1, cp_max: 5}}"
  else
    db="$dir/homeserver.db"
    db_yaml="{name: sqlite3, args: {database: $db}}"
  fi

  cat >"$dir/homeserver.yaml" <<EOF
server_name: "$server_name"
pid_file: $dir/synapse.pid
listeners:
  - {bind_addresses: [127.0.0.1], port: $syn_client, tls: false, type: http, resources: [{names: [client]}]}
database: $db_yaml
log_config: $dir/log.yaml
media_store_path: $dir/media
registration_shared_secret: attached-shared-secret
report_stats: false
macaroon_secret_key: attached-macaroon-secret-key
form_secret: attached-form-secret
signing_key_path: $dir/synapse.signing.key
trusted_key_servers: []
suppress_key_server_warning: true
federation_domain_whitelist: []
rc_login: {address: {per_second: 100, burst_count: 100}, account: {per_second: 100, burst_count: 100}, failed_attempts: {per_second: 100, burst_count: 100}}
EOF
  cat >"$dir/log.yaml" <<EOF
version: 1
formatters: {precise: {format: '%(asctime)s %(name)s %(levelname)s %(request)s %(message)s'}}
handlers: {file: {class: logging.FileHandler, formatter: precise, filename: $dir/synapse.log}}
root: {level: INFO, handlers: [file]}
disable_existing_loggers: false
EOF
  "$venv/bin/python" -m synapse.app.homeserver -c "$dir/homeserver.yaml" --generate-keys >/dev/null
  # Synapse writes its schema; then, stopped, it gets the rows.
  "$venv/bin/update_synapse_database" --database-config "$dir/homeserver.yaml" >"$dir/schema.out" 2>&1 || {
    cat "$dir/schema.out"; return 1
  }
  "$venv/bin/python" scripts/synapse-db.py "$db" seed 120

  "$venv/bin/python" -m synapse.app.homeserver -c "$dir/homeserver.yaml" >"$dir/synapse.out" 2>&1 &
  pids+=($!)
  local synapse="http://127.0.0.1:$syn_client"
  wait_for() {
    for _ in $(seq 1 120); do curl -sf -o /dev/null "$1" && return 0; sleep 0.5; done
    echo "no answer from $1"; tail -20 "$dir"/*.out "$dir"/*.log 2>/dev/null; return 1
  }
  wait_for "$synapse/_matrix/client/versions"
  "$venv/bin/register_new_matrix_user" -u boss -p attached-boss-pw --admin \
    -k attached-shared-secret "$synapse" >/dev/null
  "$venv/bin/register_new_matrix_user" -u carol -p attached-carol-pw --no-admin \
    -k attached-shared-secret "$synapse" >/dev/null

  cat >"$dir/herald.toml" <<EOF
server_name = "$server_name"
database = "$dir/herald.db"
listen = "127.0.0.1:$her_admin"
[synapse]
database = "$db"
url = "$synapse"
refresh_interval = "1s"
token_cache = "2s"
EOF
  RUST_LOG="info,sqlx=warn" "$herald" serve --config "$dir/herald.toml" >"$dir/herald.log" 2>&1 &
  pids+=($!)
  wait_for "http://127.0.0.1:$her_admin/_matrix/client/versions"

  echo "synapse-attached ($kind): Synapse at $synapse, Herald at http://127.0.0.1:$her_admin"
  (cd end2end && HERALD_URL="http://127.0.0.1:$her_admin" SYNAPSE_URL="$synapse" \
    SYNAPSE_DB="$db" SYNAPSE_DB_KIND="$kind" SYNAPSE_PYTHON="$python" \
    CHROMIUM_PATH="${CHROMIUM_PATH:-/usr/bin/chromium}" \
    npx playwright test --config attached.config.ts) || {
    echo "--- herald.log (tail)"; tail -30 "$dir/herald.log"
    echo "--- synapse.log (tail)"; tail -30 "$dir/synapse.log"
    return 1
  }
  echo "synapse-attached ($kind): passed"
}

for kind in "${kinds[@]}"; do
  case "$kind" in
    sqlite | postgresql) run_kind "$kind" ;;
    *) echo "unknown database kind $kind (sqlite or postgresql)"; exit 2 ;;
  esac
done
