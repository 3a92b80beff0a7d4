#!/usr/bin/env bash
# Idempotent bootstrap for a Debian 12 machine:
#   1. apt packages tor and i2pd (only when their binaries are missing),
#   2. a virtualenv in .venv with `pip install -e '.[dev]'` (only when .venv is
#      missing or pyproject.toml changed since the last install).
# Works from any cwd. As root it installs what is missing; as another user it
# only checks, and says what to install when something is missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

START_NS="$(date +%s%N)"
VENV="$ROOT/.venv"
STAMP="$VENV/.anonmail-installed"
MIN_PY_MAJOR=3
MIN_PY_MINOR=11

say()  { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
die()  { printf 'bootstrap: error: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# Debian puts i2pd in /usr/sbin, often not on a normal user's PATH.
have_bin() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }

# One bootstrap at a time per checkout (make test may run concurrently).
if command -v flock >/dev/null 2>&1; then
    LOCK="${TMPDIR:-/tmp}/anonmail-bootstrap-$(printf '%s' "$ROOT" | sha256sum | cut -c1-16).lock"
    if { exec 9>>"$LOCK"; } 2>/dev/null; then
        flock 9
    fi
fi

# ---------------------------------------------------------------- python ---

py_ok() {  # py_ok EXE: true when EXE runs and is >= 3.11
    "$1" -c "import sys; sys.exit(0 if sys.version_info >= ($MIN_PY_MAJOR, $MIN_PY_MINOR) else 1)" \
        >/dev/null 2>&1
}

find_python() {
    local cand exe
    for cand in python3.11 python3 python3.12 python3.13 python3.14; do
        exe="$(command -v "$cand" 2>/dev/null)" || continue
        if py_ok "$exe"; then
            printf '%s\n' "$exe"
            return 0
        fi
    done
    return 1
}

py_can_venv() {  # the venv module and ensurepip (Debian splits them into python3-venv)
    "$1" -c 'import venv, ensurepip' >/dev/null 2>&1
}

# ------------------------------------------------------------ apt step ---

# PIDs of daemons started by the distribution's service scripts (not by tests:
# those run as root with their own config files, and must never be touched).
service_pids() {  # service_pids tor|i2pd
    local name="$1" pid user args
    for pid in $(pgrep -x "$name" || true); do
        user="$(ps -o user= -p "$pid" 2>/dev/null | tr -d ' ')" || continue
        args="$(ps -o args= -p "$pid" 2>/dev/null)" || continue
        case "$name" in
            tor)
                if [ "$user" = debian-tor ] \
                   || [[ "$args" == *tor-service-defaults-torrc* ]] \
                   || [[ "$args" == *" -f /etc/tor/torrc"* ]]; then
                    printf '%s\n' "$pid"
                fi ;;
            i2pd)
                if [ "$user" = i2pd ] \
                   || [[ "$args" == *--service* ]] \
                   || [[ "$args" == */etc/i2pd/* ]]; then
                    printf '%s\n' "$pid"
                fi ;;
        esac
    done
}

stop_new_service() {  # stop_new_service NAME "PIDS-BEFORE"
    local name="$1" before="$2" pid new=() i
    for pid in $(service_pids "$name"); do
        case " $before " in *" $pid "*) ;; *) new+=("$pid") ;; esac
    done
    [ "${#new[@]}" -eq 0 ] && return 0
    say "stopping the system $name service the install started (pid ${new[*]})"
    if command -v service >/dev/null 2>&1 && [ -e "/etc/init.d/$name" ]; then
        service "$name" stop >/dev/null 2>&1 || true
    fi
    for pid in "${new[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for i in $(seq 1 50); do
        local alive=0
        for pid in "${new[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" -eq 0 ] && return 0
        sleep 0.1
    done
    for pid in "${new[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}

PY="$(find_python || true)"

APT_PKGS=()
have_bin tor  || APT_PKGS+=(tor)
have_bin i2pd || APT_PKGS+=(i2pd)
NEED_VENV=0
if [ ! -x "$VENV/bin/python" ] || ! py_ok "$VENV/bin/python"; then
    NEED_VENV=1
fi
if [ "$NEED_VENV" -eq 1 ]; then
    if [ -z "$PY" ]; then
        APT_PKGS+=(python3 python3-venv)
    elif ! py_can_venv "$PY"; then
        case "$PY" in
            /usr/bin/*) APT_PKGS+=(python3-venv) ;;
            *) die "$PY cannot create virtualenvs (no venv/ensurepip module); install them for that Python" ;;
        esac
    fi
fi

if [ "${#APT_PKGS[@]}" -eq 0 ]; then
    say "apt packages: tor and i2pd already installed (skipped)"
elif ! is_root; then
    {
        echo "bootstrap: missing system packages: ${APT_PKGS[*]}"
        echo "bootstrap: this script installs them only when run as root; please run, as root:"
        echo "    apt-get update && apt-get install -y --no-install-recommends ${APT_PKGS[*]}"
        echo "bootstrap: then run it again."
    } >&2
    exit 1
else
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install ${APT_PKGS[*]} by hand"
    say "installing apt packages: ${APT_PKGS[*]}"
    tor_before="$(service_pids tor | tr '\n' ' ')"
    i2pd_before="$(service_pids i2pd | tr '\n' ' ')"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${APT_PKGS[@]}" >/dev/null
    stop_new_service tor  "$tor_before"
    stop_new_service i2pd "$i2pd_before"
    have_bin tor  || die "tor is still missing after apt-get install"
    have_bin i2pd || die "i2pd is still missing after apt-get install"
    [ -n "$PY" ] || PY="$(find_python || true)"
fi

# ------------------------------------------------------------ venv step ---

want_hash="$(sha256sum pyproject.toml | cut -d' ' -f1)"
have_hash=""
[ -f "$STAMP" ] && have_hash="$(cat "$STAMP")"

if [ "$NEED_VENV" -eq 0 ] && [ "$want_hash" = "$have_hash" ]; then
    say "virtualenv .venv: up to date with pyproject.toml (skipped)"
else
    if [ "$NEED_VENV" -eq 1 ]; then
        [ -n "$PY" ] || die "no Python >= $MIN_PY_MAJOR.$MIN_PY_MINOR found (tried python3.11, python3, python3.12, python3.13, python3.14)"
        say "creating virtualenv .venv with $PY ($("$PY" -c 'import platform; print(platform.python_version())'))"
        rm -rf "$VENV"
        "$PY" -m venv "$VENV"
    fi
    if [ -z "$have_hash" ]; then
        say "installing the project into .venv: pip install -e '.[dev]'"
    else
        say "pyproject.toml changed: pip install -e '.[dev]'"
    fi
    rm -f "$STAMP"
    # -qq: only errors. (Plain --quiet would also print this machine's pip-config
    # warnings about absent local indexes, once per package.)
    "$VENV/bin/python" -m pip install -qq --disable-pip-version-check --no-input -e '.[dev]'
    printf '%s\n' "$want_hash" >"$STAMP"
fi

END_NS="$(date +%s%N)"
ELAPSED_MS=$(( (END_NS - START_NS) / 1000000 ))
say "bootstrap done ($(( ELAPSED_MS / 1000 )).$(printf '%01d' $(( (ELAPSED_MS % 1000) / 100 )))s)"
