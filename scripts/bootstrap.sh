#!/usr/bin/env bash
# Idempotent bootstrap for a Debian 12 machine:
#   1. apt packages tor and i2pd (only when their binaries are missing),
#   2. an i2pd >= 2.51 for private I2P test networks: when neither the system
#      i2pd nor a cached build is new enough, build it once from Debian trixie's
#      source package and cache the binary in ${XDG_CACHE_HOME:-~/.cache}/anonmail/
#      (outside the repo; reused until deleted). ANONMAIL_SKIP_I2PD_BUILD=1 skips it.
#   3. a virtualenv in .venv with `pip install -e '.[dev]'` (only when .venv is
#      missing or pyproject.toml, setup.py or the simulator's compiled loop changed since the
#      last install).
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

# -------------------------------------------------- mail-client tools ---
# The bridge's tests drive it with mail clients nobody here wrote (swaks, neomutt in tmux,
# fetchmail). They are optional: tests skip, saying why, when a binary is missing.
MAIL_TOOLS=()
for tool in swaks neomutt fetchmail tmux; do
    have_bin "$tool" || MAIL_TOOLS+=("$tool")
done
if [ "${#MAIL_TOOLS[@]}" -eq 0 ]; then
    say "mail-client test tools: swaks, neomutt, fetchmail, tmux already installed (skipped)"
elif ! is_root; then
    note "mail-client test tools missing (their tests will skip): ${MAIL_TOOLS[*]}"
    note "as root: apt-get install -y --no-install-recommends ${MAIL_TOOLS[*]}"
else
    say "installing mail-client test tools: ${MAIL_TOOLS[*]}"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get install -y -qq --no-install-recommends "${MAIL_TOOLS[@]}" >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${MAIL_TOOLS[@]}" >/dev/null; }; } \
        || note "apt-get install ${MAIL_TOOLS[*]} failed; their tests will skip"
fi

# ------------------------------------------------------------ i2pd step ---
# Debian 12's i2pd 2.45.1 drops every peer on 127.0.0.0/8, so the private I2P
# test network needs >= 2.51 (docs/i2p.md). We fetch trixie's
# source package through a private apt source list and state directory (the
# machine's apt configuration stays untouched) and build only the binary.

I2PD_MIN="2.51.0"
CACHE_BASE="${XDG_CACHE_HOME:-$HOME/.cache}/anonmail"
I2PD_BUILD_DEPS=(build-essential libboost-program-options-dev libboost-filesystem-dev
                 libboost-system-dev libboost-date-time-dev libssl-dev zlib1g-dev)

i2pd_version() {  # i2pd_version BIN: prints X.Y.Z, or fails
    "$1" --version 2>/dev/null | sed -n 's/^i2pd version \([0-9][0-9.]*\).*/\1/p' | head -n1 | grep .
}

