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
# and checks the answer. Then it drives Herald's sender through its intake
# API (`sender_api_token`) and proves Synapse accepts the transactions
# (`PUT /_matrix/federation/v1/send/{txnId}`) Herald builds:
#   - an m.direct_to_device EDU to @alice: Herald's metrics count a sent
#     transaction and EDU, Synapse logs the txn and answers 200, and the
#     message reaches Alice's /sync (so Synapse processed the EDU);
#   - a PDU for a room Synapse does not know: Synapse answers 200 (ignoring
#     the PDU, as it does for unknown rooms), Herald counts it sent.
# Everything runs in a temp directory and is stopped at the end, pass or fail.
set -euo pipefail
cd "$(dirname "$0")/.."
herald=$(realpath "${1:-target/release/herald}")
venv=.tools/synapse-venv
synapse_version=1.163.0

# (Not synapse.__version__: inside this git work tree it carries the repo's
# branch and commit, "1.163.0 (b=main,…)", and would never match.)
if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('matrix-synapse') != '$synapse_version')" 2>/dev/null; then
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
sender_api_token = "interop-sender-token"
EOF

"$venv/bin/python" -m synapse.app.homeserver -c "$dir/homeserver.yaml" --generate-keys >/dev/null
"$venv/bin/python" -m synapse.app.homeserver -c "$dir/homeserver.yaml" >"$dir/synapse.out" 2>&1 &
pids+=($!)
RUST_LOG="info,sqlx=warn,herald::sender=debug" \
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

# The sender: Herald's transactions, handed to it through the intake API.
syn_name="127.0.0.1:$syn_fed"
her_name="127.0.0.1:$her_fed"
admin="http://127.0.0.1:$her_admin"
fail() {
  echo "synapse-interop: $*"
  echo "--- herald.log (tail)"; tail -30 "$dir/herald.log"
  echo "--- synapse.log (tail)"; tail -30 "$dir/synapse.log"
  exit 1
}
intake() { # intake pdus|edus JSON
  curl -sf -X POST -H "Authorization: Bearer interop-sender-token" \
    -H "Content-Type: application/json" "$admin/_herald/v1/send/$1" -d "$2" >/dev/null ||
    fail "POST /_herald/v1/send/$1 failed"
}
metric() { # metric 'series{labels}' → its value, 0 when absent
  curl -sf "$admin/metrics" | awk -v k="$1" '$1 == k { v = $2 } END { print v + 0 }'
}
wait_metric() { # wait_metric 'series{labels}' MIN: up to 30 s
  for _ in $(seq 1 150); do
    [ "$(metric "$1")" -ge "$2" ] && return 0
    grep -E "transaction (failed|rejected)" "$dir/herald.log" && fail "Herald's transaction to Synapse failed"
    sleep 0.2
  done
  fail "$1 did not reach $2 within 30 s"
}
# Synapse's access log line for a transaction from Herald it answered with 200.
txn_ok() { # txn_ok TXN_ID
  grep -qE "\{$her_name\} Processed request: .* 200 \"PUT /_matrix/federation/v1/send/$1 HTTP/1.1\"" "$dir/synapse.log"
}

# 1. An EDU Synapse handles without room state: a to-device message to Alice.
message_id="interop-$(date +%s%N)"
intake edus "$(python3 -c 'import json, sys
her, syn, mid = sys.argv[1:]
print(json.dumps({"edus": [{"edu_type": "m.direct_to_device", "destinations": [syn], "content": {
  "sender": "@bob:" + her, "type": "m.test", "message_id": mid,
  "messages": {"@alice:" + syn: {"*": {"hello": "world", "message_id": mid}}}}}]}))' "$her_name" "$syn_name" "$message_id")"
wait_metric 'herald_sender_edus_sent_total' 1
wait_metric 'herald_sender_transactions_total{outcome="sent"}' 1
edu_txn=$(grep -oE "Received txn [0-9]+ from $her_name\. \(PDUs: 0, EDUs: 1\)" "$dir/synapse.log" | head -1 | cut -d' ' -f3)
[ "$edu_txn" ] || fail "Synapse did not log the transaction with the EDU"
txn_ok "$edu_txn" || fail "Synapse did not answer 200 to transaction $edu_txn"
# Synapse processed it: the message is in Alice's to-device inbox.
sync=$(curl -sf -H "Authorization: Bearer $token" "http://127.0.0.1:$syn_client/_matrix/client/v3/sync?timeout=0") ||
  fail "Alice's /sync failed"
python3 -c 'import json, sys
sync, sender, mid = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
events = sync.get("to_device", {}).get("events", [])
if not any(e.get("type") == "m.test" and e.get("sender") == sender
           and e.get("content") == {"hello": "world", "message_id": mid} for e in events):
    sys.exit("to_device in Alice'"'"'s /sync: %s" % json.dumps(events))' \
  "$sync" "@bob:$her_name" "$message_id" || fail "the to-device message did not reach Alice's /sync"
echo "synapse-interop: Synapse accepted Herald's transaction $edu_txn (m.direct_to_device EDU) and delivered it to Alice"

# 2. A PDU for a room Synapse does not know: the transaction is still
#    accepted (200); Synapse ignores the PDU.
room_id="!interop-$message_id:$her_name"
intake pdus "$(python3 -c 'import json, sys, time
her, syn, room, eid = sys.argv[1:]
ts = int(time.time() * 1000)
print(json.dumps({"events": [{"event_id": eid, "room_id": room, "destinations": [syn], "pdu": {
  "room_id": room, "type": "m.room.message", "sender": "@bob:" + her, "origin_server_ts": ts,
  "content": {"msgtype": "m.text", "body": "hello"}, "depth": 1, "prev_events": [], "auth_events": []}}]}))' \
  "$her_name" "$syn_name" "$room_id" "\$interop-$message_id")"
wait_metric 'herald_sender_pdus_sent_total' 1
wait_metric 'herald_sender_transactions_total{outcome="sent"}' 2
pdu_txn=$(grep -oE "Received txn [0-9]+ from $her_name\. \(PDUs: 1, EDUs: 0\)" "$dir/synapse.log" | head -1 | cut -d' ' -f3)
[ "$pdu_txn" ] || fail "Synapse did not log the transaction with the PDU"
txn_ok "$pdu_txn" || fail "Synapse did not answer 200 to transaction $pdu_txn"
grep -qF "Ignoring PDU for unknown room_id: $room_id" "$dir/synapse.log" ||
  fail "Synapse did not read the PDU"
[ "$(metric 'herald_sender_transactions_total{outcome="failed"}')" -eq 0 ] &&
  [ "$(metric 'herald_sender_transactions_total{outcome="rejected"}')" -eq 0 ] ||
  fail "Herald counted failed or rejected transactions"
echo "synapse-interop: Synapse accepted Herald's transaction $pdu_txn (a PDU, ignored: unknown room)"
