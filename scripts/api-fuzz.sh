#!/usr/bin/env bash
# Schemathesis against the real binary: every operation of the OpenAPI
# document Herald serves (/_herald/openapi.json) gets generated requests, and
# every answer must be no server error, have a status and a content type the
# document declares, and match its schema.
#
#   scripts/api-fuzz.sh [HERALD_BIN]      (make fuzz, part of make test)
#
# Installs schemathesis from PyPI into .tools/schemathesis-venv once, starts
# `herald serve` on a fresh database in a temp directory (an admin account,
# a few destinations with rooms, the intake API on), then runs schemathesis
# twice: the admin, login and metrics operations with the admin's token, and
# the intake operations with the sender token. Bounded: FUZZ_EXAMPLES
# examples per operation (default 40) and FUZZ_SECONDS per run (default 40;
# fuzzing repeats until its time is spent).
set -euo pipefail
cd "$(dirname "$0")/.."
herald=$(realpath "${1:-target/release/herald}")
venv=.tools/schemathesis-venv
version=4.32.5
examples=${FUZZ_EXAMPLES:-40}
seconds=${FUZZ_SECONDS:-40}

if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('schemathesis') != '$version')" 2>/dev/null; then
  echo "installing schemathesis $version into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi

dir=$(mktemp -d -t herald-fuzz-XXXXXX)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  wait 2>/dev/null || true
  if [ "${KEEP:-}" ]; then echo "kept $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
admin_password=fuzz-admin-secret
sender_token=fuzz-sender-token
cat > "$dir/herald.toml" <<CONF
server_name = "fuzz.test"
database = "$dir/herald.db"
listen = "127.0.0.1:$port"
sender_api_token = "$sender_token"
CONF
echo "$admin_password" | "$herald" user add admin --admin --password - --database "$dir/herald.db" >/dev/null
python3 - "$dir/herald.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.executemany(
    "INSERT INTO destinations (destination, retry_last_ts, retry_interval, failure_ts,"
    " last_successful_stream_ordering) VALUES (?, ?, ?, ?, ?)",
    [("a.example", 0, 0, None, 5), ("b.example", 1700000000000, 60000, 1690000000000, None),
     ("c.example", 1700000000000, 0, None, 7)])
db.executemany(
    "INSERT INTO destination_rooms (destination, room_id, stream_ordering) VALUES (?, ?, ?)",
    [("a.example", "!r1:fuzz.test", 3), ("a.example", "!r2:fuzz.test", 5)])
db.commit()
PY

RUST_LOG=${RUST_LOG:-warn} "$herald" serve --config "$dir/herald.toml" >"$dir/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -fsS "$base/_matrix/client/versions" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { cat "$dir/server.log"; echo "herald serve exited"; exit 1; }
  sleep 0.1
done
login() {
  curl -fsS -X POST "$base/_matrix/client/v3/login" -H 'Content-Type: application/json' \
    -d "{\"type\":\"m.login.password\",\"identifier\":{\"type\":\"m.id.user\",\"user\":\"admin\"},\"password\":\"$admin_password\"}" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}
token=$(login)
# The logout run's own token, taken now: after the login operations were
# fuzzed, the account's login limit (rc_login) may refuse another login.
logout_token=$(login)

checks=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
run() {
  "$venv/bin/schemathesis" run "$base/_herald/openapi.json" \
    --checks "$checks" --max-examples "$examples" --max-time "$seconds" \
    --request-timeout 20 --workers 2 --seed 1 --generation-database none --no-color "$@"
}
status=0
# The login operations run with the admin's token too: it is ignored there.
run -H "Authorization: Bearer $token" --exclude-tag Intake --exclude-operation-id logout \
  --exclude-operation-id logoutR0 || status=1
run -H "Authorization: Bearer $sender_token" --include-tag Intake || status=1
# Logging out ends the token, so it runs last, on a token of its own.
run -H "Authorization: Bearer $logout_token" --include-operation-id logout \
  --include-operation-id logoutR0 || status=1
if ! kill -0 "$pid" 2>/dev/null; then
  echo "herald serve died during the run:"; tail -50 "$dir/server.log"; status=1
fi
if grep -q "panicked" "$dir/server.log"; then
  echo "herald serve panicked:"; grep -B2 -A10 panicked "$dir/server.log"; status=1
fi
exit $status
