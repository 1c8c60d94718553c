#!/usr/bin/env bash
# Set up, then run the test suite: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

# The browser test drives headless Chromium: install Debian's packages when they are missing
# (as root, or through sudo where it needs no password). Without them that one test skips.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  SUDO=""
  [ "$(id -u)" = 0 ] || { command -v sudo >/dev/null && sudo -n true 2>/dev/null && SUDO="sudo -n"; }
  if command -v apt-get >/dev/null && { [ "$(id -u)" = 0 ] || [ -n "$SUDO" ]; }; then
    log=$(mktemp)
    if ! { $SUDO apt-get update -qq &&
           $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver; } >"$log" 2>&1; then
      tail -n 5 "$log" >&2
      echo "test.sh: could not install chromium and chromium-driver; the browser test will skip" >&2
    fi
    rm -f "$log"
  else
    echo "test.sh: chromium/chromium-driver missing and no apt-get as root to install them; the browser test will skip" >&2
  fi
fi

exec .venv/bin/python -m pytest "$@"
