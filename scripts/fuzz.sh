#!/bin/bash
# `make fuzz`: build the libFuzzer targets with clang (-fsanitize=fuzzer,address,undefined) and
# run each for FUZZ_RUNS executions (10 M by default), one target at a time, at nice 19.
# Prints one line per target (executions, exec/s, coverage, corpus, crashes) and writes them to
# $BUILD/fuzz/summary.txt; fails if any target crashed. docs/fuzzing.md says what they mean.
#
#   FUZZ_BUILD    build directory (default build-fuzz)
#   FUZZ_RUNS     executions per target (default 10000000)
#   FUZZ_TARGETS  targets to run (default: all of tests/fuzz/meson.build)
#
# Each target starts from its seed corpus (tests/fuzz/corpus-*, a 0x80 driver byte put before
# every file, as the smoke driver does) and from what earlier runs found ($BUILD/fuzz/T/corpus).
# A crash leaves $BUILD/fuzz/T/crash-*: rerun it with `$BUILD/tests/fuzz/T FILE`.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${FUZZ_BUILD:-build-fuzz}
RUNS=${FUZZ_RUNS:-10000000}
TARGETS=${FUZZ_TARGETS:-fuzz-qmp fuzz-config fuzz-knob fuzz-bus-property fuzz-state}

scripts/install-deps.sh

if [ ! -f "$BUILD/build.ninja" ]; then
        CC=clang nice -n 19 meson setup "$BUILD" -Dfuzz=true -Db_sanitize=address,undefined \
                -Db_lundef=false -Dbuildtype=debug -Dwerror=true
fi
# shellcheck disable=SC2086
nice -n 19 ninja -C "$BUILD" $(for t in $TARGETS; do echo "tests/fuzz/$t"; done)

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

summary=$BUILD/fuzz/summary.txt
mkdir -p "$BUILD/fuzz"
printf '%-18s %12s %8s %6s %7s %9s %7s %8s\n' target executions exec/s cov ft corpus crashes seconds > "$summary"
rc=0
for t in $TARGETS; do
        d=$BUILD/fuzz/$t
        corpus=tests/fuzz/corpus-${t#fuzz-}
        rm -rf "$d/seeds"
        mkdir -p "$d/seeds" "$d/corpus"
        for f in "$corpus"/*; do
                { printf '\200'; cat "$f"; } > "$d/seeds/${f##*/}"
        done
        echo "== $t: $RUNS executions (log: $d/fuzz.log)"
        t0=$(date +%s)
        # QMP inputs up to 1 KiB: a stream is fed in reads as small as one byte, so the cost of
        # an input grows with its length; 1 KiB still holds several glued messages and more
        # than the 512-byte limit of the small-limit mode. At libFuzzer's default of 4 KiB the
        # rate fell to ~1,700/s here. The other targets keep the default.
        extra=
        [ "$t" = fuzz-qmp ] && extra=-max_len=1024
        # in-process, one job: the machine's other work keeps its CPU
        status=0
        # shellcheck disable=SC2086
        nice -n 19 "$BUILD/tests/fuzz/$t" -runs="$RUNS" -print_final_stats=1 $extra \
                -artifact_prefix="$d/" "$d/corpus" "$d/seeds" > "$d/fuzz.log" 2>&1 || status=$?
        secs=$(( $(date +%s) - t0 ))
        done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$d/fuzz.log" | tail -1 || true)
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$d/fuzz.log")
        cov=$(echo "$done_line" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
        ft=$(echo "$done_line" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
        corp=$(echo "$done_line" | sed -n 's/.* corp: \([0-9]*\/[0-9A-Za-z]*\).*/\1/p')
        crashes=$(find "$d" -maxdepth 1 \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
        rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$d/fuzz.log")
        printf '%-18s %12s %8s %6s %7s %9s %7s %8s\n' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" \
                "${corp:-?}" "$crashes" "$secs" | tee -a "$summary"
        if [ "$status" != 0 ] || [ "$crashes" != 0 ] || [ "${execs:-0}" -lt "$RUNS" ]; then
                echo "$t: exit status $status, $crashes crash file(s); see $d/fuzz.log" >&2
                tail -n 30 "$d/fuzz.log" >&2
                rc=1
        fi
done
echo "== summary ($summary)"
cat "$summary"
exit $rc
