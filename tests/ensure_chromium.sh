#!/usr/bin/env bash
# `make test` runs this first: tests/test_report.py drives Debian's chromium through playwright and fails
# (never skips) without it, so install it when it is missing (tests/apt_install.sh). Nothing to do when chromium
# is on PATH or GENFORGE_SKIP_BROWSER=1 (the browser test is skipped on purpose).
set -euo pipefail
source "$(dirname "$0")/apt_install.sh"

if command -v chromium >/dev/null 2>&1 || [ "${GENFORGE_SKIP_BROWSER:-}" = "1" ]; then
    exit 0
fi
APT_OPTIONS=()
apt_install "chromium (for tests/test_report.py)" GENFORGE_SKIP_BROWSER chromium
command -v chromium >/dev/null 2>&1 || { echo "error: apt-get installed chromium but it is not on PATH" >&2; exit 1; }
