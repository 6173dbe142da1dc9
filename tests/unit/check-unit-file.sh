#!/bin/sh
# The shipped unit: systemd parses it without complaint and its exposure stays low
# (systemd-analyze security; systemd-oomd's own unit is at 2.0). Fails above 3.0.
set -eu
unit=$1
out=$(systemd-analyze security --offline=yes "$unit" 2>&1)
echo "$out" | tail -1
level=$(echo "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
[ -n "$level" ] || { echo "no exposure level in the output"; exit 1; }
awk -v l="$level" 'BEGIN { exit !(l <= 3.0) }' || { echo "exposure $level > 3.0"; exit 1; }
# unknown keys or sections are warnings in verify's output
bad=$(systemd-analyze verify "$unit" 2>&1 | grep -E "Unknown (key|section)|Invalid" || true)
[ -z "$bad" ] || { echo "$bad"; exit 1; }
