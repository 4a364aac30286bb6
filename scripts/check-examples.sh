#!/usr/bin/env bash
# The Python and Node receiver snippets verify a freshly signed sample webhook
# with the Standard Webhooks libraries, which are installed into
# .cache/examples (idempotently). A library or tool that cannot be installed
# is reported and skipped, or fails the check when CHECKS_REQUIRED=1 (CI,
# .ci/run): CI must not pass a check it did not run. A verification that
# fails always fails the check.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache="$root/.cache/examples"
bin="${CARGO_TARGET_DIR:-$root/target}/debug/rewardhooks"
mkdir -p "$cache"

# A check that cannot run: an error in CI, a message elsewhere.
not_checked() {
  if [ "${CHECKS_REQUIRED:-0}" = 1 ]; then
    echo "examples: $* (CHECKS_REQUIRED=1: failing)" >&2
    exit 1
  fi
  echo "examples: $*"
}

if [ ! -x "$cache/venv/bin/python" ] || ! "$cache/venv/bin/python" -c "import standardwebhooks" 2>/dev/null; then
  rm -rf "$cache/venv"
  (python3 -m venv "$cache/venv" && "$cache/venv/bin/pip" install --quiet standardwebhooks==1.1.0) >/dev/null 2>&1 \
    || not_checked "could not install the Python standardwebhooks package; Python snippet not checked"
fi
if "$cache/venv/bin/python" -c "import standardwebhooks" 2>/dev/null; then
  "$bin" sample-webhook --event-type tier.changed | "$cache/venv/bin/python" "$root/examples/python/receiver.py" --check
fi

if command -v npm >/dev/null 2>&1; then
  if [ ! -d "$cache/node/node_modules/standardwebhooks" ]; then
    npm install --silent --prefix "$cache/node" standardwebhooks@1.1.1 >/dev/null 2>&1 \
      || not_checked "could not install the npm standardwebhooks package; Node snippet not checked"
  fi
  if [ -d "$cache/node/node_modules/standardwebhooks" ]; then
    "$bin" sample-webhook --event-type points.redeemed | NODE_PATH="$cache/node/node_modules" node "$root/examples/node/receiver.cjs" --check
  fi
else
  not_checked "npm not installed; Node snippet not checked"
fi
