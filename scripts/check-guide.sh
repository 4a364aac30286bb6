#!/usr/bin/env bash
# Follows the integration guide (docs/guides/) against `rewardhooks dev`:
# register with the guide's curl, start the example receiver with the secret,
# send a test webhook, and check the receiver verified and printed it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build --quiet --bin rewardhooks --example receiver
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
api_port=$(free_port)
receiver_port=$(free_port)

REWARDHOOKS__API__LISTEN="127.0.0.1:$api_port" ./target/debug/rewardhooks dev >"$work/dev.out" 2>"$work/dev.err" &
pids+=($!)
for _ in $(seq 1 100); do grep -q "Dev token" "$work/dev.out" 2>/dev/null && break; sleep 0.2; done
TOKEN=$(awk '/Dev token/ {print $3}' "$work/dev.out")
API="http://127.0.0.1:$api_port"
[ -n "$TOKEN" ] || { echo "guide: dev did not start"; cat "$work/dev.err"; exit 1; }

# Step 2 of the guide: register.
created=$(curl -s -X POST $API/v1/subscriptions -H "Authorization: Bearer $TOKEN" \
  -H 'Content-Type: application/json' \
  -d "{\"url\":\"http://127.0.0.1:$receiver_port/webhook\",\"event_types\":[\"tier.changed\"],\"filter\":{\"data.new_tier\":{\"\$in\":[\"gold\",\"platinum\"]}}}")
ID=$(printf %s "$created" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
SECRET=$(printf %s "$created" | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')

WEBHOOK_SECRET="$SECRET" ./target/debug/examples/receiver "127.0.0.1:$receiver_port" >"$work/receiver.out" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do grep -q "receiving webhooks" "$work/receiver.out" 2>/dev/null && break; sleep 0.1; done

# Step 3: test.
attempt=$(curl -s -X POST $API/v1/subscriptions/$ID/test -H "Authorization: Bearer $TOKEN" \
  -H 'Content-Type: application/json' -d '{"event_type":"tier.changed"}')
printf %s "$attempt" | python3 -c 'import json,sys; a=json.load(sys.stdin); assert a["success"], a; print("guide: test webhook answered", a["status_code"])'
for _ in $(seq 1 50); do grep -q "tier.changed evt_test_" "$work/receiver.out" && break; sleep 0.1; done
grep "tier.changed evt_test_" "$work/receiver.out" >/dev/null || { echo "guide: receiver did not process the webhook"; cat "$work/receiver.out"; exit 1; }
echo "guide: the example receiver verified and processed the test webhook"
