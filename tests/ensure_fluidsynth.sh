#!/usr/bin/env bash
# `make test` runs this first: tests/test_music_render.py renders MIDI through FluidSynth's command-line program
# with Debian's General MIDI SoundFont, so install both (Debian's fluidsynth and fluid-soundfont-gm) when either is
# missing. Nothing to do when `fluidsynth` is on PATH and the SoundFont is in place, or GENFORGE_SKIP_FLUIDSYNTH=1
# (the FluidSynth test then skips on purpose): fast and idempotent. As root apt-get runs directly, otherwise
# through sudo; one `apt-get update` runs first so the install never meets stale package lists. Quiet: apt's
# output is shown only when it fails.
set -euo pipefail

SOUNDFONTS=(/usr/share/sounds/sf2/FluidR3_GM.sf2 /usr/share/sounds/sf2/default-GM.sf2)
have_soundfont() { for sf in "${SOUNDFONTS[@]}"; do [ -f "$sf" ] && return 0; done; return 1; }

if { command -v fluidsynth >/dev/null 2>&1 && have_soundfont; } || [ "${GENFORGE_SKIP_FLUIDSYNTH:-}" = "1" ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: fluidsynth or its General MIDI SoundFont is missing and there is no apt-get to install them;" \
         "install Debian's fluidsynth and fluid-soundfont-gm, or set GENFORGE_SKIP_FLUIDSYNTH=1 to skip on purpose" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "error: fluidsynth or its SoundFont is missing; installing them needs root or sudo" \
             "(apt-get install -y fluidsynth fluid-soundfont-gm), or set GENFORGE_SKIP_FLUIDSYNTH=1 to skip on purpose" >&2
        exit 1
    fi
    SUDO="sudo"
fi
echo "fluidsynth is missing: installing Debian's fluidsynth and fluid-soundfont-gm for tests/test_music_render.py" >&2
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! { $SUDO apt-get update -qq \
       && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            fluidsynth fluid-soundfont-gm; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "error: apt-get could not install fluidsynth and fluid-soundfont-gm" >&2
    exit 1
fi
command -v fluidsynth >/dev/null 2>&1 || { echo "error: apt-get installed fluidsynth but it is not on PATH" >&2; exit 1; }
have_soundfont || { echo "error: apt-get installed fluid-soundfont-gm but no SoundFont is in /usr/share/sounds/sf2" >&2; exit 1; }
