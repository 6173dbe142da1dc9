#!/usr/bin/python3
"""make demo: autoballoond live, on real components, next to the same workload without it.

Two real QEMU (TCG) guests booting Debian 12's kernel with the patched virtio_balloon and the
balloon's free-page-reporting on are registered with a real systemd-machined (private bus,
tests/lib/machined-env.sh). They and a host workload share "host RAM": a v1 memory cgroup
limit, with zram swap so going over it swaps (real PSI stalls) rather than OOM-kills.

The same story runs twice, first without a controller, then with autoballoond watching that
memcg as its host memory budget (HostMemorySource=):
  act 1  the guests warm up: vm-idle reads 300 MiB of files (page cache, which free page
         reporting cannot return), vm-busy keeps 100 MiB of cache and a 150 MiB working set;
  act 2  a host workload ramps up to 350 MiB and holds it;
  act 3  the workload ends.
Each second one line: the host's use and swap, each guest's balloon and what the host holds
for it. At the end, peak host swap and stall of both runs side by side, and every balloon move
the daemon made with its reason. Everything is stopped and removed at the end."""
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
import stall  # noqa: E402
from abtest import check, log  # noqa: E402

MIB = realguest.MIB
HOST_RAM = 1200 * MIB       # the memcg limit both guests and the host workload live in
SWAP = 1536 * MIB
HOG_STEPS, HOG_STEP_MIB = 7, 50   # the host workload: 7 x 50 MiB, one more a second
# The guest reads its scratch disk into its page cache. Linux drops a block device's cache when
# its last opener closes it, so a background holder keeps /dev/vda open: the cache stays, as a
# file's would on a real guest, and free page reporting cannot return it.
KEEP_CACHE = "(exec 3</dev/vda; exec sleep 100000) >/dev/null 2>&1 & "
HOG_HOLD = 40
SETTLE = 50                 # act 3: the reserve a burst raised lasts a minute, then memory goes back