version_ge() {  # version_ge A B: true when A >= B
    [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" = "$2" ]
}

usable_i2pd() {  # prints the path of an i2pd >= I2PD_MIN (cached build first), or fails
    local bin ver
    for bin in "$CACHE_BASE"/i2pd-*/i2pd "$(command -v i2pd 2>/dev/null || true)" /usr/sbin/i2pd; do
        [ -n "$bin" ] && [ -x "$bin" ] || continue
        ver="$(i2pd_version "$bin")" || continue
        if version_ge "$ver" "$I2PD_MIN"; then
            printf '%s %s\n' "$bin" "$ver"
            return 0
        fi
    done
    return 1
}

i2pd_build_hint() {
    echo "bootstrap: to build it by hand, as root: apt-get install -y ${I2PD_BUILD_DEPS[*]}" >&2
    echo "bootstrap: then run 'make bootstrap' again (ANONMAIL_SKIP_I2PD_BUILD=1 skips this step;" >&2
    echo "bootstrap: the I2P integration tests then fail with a message saying so)." >&2
}

build_i2pd() {
    local work="$CACHE_BASE/i2pd-build" apt_dir src_dir dsc ver orig log start pid rc=0 t
    local missing=() pkg
    for pkg in "${I2PD_BUILD_DEPS[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        if ! is_root; then
            echo "bootstrap: building i2pd needs these packages: ${missing[*]}" >&2
            i2pd_build_hint
            exit 1
        fi
        say "installing i2pd build dependencies: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
            || { echo "bootstrap: error: apt-get install of the i2pd build dependencies failed" >&2; i2pd_build_hint; exit 1; }
    fi

    rm -rf "$work"
    apt_dir="$work/apt"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$work/src"
    printf 'deb-src http://deb.debian.org/debian trixie main\n' >"$apt_dir/sources.list"
    local apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list"
                    -o "Dir::Etc::SourceParts=/dev/null"
                    -o "Dir::State::Lists=$apt_dir/lists"
                    -o "Dir::Cache=$apt_dir/cache"
                    -o "APT::Sandbox::User=root")
    is_root || apt_opts+=(-o "Debug::NoDropPrivs=true")
    say "fetching the i2pd source package from Debian trixie (private apt source list)"
    apt-get -qq "${apt_opts[@]}" update >"$work/apt.log" 2>&1 \
        || { echo "bootstrap: error: apt-get update for deb-src trixie failed (log: $work/apt.log):" >&2
             tail -n 5 "$work/apt.log" >&2; i2pd_build_hint; exit 1; }
    (cd "$work/src" && apt-get -qq "${apt_opts[@]}" source --download-only i2pd/trixie) >>"$work/apt.log" 2>&1 \
        || { echo "bootstrap: error: apt-get source i2pd/trixie failed (log: $work/apt.log):" >&2
             tail -n 5 "$work/apt.log" >&2; i2pd_build_hint; exit 1; }
    dsc="$(ls "$work"/src/i2pd_*.dsc | head -n1)"
    ver="$(basename "$dsc" .dsc)"; ver="${ver#i2pd_}"; ver="${ver%%-*}"; ver="${ver#*:}"
    orig="$(ls "$work"/src/i2pd_*.orig.tar.* | head -n1)"
    [ -n "$ver" ] && [ -f "$orig" ] || die "unexpected i2pd source package layout in $work/src"
    src_dir="$work/src/build"
    mkdir -p "$src_dir"
    tar -xf "$orig" -C "$src_dir" --strip-components=1

    log="$work/build.log"
    say "building i2pd $ver (about 6 min on 2 cores; log: $log)"
    start="$(date +%s)"
    (cd "$src_dir" && exec make -j2 USE_UPNP=no DEBUG=no) >"$log" 2>&1 &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        for t in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
        kill -0 "$pid" 2>/dev/null && note "still building i2pd ($(( $(date +%s) - start ))s)"
    done
    wait "$pid" || rc=$?
    if [ "$rc" -ne 0 ] || [ ! -x "$src_dir/i2pd" ]; then
        echo "bootstrap: error: building i2pd $ver failed (make exit $rc); last lines of $log:" >&2
        tail -n 20 "$log" >&2
        i2pd_build_hint
        exit 1
    fi
    strip "$src_dir/i2pd" 2>/dev/null || true
    local got
    got="$(i2pd_version "$src_dir/i2pd")" || die "the freshly built i2pd does not run: $src_dir/i2pd"
    mkdir -p "$CACHE_BASE/i2pd-$got"
    cp "$src_dir/i2pd" "$CACHE_BASE/i2pd-$got/i2pd.tmp"
    mv -f "$CACHE_BASE/i2pd-$got/i2pd.tmp" "$CACHE_BASE/i2pd-$got/i2pd"
    rm -rf "$work"
    say "i2pd $got built in $(( $(date +%s) - start ))s: $CACHE_BASE/i2pd-$got/i2pd"
}

if [ "${ANONMAIL_SKIP_I2PD_BUILD:-0}" = 1 ]; then
    say "i2pd >= $I2PD_MIN for private test networks: skipped (ANONMAIL_SKIP_I2PD_BUILD=1)"
elif found="$(usable_i2pd)"; then
    say "i2pd >= $I2PD_MIN for private test networks: ${found%% *} (${found#* }) (skipped)"
else
    say "no i2pd >= $I2PD_MIN found (system: $(i2pd_version /usr/sbin/i2pd 2>/dev/null || echo none)); building one"
    build_i2pd
fi

# ------------------------------------------------------------ venv step ---

# The compiled simulator loop is built by the install too: rebuild when its source changes.
want_hash="$(cat pyproject.toml setup.py simulations/_fastloop.pyx 2>/dev/null | sha256sum | cut -d' ' -f1)"
have_hash=""
[ -f "$STAMP" ] && have_hash="$(cat "$STAMP")"

if [ "$NEED_VENV" -eq 0 ] && [ "$want_hash" = "$have_hash" ]; then
    say "virtualenv .venv: up to date with pyproject.toml and setup.py (skipped)"
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
        say "pyproject.toml, setup.py or simulations/_fastloop.pyx changed: pip install -e '.[dev]'"
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
