#!/usr/bin/env bash
# Herald against a real Synapse on loopback: Synapse must accept Herald's
# signed federation requests, which it checks by fetching Herald's key from
# Herald's key server over TLS, as it does for any homeserver.
#
#   scripts/synapse-interop.sh [HERALD_BIN]      (make interop)
#
# Installs matrix-synapse 1.163.0 from PyPI into .tools/synapse-venv once,
# makes a self-signed certificate for 127.0.0.1, starts Synapse
# (server name 127.0.0.1:PORT, federation over TLS) and `herald serve`
# (server name 127.0.0.1:PORT, key server over TLS) on free ports, creates
# @alice on Synapse with a display name, then runs
#   herald federation request GET <synapse> /_matrix/federation/v1/query/profile?user_id=@alice:…
# and checks the answer. Everything runs in a temp directory and is stopped
# at the end, pass or fail.
set -euo pipefail
cd "$(dirname "$0")/.."
herald=$(realpath "${1:-target/release/herald}")
venv=.tools/synapse-venv
synapse_version=1.163.0

if ! "$venv/bin/python" -c "import synapse, sys; sys.exit(synapse.__version__ != '$synapse_version')" 2>/dev/null; then
  echo "installing matrix-synapse $synapse_version into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "matrix-synapse==$synapse_version"
fi

dir=$(mktemp -d -t herald-interop-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${KEEP:-}" ]; then echo "kept $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
syn_fed=$(free_port); syn_client=$(free_port); her_fed=$(free_port); her_admin=$(free_port)

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -keyout "$dir/key.pem" -out "$dir/cert.pem" -subj "/CN=127.0.0.1" \
  -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null

cat > "$dir/homeserver.yaml" <<EOF
server_name: "127.0.0.1:$syn_fed"
pid_file: $dir/synapse.pid
listeners:
  - {bind_addresses: [127.0.0.1], port: $syn_fed, tls: true, type: http, resources: [{names: [federation]}]}
  - {bind_addresses: [127.0.0.1], port: $syn_client, tls: false, type: http, resources: [{names: [client]}]}
tls_certificate_path: $dir/cert.pem
tls_private_key_path: $dir/key.pem
database: {name: sqlite3, args: {database: $dir/homeserver.db}}
log_config: $dir/log.yaml
media_store_path: $dir/media
registration_shared_secret: interop-shared-secret
report_stats: false
macaroon_secret_key: interop-macaroon-secret-key
form_secret: interop-form-secret
signing_key_path: $dir/synapse.signing.key
trusted_key_servers: []
suppress_key_server_warning: true
federation_verify_certificates: false
ip_range_blacklist: []
ip_range_whitelist: ["127.0.0.0/8"]
allow_profile_lookup_over_federation: true
EOF
cat > "$dir/log.yaml" <<EOF
version: 1
formatters: {precise: {format: '%(asctime)s %(name)s %(levelname)s %(request)s %(message)s'}}
handlers: {file: {class: logging.FileHandler, formatter: precise, filename: $dir/synapse.log}}
root: {level: INFO, handlers: [file]}
disable_existing_loggers: false
EOF
cat > "$dir/herald.toml" <<EOF
server_name = "127.0.0.1:$her_fed"
database = "$dir/herald.db"
listen = "127.0.0.1:$her_admin"
federation_listen = "127.0.0.1:$her_fed"
tls_certificate_path = "$dir/cert.pem"
tls_private_key_path = "$dir/key.pem"
ip_range_whitelist = ["127.0.0.0/8"]
federation_verify_certificates = false
EOF

"$venv/bin/python" -m synapse.app.homeserver -c "$dir/homeserver.yaml" --generate-keys >/dev/null
"$venv/bin/python" -m synapse.app.homeserver -c "$dir/homeserver.yaml" >"$dir/synapse.out" 2>&1 &
pids+=($!)
"$herald" serve --config "$dir/herald.toml" >"$dir/herald.log" 2>&1 &
pids+=($!)

wait_for() {
  for _ in $(seq 1 120); do curl -sfk -o /dev/null "$1" && return 0; sleep 0.5; done
  echo "no answer from $1"; tail -20 "$dir"/*.out "$dir"/*.log 2>/dev/null; exit 1
}
wait_for "http://127.0.0.1:$syn_client/_matrix/client/versions"
wait_for "https://127.0.0.1:$her_fed/_matrix/federation/v1/version"

"$venv/bin/register_new_matrix_user" -u alice -p interop-alice-pw --no-admin \
  -k interop-shared-secret "http://127.0.0.1:$syn_client" >/dev/null
token=$(curl -sf -X POST "http://127.0.0.1:$syn_client/_matrix/client/v3/login" \
  -d '{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"password":"interop-alice-pw"}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
user="@alice:127.0.0.1:$syn_fed"
user_q=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$user")
curl -sf -X PUT -H "Authorization: Bearer $token" \
  "http://127.0.0.1:$syn_client/_matrix/client/v3/profile/$user_q/displayname" \
  -d '{"displayname":"Alice on Synapse"}' >/dev/null

answer=$("$herald" federation request GET "127.0.0.1:$syn_fed" \
  "/_matrix/federation/v1/query/profile?user_id=$user_q" --config "$dir/herald.toml" 2>"$dir/request.err") || {
  echo "herald federation request failed:"; cat "$dir/request.err"; tail -20 "$dir/synapse.log"; exit 1
}
echo "$answer"
python3 -c 'import json,sys; a=json.loads(sys.argv[1]); sys.exit(a.get("displayname")!="Alice on Synapse")' "$answer" || {
  echo "unexpected answer"; exit 1
}
# Synapse verified us by fetching our key from our key server.
grep -q "GET matrix-federation://127.0.0.1:$her_fed/_matrix/key/v2/server" "$dir/synapse.log" || {
  echo "Synapse did not fetch Herald's key"; exit 1
}
echo "synapse-interop: Synapse $synapse_version accepted Herald's signed request and fetched its key over TLS"