class Run:
    """One pass of the story; with_daemon: autoballoond drives the balloons."""

    def __init__(self, env, outdir, with_daemon):
        self.env, self.outdir, self.with_daemon = env, outdir, with_daemon
        self.peak_swap = self.peak_use = 0
        self.moves = []
        self.busy_ok = None

    def line(self, t0, guests):
        use, swap = self.memcg.usage(), self.memcg.stat("swap")
        self.peak_swap, self.peak_use = max(self.peak_swap, swap), max(self.peak_use, use)
        cells = []
        for g in guests:
            if self.with_daemon:
                path = self.env.machine_path(g.name)
                try:
                    a = self.env.ab_get(path, "ActualMemory") // MIB
                except Exception:  # noqa: BLE001 — the daemon may be between two states
                    a = 0
            else:
                a = 512
            cells.append("  %4d M %4d M %4d M" % (a, realguest.rss_bytes(g.pid) // MIB, realguest.swap_bytes(g.pid) // MIB))
        print("%5.0f %6d M %6d M%s" % (time.monotonic() - t0, use // MIB, swap // MIB, "".join(cells)), flush=True)

    def play(self):
        env = self.env
        title = "with autoballoond" if self.with_daemon else "without a controller"
        print("\n==== %s ====" % title, flush=True)
        self.memcg = realguest.HostMemcg(env, "host", HOST_RAM, swap=SWAP)
        try:
            cg = env.cgroup2 + "/" + env.name
            log("booting two guests (QEMU TCG, 512 MiB each, free-page-reporting on) in %d MiB of host RAM..."
                % (HOST_RAM // MIB))
            guests = [realguest.start_guest(env, n, self.outdir, mem="512M", memcg=self.memcg, deflate_on_oom="on",
                                            free_page_reporting="on") for n in ("vm-idle", "vm-busy")]
            idle, busy = guests
            if self.with_daemon:
                config = env.write_config(host_pressure="/proc/pressure/memory", host_memory=self.memcg.ns_dir,
                                          extra="\n[Defaults]\nRecoveryDelaySec=10s\nRecoveryDelayMaxSec=30s\n")
                env.start_daemon(config=config, args=("--log-level=info",))
                for g in guests:
                    env.wait_property(env.machine_path(g.name), "State", "managed", timeout=20)
            stall0 = stall.pressure_totals(cg)["some"]

            log("act 1: vm-idle reads 300 MiB of files; vm-busy reads 100 MiB and holds 150 MiB")
            busy_job = busy.run_bg(KEEP_CACHE + "pagestream 100 && memhog 150 1 %d" % (HOG_HOLD + 60))
            rc, out = idle.run(KEEP_CACHE + "pagestream 300")
            check(rc == 0, "vm-idle pagestream: " + out)
            print("%5s %8s %8s%s" % ("t(s)", "host use", "swap", "".join(
                "  %-20s" % ("%s bal/rss/swap" % g.name) for g in guests)), flush=True)
            t0 = time.monotonic()
            for _ in range(8):
                self.line(t0, guests)
                time.sleep(1)

            log("act 2: a host workload ramps up to %d MiB (%d MiB a second) and holds it %d s"
                % (HOG_STEPS * HOG_STEP_MIB, HOG_STEP_MIB, HOG_HOLD))
            hog_cmd = "for i in $(seq %d); do %s %d 5 $((%d - i)) & sleep 1; done; wait" % (
                HOG_STEPS, os.path.join(self.outdir, "tools/memhog"), HOG_STEP_MIB, HOG_HOLD + HOG_STEPS)
            hog = env.spawn(["sh", "-c", hog_cmd], name="host-hog", memcg=self.memcg.dir,
                            stdout=env.file("host-hog.log"), stderr=env.file("host-hog.log"))
            while hog.alive():
                self.line(t0, guests)
                time.sleep(1)
            log("act 3: the host workload is gone")
            for _ in range(SETTLE):
                self.line(t0, guests)
                time.sleep(1)
            busy_job[0].join(timeout=120)
            self.busy_ok = busy_job[1].get("rc") == 0
            self.stall_ms = (stall.pressure_totals(cg)["some"] - stall0) // 1000
            self.oom_kills = self.memcg.oom_kills()
            if self.with_daemon:
                self.moves = [l.split("[")[0].strip() for l in env.daemon_log_text().splitlines() if "balloon target" in l]
                rc = env.stop_daemon()
                check(rc == 0, "daemon exit code %s" % rc)
            for g in guests:
                env.terminate_machine(g.name)
        finally:
            self.memcg.close()   # kills what runs in it (only ours), then removes it and the zram


def demo(env):
    outdir = realguest.images()
    without = Run(env, outdir, with_daemon=False)
    without.play()
    time.sleep(2)   # machined forgets the terminated machines
    with_daemon = Run(env, outdir, with_daemon=True)
    with_daemon.play()

    print("\nWhat the daemon did (one journal entry per move, with its reason):")
    for m in with_daemon.moves:
        print("  " + m)
    print("\n%-22s %14s %14s %12s %10s %12s" % ("", "peak host swap", "peak host use", "PSI some", "OOM kills",
                                               "vm-busy job"))
    for name, r in (("without a controller", without), ("with autoballoond", with_daemon)):
        print("%-22s %12d M %12d M %9d ms %10d %12s" % (name, r.peak_swap // MIB, r.peak_use // MIB, r.stall_ms,
                                                       r.oom_kills, "finished" if r.busy_ok else "failed"))
    ratio = with_daemon.peak_swap / max(without.peak_swap, 1)
    print("peak host swap with the daemon: %.0f %% of the run without it" % (100 * ratio))
    check(any("host-budget" in m for m in with_daemon.moves), "the daemon never took memory for the host's budget")
    check(any("recovery" in m for m in with_daemon.moves), "the daemon never gave memory back")
    check(with_daemon.oom_kills == 0 and with_daemon.busy_ok, "a guest or its job was killed with the daemon")
    check(without.peak_swap >= 64 * MIB, "the run without a controller hardly swapped (%d MiB): no story to tell"
          % (without.peak_swap // MIB))
    # The goal: with the daemon, at most a tenth of the swap the same story makes without it.
    check(ratio <= 0.10, "peak host swap with the daemon is %.0f %% of the run without it (goal: 10 %% at most)"
          % (100 * ratio))


abtest.main(demo, "demo")
