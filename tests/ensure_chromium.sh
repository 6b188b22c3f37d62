#!/usr/bin/env bash
# `make test` runs this first: tests/test_report.py drives Debian's chromium through playwright and fails
# (never skips) without it, so install it when it is missing. Nothing to do when chromium is on PATH or
# GENFORGE_SKIP_BROWSER=1 (the browser test is skipped on purpose). As root apt-get runs directly, otherwise
# through sudo; `apt-get update` runs only if the install fails without fresh package lists.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 || [ "${GENFORGE_SKIP_BROWSER:-}" = "1" ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: chromium is not on PATH and there is no apt-get to install it; install Debian's chromium" \
         "or set GENFORGE_SKIP_BROWSER=1 to skip the browser test on purpose" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "error: chromium is not on PATH; installing it needs root or sudo (apt-get install -y chromium)," \
             "or set GENFORGE_SKIP_BROWSER=1 to skip the browser test on purpose" >&2
        exit 1
    fi
    SUDO="sudo"
fi
echo "chromium is missing: installing Debian's chromium for tests/test_report.py (apt-get install -y chromium)" >&2
apt_install() { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
apt_install || { $SUDO apt-get update -qq && apt_install; }
command -v chromium >/dev/null 2>&1 || { echo "error: apt-get installed chromium but it is not on PATH" >&2; exit 1; }
