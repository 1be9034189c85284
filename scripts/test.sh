#!/usr/bin/env bash
# Installs everything the tests need on a fresh machine, then runs every test.
# Debian's chromium drives the browser tests (Playwright cannot download its own browser here);
# PyTorch CPU is the test-only reference for gradients.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
fi
python3 -m pip install -q -e '.[test]'

python3 -m pytest "$@"
