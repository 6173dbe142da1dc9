#!/usr/bin/python3
"""One real QEMU guest registered with machined; under real host memory
pressure the daemon inflates its balloon and QEMU's RSS (from /proc) falls accordingly.

"Host RAM" is a v1 memcg limit shared by QEMU and a host workload, with zram swap, so the
host reclaims (real PSI stalls in /proc/pressure/memory, the daemon's default source)
instead of OOM-killing at once. The guest first touched and freed 350 MiB: memory the host
holds for it but the guest does not use, which is what a balloon should take back."""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
import abtest  # noqa: E402
import realguest  # noqa: E402
from abtest import check, log  # noqa: E402

MIB = realguest.MIB


def test(env):
    outdir = realguest.images()
    memcg = realguest.HostMemcg(env, "host", 700 * MIB, swap=1024 * MIB)
    try:
        g = realguest.start_guest(env, "e2e-vm1", outdir, mem="512M", memcg=memcg,
                                  deflate_on_oom="off")
        rc, out = g.run("memhog 350 1 0")
        check(rc == 0, "guest memhog failed: %s" % out)
        rss_before = realguest.rss_swap_bytes(g.pid)
        log("QEMU RSS+swap after the guest touched and freed 350 MiB: %d MiB" % (rss_before // MIB))

        # the real host's pressure file, as on a production host
        env.start_daemon(config=env.write_config(host_pressure="/proc/pressure/memory"))
        path = env.machine_path("e2e-vm1")
        env.wait_property(path, "State", "managed", timeout=10)
        actual0 = env.ab_get(path, "ActualMemory")
        check(actual0 == 512 * MIB, "ActualMemory %d, expected 512 MiB" % actual0)

        # the host workload pushes the memcg over its limit: reclaim, swap, stalls
        t0 = time.monotonic()
        # it keeps writing its 380 MiB (30 passes): pressure lasts until the host has room
        hog = realguest.host_hog(env, memcg, 380, 60, outdir, passes=30)
        # One real event is enough (a 5 MiB blind step, then the rest to 25 MiB once the
        # guest's stats are in: the informed critical step). Whether
        # a second event comes depends on how fast the host swaps its way to room: once the
        # guest's idle pages are in zram, the stall can end (seen: one event, then none).
        moved = env.wait_for(lambda: env.ab_get(path, "ActualMemory") <= actual0 - 20 * MIB,
                             60, "the balloon to inflate by 20 MiB under host pressure")
        log("balloon inflated by >= 20 MiB %.1f s after the host workload started" % (time.monotonic() - t0))
        # once the balloon has reached its target, compare RSS (+ what was swapped out of QEMU)
        env.wait_for(lambda: abs(env.ab_get(path, "ActualMemory") - env.ab_get(path, "TargetMemory")) <= MIB,
                     30, "the balloon to reach its target")
        actual = env.ab_get(path, "ActualMemory")
        rss_after = realguest.rss_swap_bytes(g.pid)
        log("ActualMemory %d MiB, QEMU RSS+swap %d -> %d MiB, memcg swap %d MiB, oom kills %d" % (
            actual // MIB, rss_before // MIB, rss_after // MIB, memcg.stat("swap") // MIB,
            memcg.oom_kills()))
        check(moved, "no inflation")
        check(memcg.oom_kills() == 0, "the host memcg OOM-killed something")
        check(g.proc.alive(), "QEMU died")
        taken = actual0 - actual
        # Swapped-out pages still belong to QEMU: count RSS + swap, so only what the balloon
        # gave back can make it fall.
        check(rss_before - rss_after >= taken * 3 // 4,
              "QEMU RSS+swap fell by %d MiB while the balloon took %d MiB" %
              ((rss_before - rss_after) // MIB, taken // MIB))
        logtext = env.daemon_log_text()
        check("reason=host-pressure" in logtext,
              "the daemon did not log a move with the host-pressure reason")
        hog.stop()
        print("".join(l for l in logtext.splitlines(True) if "balloon target" in l or "pressure" in l)[-3000:])
    finally:
        memcg.close()   # kills what runs in it (only ours), then removes it and the zram


abtest.main(test, "e2e-host-pressure")
