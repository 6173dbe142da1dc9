#!/bin/bash
# `make sim`: run every controller over the three scenarios (4, 100 and 1,000 VMs at 30 %
# overcommit) and over the real benchmark's timeline (tests/bench/overcommit-timeline.json),
# keep a CSV per run, plot them, and refresh the two summary tables in docs/simulation.md.
# Deterministic: the same build gives the same figures.
#   tests/sim/run.sh [BUILD_DIR]          (CSVs go to BUILD_DIR/sim, plots to docs/sim)
#   tests/sim/run.sh --check [BUILD_DIR]  no plots; fails when the tables in docs/simulation.md
#                                         are not what this build's simulator prints (make check)
set -euo pipefail
cd "$(dirname "$0")/../.."

CHECK=0
if [ "${1:-}" = --check ]; then
        CHECK=1
        shift
fi
BUILD=${1:-build}
SIM=$BUILD/tests/sim/autoballoon-sim
OUT=$BUILD/sim
PLOTS=docs/sim
DOC=docs/simulation.md
CONTROLLERS="none seed proxmox mom default"
SCENARIOS="4 100 1000"
TIMELINE=tests/bench/overcommit-timeline.json

[ -x "$SIM" ] || { echo "$SIM not built (ninja -C $BUILD tests/sim/autoballoon-sim)" >&2; exit 1; }
mkdir -p "$OUT" "$PLOTS"
# --check draws nothing
gnuplot() {
        if [ $CHECK = 1 ]; then cat >/dev/null; else command gnuplot "$@"; fi
}

table=$(mktemp)
ttable=$(mktemp)
trap 'rm -f "$table" "$ttable"' EXIT
first=1
for n in $SCENARIOS; do
        args=(--vms "$n" --overcommit 1.3 --name "vms$n" --csv-dir "$OUT")
        [ $first = 1 ] && args+=(--header)
        first=0
        "$SIM" "${args[@]}" | tee -a "$table"
done

# One figure per run: memory of one VM of each workload (actual size, and its working set
# dashed), and host pressure with the three PSI thresholds. One overview per scenario.
for n in $SCENARIOS; do
        for c in $CONTROLLERS; do
                csv=$OUT/vms$n-$c.csv
                gnuplot <<EOF
set terminal pngcairo size 900,600 font ",9" noenhanced
set output "$PLOTS/vms$n-$c.png"
set datafile separator ","
set lmargin at screen 0.07
set rmargin at screen 0.72
set key autotitle columnhead outside right
set multiplot layout 2,1 title "$n VMs, 30 % overcommit, controller: $c (solid: balloon size, dashed: working set)"
set ylabel "GiB"
set xrange [0:900]
set yrange [0:*]
set format x ""
plot for [i=9:16:2] "$csv" using 1:i with lines lw 1.5 lc (i-7)/2, \
     for [i=10:16:2] "$csv" using 1:i with lines dt 2 lw 1 lc (i-8)/2 notitle
set format x "%g"
set xlabel "time (s)"
set ylabel "host stall %"
set yrange [0:100]
plot "$csv" using 1:2 with lines lc rgb "#c03030" title "host stall", \
     5 with lines dt 3 lc rgb "#808080" title "low", \
     15 with lines dt 3 lc rgb "#606060" title "medium", \
     40 with lines dt 3 lc rgb "#303030" title "critical"
unset multiplot
EOF
        done
        gnuplot <<EOF
set terminal pngcairo size 900,600 font ",9" noenhanced
set output "$PLOTS/vms$n-overview.png"
set datafile separator ","
set lmargin at screen 0.07
set rmargin at screen 0.85
set key outside right
set multiplot layout 2,1 title "$n VMs, 30 % overcommit: every controller"
set ylabel "guest memory, % of maxima"
set xrange [0:900]
set format x ""
plot for [c in "$CONTROLLERS"] "$OUT/vms$n-".c.".csv" using 1:5 with lines lw 1.5 title c
set format x "%g"
set xlabel "time (s)"
set ylabel "host stall %"
set yrange [0:100]
plot for [c in "$CONTROLLERS"] "$OUT/vms$n-".c.".csv" using 1:2 with lines lw 1 title c
unset multiplot
EOF
done

