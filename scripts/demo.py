#!/usr/bin/python3
"""make demo: autoballoond live, on real components.

Two real QEMU (TCG) guests booting Debian 12's kernel with the patched virtio_balloon are
registered with a real systemd-machined (private bus, tests/lib/machined-env.sh). They and a
host workload share "host RAM": a v1 memory cgroup limit, with zram swap so going over it is
reclaim with real PSI stalls rather than an instant OOM kill. The daemon watches the real
/proc/pressure/memory. Act 1: the guests warm up (vm-idle touches and frees memory, vm-busy
keeps a working set). Act 2: a host workload grows past what is left; the daemon inflates the
balloons, taking from the idle guest first. Act 3: the workload ends; after the cool-down the
daemon gives the memory back. Everything is stopped and removed at the end."""
import os
import sys
import threading
import time

SRC = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(SRC, "tests/lib"))
os.environ.setdefault("AB_SRCDIR", SRC)
if len(sys.argv) > 1:
    os.environ["AB_BUILDDIR"] = os.path.abspath(sys.argv[1])
import abtest  # noqa: E402
import realguest  # noqa: E402
from abtest import check, log  # noqa: E402

MIB = realguest.MIB
HOST_RAM = 1000 * MIB       # the memcg limit both guests and the host workload live in
HOST_WORKLOAD_MIB = 420
HOST_WORKLOAD_SECONDS = 40


def psi_avg10():
    line = open("/proc/pressure/memory").readline()   # some avg10=...
    return float(line.split()[1].split("=")[1])


class Table:
    """One line a second: host pressure, host memcg usage, and each VM's balloon and RSS."""

    def __init__(self, env, memcg, guests):
        self.env, self.memcg, self.guests = env, memcg, guests
        self.stop = threading.Event()
        self.rows = []
        self.header()

    def header(self):
        cols = "".join("  %-28s" % ("%s actual/target rss" % g.name) for g in self.guests)
        print("%6s %7s %6s %8s%s" % ("t(s)", "psi10", "level", "hostmem", cols), flush=True)

    def row(self, t0):
        try:
            level = self.env.get(abtest.AB, abtest.AB_PATH, abtest.AB_MANAGER, "HostPressure")
        except Exception:  # noqa: BLE001 — the daemon may be restarting
            level = "?"
        cells = []
        for g in self.guests:
            path = self.env.machine_path(g.name)
            try:
                a, t = self.env.ab_get(path, "ActualMemory"), self.env.ab_get(path, "TargetMemory")
            except Exception:  # noqa: BLE001
                a = t = 0
            cells.append("  %4d/%4d M %4d M       " % (a // MIB, t // MIB, realguest.rss_swap_bytes(g.pid) // MIB))
        line = "%6.0f %7.2f %6s %6d M%s" % (time.monotonic() - t0, psi_avg10(), level,
                                             self.memcg.usage() // MIB, "".join(cells))
        self.rows.append(line)
        print(line, flush=True)


def demo(env):
    outdir = realguest.images()
    memcg = realguest.HostMemcg(env, "host", HOST_RAM, swap=1536 * MIB)
    try:
        log("booting two guests (QEMU TCG, 512 MiB each) in %d MiB of host RAM..." % (HOST_RAM // MIB))
        idle = realguest.start_guest(env, "vm-idle", outdir, mem="512M", memcg=memcg, deflate_on_oom="on")
        busy = realguest.start_guest(env, "vm-busy", outdir, mem="512M", memcg=memcg, deflate_on_oom="on")
        config = env.write_config(host_pressure="/proc/pressure/memory",
                                  extra="\n[Defaults]\nRecoveryDelaySec=10s\nRecoveryDelayMaxSec=30s\n")
        env.start_daemon(config=config, args=("--log-level=info",))
        for g in (idle, busy):
            env.wait_property(env.machine_path(g.name), "State", "managed", timeout=20)

        log("act 1: vm-idle touches and frees 300 MiB (the host keeps it), vm-busy holds 200 MiB")
        rc, out = idle.run("memhog 300 1 0")
        check(rc == 0, "vm-idle memhog: " + out)
        busy_job = busy.run_bg("memhog 200 1 %d" % (HOST_WORKLOAD_SECONDS + 60))

        table = Table(env, memcg, [idle, busy])
        t0 = time.monotonic()
        for _ in range(3):
            table.row(t0)
            time.sleep(1)

        log("act 2: a host workload grows to %d MiB for %d s" % (HOST_WORKLOAD_MIB, HOST_WORKLOAD_SECONDS))
        # It keeps writing its memory (10 passes), as a real workload uses what it allocates:
        # a single quick burst could be over, swapped into place, within one 2 s PSI window
        # (seen once in CI-like runs: 420 MiB in 1.4 s, and no trigger event at all).
        hog = realguest.host_hog(env, memcg, HOST_WORKLOAD_MIB, HOST_WORKLOAD_SECONDS, outdir, passes=10)
        while hog.alive():
            table.row(t0)
            time.sleep(1)
        log("act 3: the host workload is gone; after RecoveryDelaySec=10s the guests get memory back")
        end = time.monotonic() + 60
        while time.monotonic() < end:
            table.row(t0)
            full = all(env.ab_get(env.machine_path(g.name), "TargetMemory") >= 512 * MIB for g in (idle, busy))
            if full:
                break
            time.sleep(1)

        moves = [l for l in env.daemon_log_text().splitlines() if "balloon target" in l]
        print("\nWhat the daemon did (one journal entry per move, with its reason):")
        for l in moves:
            print("  " + l.split("[")[0].strip())
        print("\nvm-busy's workload: %s" % ("finished" if busy_job[1].get("rc") == 0 else "still running"
                                           if not busy_job[1] else "rc=%s" % busy_job[1].get("rc")))
        print("host memcg: %d OOM kills, %d MiB in swap at peak" % (memcg.oom_kills(), memcg.stat("swap") // MIB))
        check(any("host-pressure" in l for l in moves), "the daemon never inflated under host pressure")
        check(any("recovery" in l for l in moves), "the daemon never gave memory back")
        log("stopping: the daemon returns every guest to its maximum, then guests and machined stop")
        rc = env.stop_daemon()
        check(rc == 0, "daemon exit code %s" % rc)
    finally:
        memcg.close()


abtest.main(demo, "demo")
