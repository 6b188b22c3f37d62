# Sourced by tests/ensure_*.sh, which `make test` runs first: installs the Debian packages a test needs.
#
#   apt_install WHAT SKIP_VARIABLE PACKAGE...   (APT_OPTIONS: extra options for apt-get install, an array)
#
# As root apt-get runs directly, otherwise through sudo. The install is tried on the package lists there are and,
# when it fails, once more after `apt-get update`. Quiet: apt's output is shown only when it fails. Without
# apt-get, or without root or sudo, it says in one line what to install by hand, or which variable skips the test
# on purpose, and returns 1.
apt_install() {
    local what="$1" skip="$2"
    shift 2
    local packages="$*" sudo=""
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "error: $what is missing and there is no apt-get to install it; install Debian's $packages," \
             "or set $skip=1 to skip its test on purpose" >&2
        return 1
    fi
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null 2>&1; then
            echo "error: $what is missing; installing it needs root or sudo (apt-get install -y $packages)," \
                 "or set $skip=1 to skip its test on purpose" >&2
            return 1
        fi
        sudo="sudo"
    fi
    echo "$what is missing: installing Debian's $packages" >&2
    local log
    log="$(mktemp)"
    local install=($sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${APT_OPTIONS[@]+"${APT_OPTIONS[@]}"} "$@")
    if ! { "${install[@]}" || { $sudo apt-get update -qq && "${install[@]}"; }; } >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        echo "error: apt-get could not install $packages" >&2
        return 1
    fi
    rm -f "$log"
}