# The real benchmark's timeline: every controller with swap, none and default with free page
# reporting and without swap. One figure per run (each guest's balloon size and what the host
# holds for it; host use, swap and budget; host stall), one overview per host variant.
tcmd=(--timeline "$TIMELINE" --name overcommit --csv-dir "$OUT" --header)
"$SIM" "${tcmd[@]}" | tee "$ttable"
ram_mib=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["host_ram_mib"])' "$TIMELINE")
dur=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["duration_sec"])' "$TIMELINE")
for variant in swap fpr noswap; do
        case $variant in
        swap) title="zram swap"; ctl="$CONTROLLERS" ;;
        fpr) title="zram swap, free page reporting on"; ctl="none default" ;;
        noswap) title="no swap"; ctl="none default" ;;
        esac
        for c in $ctl; do
                csv=$OUT/overcommit-$variant-$c.csv
                gnuplot <<EOF
set terminal pngcairo size 900,800 font ",9" noenhanced
set output "$PLOTS/overcommit-$variant-$c.png"
set datafile separator ","
set lmargin at screen 0.08
set rmargin at screen 0.72
set key outside right
set multiplot layout 3,1 title "overcommit timeline, $title, controller: $c"
set ylabel "MiB"
set xrange [0:$dur]
set yrange [0:*]
set format x ""
plot for [i=0:2] "$csv" using 1:(column(sprintf("vm%d_timeline_actual_gib", i))*1024) with lines lw 1.5 lc i+1 title sprintf("vm%d balloon size", i), \
     for [i=0:2] "$csv" using 1:(column(sprintf("vm%d_rss_gib", i))*1024) with lines dt 2 lw 1 lc i+1 title sprintf("vm%d host RSS", i), \
     for [i=0:2] "$csv" using 1:(column(sprintf("vm%d_swap_gib", i))*1024) with lines dt 3 lw 1 lc i+1 title sprintf("vm%d host swap", i)
set yrange [*:*]
plot "$csv" using 1:(column("host_used_gib")*1024) with lines lw 1.5 lc rgb "#3060c0" title "host used", \
     "$csv" using 1:(column("swapped_gib")*1024) with lines lw 1.5 lc rgb "#c06030" title "swap in use", \
     "$csv" using 1:(column("over_budget_gib")*1024) with lines dt 2 lc rgb "#303030" title "over budget (< 0: room)", \
     $ram_mib with lines dt 3 lc rgb "#808080" title "host RAM"
set format x "%g"
set xlabel "time (s)"
set ylabel "host stall %"
set yrange [0:100]
plot "$csv" using 1:2 with lines lc rgb "#c03030" title "host stall"
unset multiplot
EOF
        done
        gnuplot <<EOF
set terminal pngcairo size 900,600 font ",9" noenhanced
set output "$PLOTS/overcommit-$variant-overview.png"
set datafile separator ","
set lmargin at screen 0.08
set rmargin at screen 0.85
set key outside right
set multiplot layout 2,1 title "overcommit timeline, $title: every controller"
set ylabel "swap in use, MiB"
set xrange [0:$dur]
set format x ""
plot for [c in "$ctl"] "$OUT/overcommit-$variant-".c.".csv" using 1:(column("swapped_gib")*1024) with lines lw 1.5 title c
set format x "%g"
set xlabel "time (s)"
set ylabel "host used, MiB"
plot for [c in "$ctl"] "$OUT/overcommit-$variant-".c.".csv" using 1:(column("host_used_gib")*1024) with lines lw 1 title c, \
     $ram_mib with lines dt 3 lc rgb "#808080" title "host RAM"
unset multiplot
EOF
done

# Refresh the generated tables in docs/simulation.md, between their markers (--check: compare).
python3 - "$DOC" "$table" "$ttable" "$CHECK" \
        "BUILD/tests/sim/autoballoon-sim ${tcmd[*]//$OUT/BUILD/sim}" <<'PY'
import difflib, sys
doc, table, ttable, check, cmd = (sys.argv[1], open(sys.argv[2]).read(), open(sys.argv[3]).read(),
                                  sys.argv[4] == "1", sys.argv[5])
text = open(doc).read()
def put(text, name, body):
    begin, end = "<!-- %s-begin -->" % name, "<!-- %s-end -->" % name
    a, b = text.index(begin) + len(begin), text.index(end)
    return text[:a] + "\n" + body + text[b:]
new = put(text, "sim-table", table)
new = put(new, "sim-overcommit-table", "Made by `make sim` (`tests/sim/run.sh`), which ran `%s`.\n\n%s" % (cmd, ttable))
if check:
    if new != text:
        sys.stdout.writelines(difflib.unified_diff(text.splitlines(True), new.splitlines(True), doc, doc + " (this build)"))
        print("%s: the simulator's tables are out of date: run make sim and commit" % doc)
        sys.exit(1)
    print("%s: the simulator's tables are what this build prints" % doc)
else:
    open(doc, "w").write(new)
PY
[ $CHECK = 1 ] || echo "CSVs in $OUT, plots in $PLOTS, table in $DOC"
