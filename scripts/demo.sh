#!/bin/sh
# make demo: install, build, then run the live demo (scripts/demo.py) as root.
set -eu
cd "$(dirname "$0")/.."
BUILD=${1:-build}
if [ "$(id -u)" != 0 ]; then
        echo "make demo needs root (real machined, cgroups, QEMU guests)." >&2
        exit 1
fi
exec /usr/bin/python3 scripts/demo.py "$BUILD"
