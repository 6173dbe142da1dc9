#!/usr/bin/python3
"""make bench-overcommit: the overcommit scenario (tests/bench/overcommit-timeline.json) with
real QEMU (TCG) guests, one run per controller and variant, each in a fresh machined env
(tests/lib/overcommit.py). Results merge into the JSON (--json; a run of some rows keeps the
others), then the table (median of the runs, each run's value, default/none) is printed and
written into docs/benchmarks.md between its overcommit markers, and gnuplot plots of each
row's first run go to docs/bench/.

  AB_ENV_PREFIX=abb- AB_BUILDDIR=build /usr/bin/python3 tests/bench/bench-overcommit.py \\
      [--controllers none,seed,default,proxmox,mom] [--variants stock,patched,fpr,noswap,libvirt] \\
      [--runs 2] [--json build/bench-overcommit.json] [--quick] [--no-docs]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
import abtest  # noqa: E402
import overcommit  # noqa: E402
import realguest  # noqa: E402
from abtest import log  # noqa: E402

MIB = realguest.MIB
DOC = os.path.join(abtest.SRCDIR, "docs/benchmarks.md")
PLOTS = os.path.join(abtest.SRCDIR, "docs/bench")
BEGIN, END = "<!-- bench-overcommit:begin (written by tests/bench/bench-overcommit.py) -->", \
    "<!-- bench-overcommit:end -->"
FIGURES = [  # key, column title, format
    ("guest_oom_kills", "guest OOM kills", "%d"),
    ("host_vm_kills", "VMs killed by host OOM", "%d"),
    ("swap_out_mib", "host swap-out MiB", "%.0f"),
    ("psi_some_s", "PSI some s", "%.1f"),
    ("peak_mib", "peak host mem+swap MiB", "%.0f"),
    ("n_moves", "balloon moves", "%d"),
]


def figures(r):
    """The table's figures of one run."""
    return dict(guest_oom_kills=r["guest_oom_kills"],
                host_vm_kills=len(r["vms_dead"]),
                swap_out_mib=overcommit.swap_growth_mib(r["samples"]), psi_some_s=r["psi_some_ms"] / 1000.0,
                peak_mib=r["peak_mib"], n_moves=r["n_moves"])


def row_key(r):
    return "%s/%s" % (r["variant"], r["controller"])


def table(results):
    """Markdown table: per row, each figure as `median (run1, run2)`, and default/none."""
    rows = {}
    for r in results:
        rows.setdefault(row_key(r), []).append(r)
    order = [(v, c) for v in overcommit.VARIANTS for c in overcommit.CONTROLLERS]
    med = {}
    lines = ["| variant | controller | runs | " + " | ".join(t for _, t, _ in FIGURES) + " |",
             "|---|---|---|" + "---|" * len(FIGURES)]
    for v, c in order:
        rs = rows.get("%s/%s" % (v, c))
        if not rs:
            continue
        cells = []
        med[(v, c)] = {}
        for key, _, fmt in FIGURES:
            vals = [figures(r)[key] for r in rs]
            m = statistics.median(vals)
            med[(v, c)][key] = m
            each = ", ".join(fmt % x for x in vals)
            cells.append((fmt % m) + (" (%s)" % each if len(vals) > 1 else ""))
        lines.append("| %s | %s | %d | %s |" % (v, c, len(rs), " | ".join(cells)))
    ratios = []
    for v in overcommit.VARIANTS:
        if (v, "default") in med and (v, "none") in med:
            parts = []
            for key, title, _ in FIGURES[:5]:
                a, b = med[(v, "default")][key], med[(v, "none")][key]
                parts.append("%s %s" % (title, "%.2f" % (a / b) if b else ("n/a (none: 0)")))
            ratios.append("- %s, default/none: %s" % (v, "; ".join(parts)))
    return "\n".join(lines), ratios


