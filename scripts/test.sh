#!/usr/bin/env bash
# Set up, then run the test suite: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

# Debian packages some tests need, installed when missing (as root, or through sudo where it
# needs no password): headless Chromium for the browser test, and PostgreSQL's server for the
# studies shared through PostgreSQL (the tests start a throwaway cluster of their own and stop it).
want=()
{ command -v chromium >/dev/null && command -v chromedriver >/dev/null; } || want+=(chromium chromium-driver)
{ command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } || want+=(postgresql)
if [ ${#want[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || { command -v sudo >/dev/null && sudo -n true 2>/dev/null && SUDO="sudo -n"; }
  if command -v apt-get >/dev/null && { [ "$(id -u)" = 0 ] || [ -n "$SUDO" ]; }; then
    log=$(mktemp)
    if ! { $SUDO apt-get update -qq &&
           $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}"; } >"$log" 2>&1; then
      tail -n 5 "$log" >&2
      echo "test.sh: could not install ${want[*]}; the tests that need them will say what is missing" >&2
    fi
    rm -f "$log"
  else
    echo "test.sh: ${want[*]} missing and no apt-get as root to install them; the tests that need them will say what is missing" >&2
  fi
fi

# The floor plan (pyproject's import-linter contracts: layers, and what data and the meta-analysis
# never import) and the manual (docs/ as a site: a broken link, anchor or docstring fails), before
# the tests.
.venv/bin/lint-imports --no-cache
export NO_MKDOCS_2_WARNING=1
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
.venv/bin/mkdocs build --strict --quiet --site-dir "$site"

.venv/bin/python -m pytest "$@"
