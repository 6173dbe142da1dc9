#!/bin/sh
# The shipped unit: systemd parses it without complaint and its exposure stays low
# (systemd-analyze security; systemd-oomd's own unit is at 2.0). Fails above MAX (default 2.0),
# and lists what still counts against it.
set -eu
unit=$1
max=${2:-2.0}
out=$(systemd-analyze security --offline=yes "$unit" 2>&1)
echo "$out" | grep '✗' || true
echo "$out" | tail -1
level=$(echo "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
[ -n "$level" ] || { echo "no exposure level in the output"; exit 1; }
awk -v l="$level" -v m="$max" 'BEGIN { exit !(l <= m) }' || { echo "exposure $level > $max"; exit 1; }
# unknown keys or sections are warnings in verify's output
bad=$(systemd-analyze verify "$unit" 2>&1 | grep -E "Unknown (key|section)|Invalid" || true)
[ -z "$bad" ] || { echo "$bad"; exit 1; }
