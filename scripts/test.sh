#!/usr/bin/env bash
# Installs everything the tests need on a fresh machine, then runs every test.
# Debian's chromium drives the browser tests (Playwright cannot download its own browser here);
# Debian's redis-server backs the Redis session store tests; PyTorch CPU is the test-only
# reference for gradients and for the PyTorch export.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium fonts-dejavu-core)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
python3 -m pip install -q -e '.[test]'

python3 -m pytest "$@"