def plot(r, datdir):
    """Two panels over time: per VM balloon (solid), QEMU RSS (dashed), VmSwap (dotted);
    host memcg usage and swap (MiB) and PSI some % of each second."""
    if not shutil.which("gnuplot"):
        log("no gnuplot: no plots")
        return None
    os.makedirs(datdir, exist_ok=True)
    os.makedirs(PLOTS, exist_ok=True)
    vms = sorted(r["samples"][0]["vms"]) if r["samples"] else []
    dat = os.path.join(datdir, "%s.dat" % r["label"])
    with open(dat, "w") as f:
        f.write("# t host_usage host_swap psi_pct " + " ".join("%s_actual %s_rss %s_swap" % (v, v, v) for v in vms) + "\n")
        for s in r["samples"]:
            cols = [s["t"], s["usage"] / MIB, s["swap"] / MIB, s["psi_pct"]]
            for v in vms:
                x = s["vms"][v]
                cols += [x["actual"] / MIB if x["actual"] is not None else "NaN", x["rss"] / MIB, x["swap"] / MIB]
            f.write(" ".join(str(c) for c in cols) + "\n")
    png = os.path.join(PLOTS, "overcommit-%s.png" % r["label"])
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    series = []
    for i, v in enumerate(vms):
        c = colors[i % len(colors)]
        base = 5 + 3 * i
        series += ["'%s' u 1:%d w l lw 2 lc rgb '%s' t '%s balloon'" % (dat, base, c, v),
                   "'%s' u 1:%d w l dt 2 lc rgb '%s' t '%s RSS'" % (dat, base + 1, c, v),
                   "'%s' u 1:%d w l dt 3 lc rgb '%s' t '%s swap'" % (dat, base + 2, c, v)]
    events = "".join("set arrow from %d, graph 0 to %d, graph 1 nohead dt 4 lc rgb 'gray'\n" % (e["t"], e["t"])
                     for e in r.get("jobs", []))
    script = """set terminal pngcairo size 1000,700 font ',9'
set output '%(png)s'
set multiplot layout 2,1 title "overcommit, %(label)s: %(host)d MiB host, %(swap)d MiB swap, 3 x %(guest)d MiB guests"
set key outside right
set grid
set ylabel 'MiB'
%(events)splot [0:%(dur)d] [0:*] %(series)s
unset arrow
set y2label 'PSI some %%'
set y2tics
set ytics nomirror
set xlabel 's'
plot [0:%(dur)d] [0:*] '%(dat)s' u 1:2 w l lw 2 t 'host usage', '%(dat)s' u 1:3 w l lw 2 t 'host swap', \\
     '%(dat)s' u 1:4 axes x1y2 w l t 'PSI some %%'
unset multiplot
""" % dict(png=png, label=r["label"], host=r["host_ram_mib"], swap=r["swap_mib"], guest=r["guest_ram_mib"],
           dur=r["duration_sec"], dat=dat, series=", ".join(series), events=events)
    p = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True)
    if p.returncode != 0:
        log("gnuplot failed: %s" % p.stderr[-500:])
        return None
    return png


