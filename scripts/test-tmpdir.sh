#!/usr/bin/env bash
# Print the directory the test suite keeps its temporary files in: /dev/shm (tmpfs) when it is
# writable and may hold executables, else $TMPDIR or /tmp.
#
# Why: the in-memory network tests run a dozen nodes that commit replay tags and mail with
# SQLite's synchronous=FULL, an fsync per commit. On this VM's disk those fsyncs were ~40 % of
# a network test's time (test_traffic_shape_does_not_depend_on_what_the_user_sends: 44-45 s on
# /tmp, 25-28 s on /dev/shm). The product still fsyncs; the tests check what is written and
# what survives a killed process, which a page cache in RAM keeps just as a disk does.
set -u
shm=/dev/shm
if [ -d "$shm" ] && [ -w "$shm" ]; then
    probe=$(mktemp -p "$shm" anonmail-probe.XXXXXX 2>/dev/null) || probe=
    if [ -n "$probe" ]; then
        printf '#!/bin/sh\nexit 0\n' > "$probe" && chmod 700 "$probe" && "$probe" 2>/dev/null
        ok=$?
        rm -f "$probe"
        if [ "$ok" -eq 0 ]; then
            echo "$shm"
            exit 0
        fi
    fi
fi
echo "${TMPDIR:-/tmp}"
