#!/usr/bin/env bash
# `make test` runs this first: tests/test_music_render.py renders MIDI through FluidSynth's command-line program
# with Debian's General MIDI SoundFont, so install both (Debian's fluidsynth and fluid-soundfont-gm) when either is
# missing (tests/apt_install.sh). Nothing to do when `fluidsynth` is on PATH and the SoundFont is in place, or
# GENFORGE_SKIP_FLUIDSYNTH=1 (the FluidSynth test then skips on purpose): fast and idempotent.
set -euo pipefail
source "$(dirname "$0")/apt_install.sh"

SOUNDFONTS=(/usr/share/sounds/sf2/FluidR3_GM.sf2 /usr/share/sounds/sf2/default-GM.sf2)
have_soundfont() { for sf in "${SOUNDFONTS[@]}"; do [ -f "$sf" ] && return 0; done; return 1; }

if { command -v fluidsynth >/dev/null 2>&1 && have_soundfont; } || [ "${GENFORGE_SKIP_FLUIDSYNTH:-}" = "1" ]; then
    exit 0
fi
APT_OPTIONS=(--no-install-recommends)
apt_install "fluidsynth or its General MIDI SoundFont (for tests/test_music_render.py)" GENFORGE_SKIP_FLUIDSYNTH \
    fluidsynth fluid-soundfont-gm
command -v fluidsynth >/dev/null 2>&1 || { echo "error: apt-get installed fluidsynth but it is not on PATH" >&2; exit 1; }
have_soundfont || { echo "error: apt-get installed fluid-soundfont-gm but no SoundFont is in /usr/share/sounds/sf2" >&2; exit 1; }
