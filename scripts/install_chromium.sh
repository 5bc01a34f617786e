#!/usr/bin/env bash
# Headless Chromium for tests/interpret/test_interpret.py (the HTML report must render with its plots and no console
# errors). Installs the Debian `chromium` package with apt-get when /usr/bin/chromium is missing; no browser
# is downloaded by a test tool. Idempotent: CI calls it before pytest.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  echo "chromium present: /usr/bin/chromium"
  exit 0
fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core
/usr/bin/chromium --version 2>/dev/null || { echo "chromium did not install to /usr/bin/chromium" >&2; exit 1; }
