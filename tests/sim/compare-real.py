#!/usr/bin/python3
"""The simulator's overcommit table beside the real benchmark's runs, in docs/simulation.md.

    tests/sim/compare-real.py BUILD/bench-overcommit.json

Reads the model's figures from the table `make sim` wrote (between the sim-overcommit-table
markers) and the real runs from the JSON `make bench-overcommit` wrote; rewrites the table
between the sim-vs-real markers, each real figure per run ("12 / 0" for two runs)."""
import json
import sys
import time

DOC = "docs/simulation.md"
HOSTS = {"stock": "swap", "fpr": "swap, FPR on", "noswap": "no swap"}   # (patched, libvirt: not modelled)


def section(text, name):
    begin, end = "<!-- %s-begin -->" % name, "<!-- %s-end -->" % name
    return text.index(begin) + len(begin), text.index(end)


def main():
    runs = json.load(open(sys.argv[1]))["runs"]
    text = open(DOC).read()
    a, b = section(text, "sim-overcommit-table")
    model = {}
    for line in text[a:b].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 5 and cells[0] in HOSTS.values():
            model[(cells[0], cells[1])] = dict(oom=cells[2], host_oom=cells[3], swap=cells[4])
    rows = ["| host | controller | host swap-out MiB, model | real | guest OOM kills, model | real | "
            "VMs killed by the host, model | real |", "|---|---|---|---|---|---|---|---|"]
    dates = set()
    for variant, host in HOSTS.items():
        for ctl in ("none", "seed", "proxmox", "mom", "default"):
            real = sorted((r for r in runs if r["variant"] == variant and r["controller"] == ctl),
                          key=lambda r: r.get("run", 0))
            if not real or (host, ctl) not in model:
                continue
            dates.update(time.strftime("%Y-%m-%d", time.gmtime(r["started"])) for r in real if r.get("started"))
            m = model[(host, ctl)]
            rows.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
                host, ctl, m["swap"], " / ".join("%.0f" % r["swap_out_mib"] for r in real),
                m["oom"], " / ".join(str(r["guest_oom_kills"]) for r in real),
                m["host_oom"], " / ".join(str(r["host_oom_kills"]) for r in real)))
    body = ("Made by `tests/sim/compare-real.py BUILD/bench-overcommit.json` from the table above and "
            "the real runs of %s (one figure per run).\n\n%s\n" % (", ".join(sorted(dates)) or "?", "\n".join(rows)))
    c, d = section(text, "sim-vs-real")
    open(DOC, "w").write(text[:c] + "\n" + body + text[d:])
    print(body)


if __name__ == "__main__":
    main()
