#!/bin/bash
# `make check`: build with ASan+UBSan and -Werror, run every meson suite, print one honest
# summary line. Fails on any failure, timeout, or skipped test (a skip here means a piece of
# the test environment was missing, which on a fresh Debian 12 root machine is a bug).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-check}

if [ "$(id -u)" != 0 ]; then
        echo "make check needs root (real machined, cgroups, QEMU guests)." >&2
        exit 1
fi

scripts/install-deps.sh

if [ ! -f "$BUILD/build.ninja" ]; then
        CC=${CC:-gcc} meson setup "$BUILD" -Db_sanitize=address,undefined -Db_lundef=false \
                -Dwerror=true -Dbuildtype=debug -Dlibvirt=enabled
fi
ninja -C "$BUILD"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# Every suite meson knows, the quick ones first; a suite not in the preferred order still runs.
registered=$(meson introspect --tests "$BUILD" | python3 -c '
import json, sys
print(" ".join(sorted({s.split(":", 1)[-1] for t in json.load(sys.stdin) for s in t["suite"]})))')
order=""
for suite in ${SUITES:-unit fuzz integration sim e2e} $registered; do
        case " $order " in *" $suite "*) ;; *) order="$order $suite" ;; esac
done
[ -n "${SUITES:-}" ] && order=$SUITES

# Each suite and the fewest tests it may hold: a suite that vanished or shrank (its interpreter
# not found at setup, a meson.build that stopped registering its tests) fails here instead of
# passing with less. Raise a figure when you add tests; never lower one to make a run pass.
EXPECTED="unit:15 fuzz:5 integration:26 sim:6 e2e:12"
rc=0
counts=$(meson introspect --tests "$BUILD" | python3 -c '
import collections, json, sys
c = collections.Counter(s.split(":", 1)[-1] for t in json.load(sys.stdin) for s in t["suite"])
print(" ".join("%s:%d" % kv for kv in c.items()))')
for want in $EXPECTED; do
        suite=${want%%:*} min=${want#*:} have=0
        for c in $counts; do [ "${c%%:*}" = "$suite" ] && have=${c#*:}; done
        if [ "$have" -lt "$min" ]; then
                echo "== suite $suite: $have tests registered, expected at least $min" >&2
                rc=1
        fi
done

rm -f "$BUILD"/meson-logs/testlog-*.json
for suite in $order; do
        case " $registered " in
        *" $suite "*) ;;
        *) echo "== suite $suite: no tests registered"; rc=1; continue ;;
        esac
        echo "== suite $suite"
        meson test -C "$BUILD" --suite "$suite" --print-errorlogs --num-processes 1 \
                --logbase "testlog-$suite" || rc=1
done

# One summary over every suite's log.
s=0
python3 - "$BUILD"/meson-logs/testlog-*.json <<'PY' || s=$?
import json, sys, collections
counts = collections.Counter()
bad = []
for path in sys.argv[1:]:
    if "*" in path:
        continue   # no suite ran
    for line in open(path):
        t = json.loads(line)
        counts[t["result"]] += 1
        if t["result"] != "OK":
            bad.append(f'{t["name"]}: {t["result"]}')
for b in bad:
    print("not ok:", b)
passed = counts["OK"]
failed = sum(v for k, v in counts.items() if k != "OK")
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
[ $rc = 0 ] && [ $s = 0 ]
