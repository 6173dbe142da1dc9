#!/bin/bash
# `make sim`: run every controller over the three scenarios (4, 100 and 1,000 VMs at 30 %
# overcommit), keep a CSV per run, plot them, and refresh the summary table in
# docs/simulation.md. Deterministic: the same build gives the same figures.
#   tests/sim/run.sh [BUILD_DIR]      (CSVs go to BUILD_DIR/sim, plots to docs/sim)
set -euo pipefail
cd "$(dirname "$0")/../.."

BUILD=${1:-build}
SIM=$BUILD/tests/sim/autoballoon-sim
OUT=$BUILD/sim
PLOTS=docs/sim
DOC=docs/simulation.md
CONTROLLERS="none seed proxmox mom default"
SCENARIOS="4 100 1000"

[ -x "$SIM" ] || { echo "$SIM not built (ninja -C $BUILD tests/sim/autoballoon-sim)" >&2; exit 1; }
mkdir -p "$OUT" "$PLOTS"

table=$(mktemp)
trap 'rm -f "$table"' EXIT
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

# Refresh the generated table in docs/simulation.md, between its two markers.
python3 - "$DOC" "$table" <<'PY'
import sys
doc, table = sys.argv[1], open(sys.argv[2]).read()
text = open(doc).read()
begin, end = "<!-- sim-table-begin -->", "<!-- sim-table-end -->"
a, b = text.index(begin) + len(begin), text.index(end)
open(doc, "w").write(text[:a] + "\n" + table + text[b:])
PY
echo "CSVs in $OUT, plots in $PLOTS, table in $DOC"
