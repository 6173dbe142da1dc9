#!/usr/bin/python3
"""`make demo` runs to the end on real components (it checks itself that
the daemon inflated under host pressure, gave memory back, and exited cleanly) and leaves
nothing behind: no process, cgroup (v1 or v2), mount, zram swap or state directory."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
import abtest  # noqa: E402
import stall  # noqa: E402


NAME = "abt-demo"   # abtest names the demo's environment so


def snapshot():
    """What the demo could leave behind. Other test runs (abt-* environments of their own)
    may run beside it on a developer's machine: only the demo's own things count, and swap
    devices, which carry no name, only when nothing else ran."""
    own_memcg = stall.memcg_v1_own()

    def cmdline(p):
        try:
            return open("/proc/%s/cmdline" % p, "rb").read()
        except OSError:
            return b""
    return {
        "cgroup2": sorted(d for d in os.listdir(stall.cgroup2_mount()) if d == NAME),
        "memcg": sorted(d for d in os.listdir(own_memcg) if d == NAME),
        "mounts": sorted(l.split()[4] for l in open("/proc/self/mountinfo") if NAME in l),
        "processes": sorted(p for p in os.listdir("/proc") if p.isdigit() and NAME.encode() in cmdline(p)),
        "swaps": open("/proc/swaps").read().splitlines()[1:],
        "others": sorted(d for d in os.listdir(stall.cgroup2_mount()) if d.startswith("abt-") and d != NAME),
    }


def main():
    if os.geteuid() != 0:
        print("SKIP: needs root")
        sys.exit(abtest.SKIP)
    before = snapshot()
    r = subprocess.run(["/usr/bin/python3", os.path.join(abtest.SRCDIR, "scripts/demo.py"), abtest.BUILDDIR],
                       stdin=subprocess.DEVNULL)
    after = snapshot()
    leftovers = {k: sorted(set(after[k]) - set(before[k])) for k in before}
    leftovers = {k: v for k, v in leftovers.items() if v and k != "others"}
    if before["others"] or after["others"]:
        leftovers.pop("swaps", None)   # another run's zram may come and go meanwhile
    if r.returncode != 0:
        print("FAIL: the demo exited with %d" % r.returncode)
        sys.exit(1)
    if leftovers:
        print("FAIL: the demo left things behind: %s" % leftovers)
        sys.exit(1)
    print("PASS: demo ran and left nothing behind")


main()