def write_doc(results, tbl, ratios, plots, args):
    text = open(DOC).read() if os.path.exists(DOC) else ""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(max(r["started"] for r in results)))
    head = subprocess.run(["git", "-C", abtest.SRCDIR, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    body = [BEGIN, "",
            "Last written %s (HEAD %s), %d runs%s. Each cell: median (each run). Swap-out: the "
            "host memcg's own swap growth (sum of the rises of its `memory.stat` swap, second by "
            "second). PSI: `some` total of the env's cgroup2 subtree (every VM's scope) over "
            "the timeline. Peak: `memory.memsw.max_usage_in_bytes` of the host memcg. Guest OOM "
            "kills: `Killed process` lines in the guests' dmesg. VMs killed by host OOM: QEMUs "
            "dead at the end (the no-swap variant's failure)." % (
                when, head, len(results), ", quick form" if args.quick else ""),
            "", tbl, ""] + ratios + [""]
    for label, png in sorted(plots.items()):
        body.append("![%s](bench/%s)" % (label, os.path.basename(png)))
    body += ["", END]
    block = "\n".join(body)
    if BEGIN in text and END in text:
        a, b = text.index(BEGIN), text.index(END) + len(END)
        text = text[:a] + block + text[b:]
    else:
        text = text.rstrip("\n") + "\n\n## Overcommit with real guests (`make bench-overcommit`)\n\n" + block + "\n"
    with open(DOC, "w") as f:
        f.write(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--controllers", default=",".join(overcommit.CONTROLLERS))
    ap.add_argument("--variants", default=",".join(overcommit.VARIANTS))
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--json", default=os.path.join(abtest.BUILDDIR, "bench-overcommit.json"))
    ap.add_argument("--timeline", default=overcommit.TIMELINE)
    ap.add_argument("--quick", action="store_true", help="the timeline's short form, 1 run, none and default")
    ap.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md nor the plots")
    ap.add_argument("--fresh", action="store_true", help="do not merge with the results already in --json")
    ap.add_argument("--report", action="store_true", help="no runs: the table, plots and docs from --json")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("SKIP: needs root")
        return abtest.SKIP
    if args.quick:
        if args.controllers == ",".join(overcommit.CONTROLLERS):
            args.controllers = "none,default"
        if args.variants == ",".join(overcommit.VARIANTS):
            args.variants = "stock"
        if "--runs" not in sys.argv:
            args.runs = 1
    ctrls, variants = args.controllers.split(","), args.variants.split(",")
    for c in ctrls:
        if c not in overcommit.CONTROLLERS:
            ap.error("unknown controller %s" % c)
    for v in variants:
        if v not in overcommit.VARIANTS:
            ap.error("unknown variant %s" % v)
    if args.report:
        d = json.load(open(args.json))
        args.quick = any(r.get("quick") for r in d["runs"])
        return report(d["runs"], args, os.path.join(os.path.dirname(os.path.abspath(args.json)),
                                                    "bench-overcommit"), [])
    timeline = overcommit.load_timeline(args.timeline, quick=args.quick)
    outdir = realguest.images()
    plan = [(v, c) for v in variants for c in ctrls if c in overcommit.VARIANTS[v][2]]
    log("plan: %s x %d runs, timeline %d s" % (", ".join("%s/%s" % p for p in plan), args.runs,
                                              timeline["duration_sec"]))
    old = []
    if not args.fresh and os.path.exists(args.json):
        try:
            old = json.load(open(args.json)).get("runs", [])
            if any(r.get("quick") != args.quick for r in old):
                old = []
        except (ValueError, OSError):
            old = []
    done = {(v, c) for v, c in plan}
    results = [r for r in old if (r["variant"], r["controller"]) not in done]
    new, failed = [], []
    keep = os.path.join(os.path.dirname(os.path.abspath(args.json)), "bench-overcommit")
    with overcommit.Interrupt():
        for v, c in plan:
            for i in range(args.runs):
                label = "%s-%s" % (v, c) + ("-%d" % (i + 1) if args.runs > 1 else "")
                try:
                    r = overcommit.run_one(c, v, timeline, outdir, label=label, keep_dir=keep)
                except abtest.Fail as e:   # the setup broke (a guest did not boot...): next run
                    log("%s FAILED: %s" % (label, e))
                    failed.append(label)
                    continue
                r["run"], r["quick"] = i + 1, args.quick
                new.append(r)
                results.append(r)
                with open(args.json, "w") as f:   # after every run: a crash keeps what was done
                    json.dump(dict(timeline=timeline, runs=results), f, indent=1)
    log("results in %s" % args.json)
    return report(results, args, keep, failed)


def report(results, args, keep, failed):
    tbl, ratios = table(results)
    print("\n" + tbl + "\n" + "\n".join(ratios))
    if not args.no_docs:
        plots = {}
        for r in results:
            if r.get("run", 1) == 1:
                png = plot(r, keep)
                if png:
                    plots[r["label"]] = png
        write_doc(results, tbl, ratios, plots, args)
        log("table written to %s, plots to %s" % (DOC, PLOTS))
    if failed:
        log("runs that failed: %s" % ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
