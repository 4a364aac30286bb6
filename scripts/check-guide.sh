#!/usr/bin/env bash
# `make guide`: runs the README quickstart and the four integration guides
# (docs/guides/*.md) exactly as written: their `sh` blocks, extracted from the
# markdown by scripts/extract-guide.py, in order, in one bash per guide
# (errexit, pipefail), from the repository root, against a `rewardhooks dev`
# this script starts. A guide whose commands fail, or that does not finish in
# GUIDE_TIMEOUT seconds (default 600: the first Rust receiver build), fails
# the check. Receivers: email and perks use Rust, CRM sync Python, fulfilment
# Node (Rust when node/npm is not installed). The guides' fixed receiver
# ports (9000, 9101-9104) must be free.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build --release --quiet --bin rewardhooks
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
command -v jq >/dev/null || { echo "guide: the guides need jq (apt-get install jq)" >&2; exit 1; }
mkdir -p .cache
work=$(mktemp -d)
dev_pid=
guide_pid=
cleanup() {
  [ -n "$guide_pid" ] && kill -- -"$guide_pid" 2>/dev/null || true
  [ -n "$dev_pid" ] && kill "$dev_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# Our own dev: its own API port and state file, so a `make run` of the user's
# is left alone (the guides' CLI finds this one through REWARDHOOKS_DEV_STATE).
export REWARDHOOKS_DEV_STATE="$work/dev.json"
REWARDHOOKS__API__LISTEN="127.0.0.1:$(free_port)" "$target/release/rewardhooks" dev >"$work/dev.out" 2>"$work/dev.err" &
dev_pid=$!
for _ in $(seq 1 300); do [ -f "$REWARDHOOKS_DEV_STATE" ] && break; sleep 0.1; done
[ -f "$REWARDHOOKS_DEV_STATE" ] || { echo "guide: dev did not start"; cat "$work/dev.err"; exit 1; }

node_receiver=node
command -v node >/dev/null && command -v npm >/dev/null || node_receiver=rust
failed=()
run() { # name file receiver [section]
  local name=$1 file=$2 receiver=$3 section=${4:-}
  python3 scripts/extract-guide.py "$file" --receiver "$receiver" ${section:+--section "$section"} >"$work/$name.sh"
  local start=$SECONDS
  # Its own process group, so whatever it left running is stopped after.
  PATH="$target/release:$PATH" setsid timeout "${GUIDE_TIMEOUT:-600}" bash -euo pipefail "$work/$name.sh" >"$work/$name.log" 2>&1 &
  guide_pid=$!
  if wait "$guide_pid"; then
    echo "guide: $name ($receiver receiver) passed in $((SECONDS - start))s"
  else
    echo "guide: $name ($receiver receiver) FAILED; its output:"
    sed 's/^/  | /' "$work/$name.log"
    failed+=("$name")
  fi
  kill -- -"$guide_pid" 2>/dev/null || true
  guide_pid=
}
run quickstart README.md rust "Quickstart: a verified webhook in a minute"
run partner README.md rust "Onboard a partner: an owner, its key, its portal"
run points-earned-email docs/guides/points-earned-email.md rust
run profile-updated-crm-sync docs/guides/profile-updated-crm-sync.md python
run points-redeemed-fulfilment docs/guides/points-redeemed-fulfilment.md "$node_receiver"
run tier-changed-perks docs/guides/tier-changed-perks.md rust
if [ ${#failed[@]} -gt 0 ]; then
  echo "guide: failed: ${failed[*]} (dev's log: see above or rerun)" >&2
  tail -20 "$work/dev.err" >&2
  exit 1
fi
echo "guide: the quickstart and all four guides ran as written"
