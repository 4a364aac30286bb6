#!/usr/bin/env bash
# Installs Debian's headless browser and its WebDriver for the portal test
# (tests/it/portal.rs): chromium and chromium-driver. Idempotent: does
# nothing when both are on PATH. Needs root (apt-get).
set -euo pipefail

if command -v chromedriver >/dev/null 2>&1 && { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; }; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-browser: apt-get is missing; install chromium and chromedriver yourself" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    echo "install-browser: need root for apt-get install chromium chromium-driver" >&2
    exit 1
  fi
fi
echo "install-browser: installing chromium and chromium-driver (Debian)"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null
command -v chromedriver >/dev/null 2>&1 || { echo "install-browser: chromedriver still missing" >&2; exit 1; }
