#!/usr/bin/env bash
# The Python and Node receiver snippets verify a freshly signed sample webhook
# with the Standard Webhooks libraries, which are installed into
# .cache/examples (idempotently). A library that cannot be installed is
# reported and skipped; a verification that fails fails the check.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache="$root/.cache/examples"
bin="$root/target/debug/rewardhooks"
mkdir -p "$cache"

if [ ! -x "$cache/venv/bin/python" ] || ! "$cache/venv/bin/python" -c "import standardwebhooks" 2>/dev/null; then
  rm -rf "$cache/venv"
  (python3 -m venv "$cache/venv" && "$cache/venv/bin/pip" install --quiet standardwebhooks==1.1.0) >/dev/null 2>&1 \
    || echo "examples: could not install the Python standardwebhooks package; Python snippet not checked"
fi
if "$cache/venv/bin/python" -c "import standardwebhooks" 2>/dev/null; then
  "$bin" sample-webhook --event-type tier.changed | "$cache/venv/bin/python" "$root/examples/python/receiver.py" --check
fi

if command -v npm >/dev/null 2>&1; then
  if [ ! -d "$cache/node/node_modules/standardwebhooks" ]; then
    npm install --silent --prefix "$cache/node" standardwebhooks@1.1.1 >/dev/null 2>&1 \
      || echo "examples: could not install the npm standardwebhooks package; Node snippet not checked"
  fi
  if [ -d "$cache/node/node_modules/standardwebhooks" ]; then
    "$bin" sample-webhook --event-type points.redeemed | NODE_PATH="$cache/node/node_modules" node "$root/examples/node/receiver.cjs" --check
  fi
else
  echo "examples: npm not installed; Node snippet not checked"
fi
