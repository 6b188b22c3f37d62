#!/usr/bin/env bash
# `make test` runs this first: tests/test_spoken_digits.py makes the built-in spoken-digit clips with espeak-ng's
# command-line program, so install Debian's espeak-ng when it is missing (tests/apt_install.sh). Nothing to do when
# `espeak-ng` is on PATH, or GENFORGE_SKIP_ESPEAK=1 (the espeak-ng tests then skip on purpose): fast and idempotent.
set -euo pipefail
source "$(dirname "$0")/apt_install.sh"

if command -v espeak-ng >/dev/null 2>&1 || [ "${GENFORGE_SKIP_ESPEAK:-}" = "1" ]; then
    exit 0
fi
APT_OPTIONS=(--no-install-recommends)
apt_install "espeak-ng (for tests/test_spoken_digits.py)" GENFORGE_SKIP_ESPEAK espeak-ng
command -v espeak-ng >/dev/null 2>&1 || { echo "error: apt-get installed espeak-ng but it is not on PATH" >&2; exit 1; }
