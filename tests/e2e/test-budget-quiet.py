#!/usr/bin/python3
"""Over budget but quiet: swap has absorbed the host's shortfall, PSI reads nothing, and the
daemon still takes what the host is over — then gives nothing back until the room is there.

One real guest touches and frees 350 MiB (the host holds it, the guest does not use it). A host
workload then fills the "host RAM" (a v1 memcg with zram swap); the host swaps the guest's idle
pages out and the stall ends. Only then does the daemon start, with the memcg as
HostMemorySource=. It must take from the guest (reason host-budget) with no pressure event at
all, bring the guest's swap down, hold the guest there while the workload holds its memory,
and give memory back once the workload is gone."""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
import abtest  # noqa: E402
import realguest  # noqa: E402
import stall  # noqa: E402
from abtest import check, log  # noqa: E402

MIB = realguest.MIB
HOST_RAM = 700 * MIB
RESERVE = 40 * MIB


def test(env):
    outdir = realguest.images()
    memcg = realguest.HostMemcg(env, "host", HOST_RAM, swap=1024 * MIB)
    try:
        check(memcg.ns_dir, "no v1 memory cgroup visible inside the namespace")
        g = realguest.start_guest(env, "vm-quiet", outdir, mem="512M", memcg=memcg, deflate_on_oom="off")
        rc, out = g.run("memhog 350 1 0")
        check(rc == 0, "guest memhog failed: %s" % out)

        # The host workload: more than is left, held. The host swaps the guest's idle pages.
        hog = realguest.host_hog(env, memcg, 400, 600, outdir, passes=1)
        cg = env.cgroup2 + "/" + env.name
        quiet_since, last = None, None
        end = time.monotonic() + 90
        while time.monotonic() < end:
            total = stall.pressure_totals(cg)["some"]
            now = time.monotonic()
            if last is not None and total == last:
                quiet_since = quiet_since or now
                if now - quiet_since >= 6 and realguest.swap_bytes(g.pid) > 64 * MIB:
                    break
            else:
                quiet_since = None
            last = total
            time.sleep(0.5)
        guest_swap0 = realguest.swap_bytes(g.pid)
        log("quiet: no stall for 6 s; the host swapped %d MiB of the guest, memcg usage %d MiB" % (
            guest_swap0 // MIB, memcg.usage() // MIB))
        check(guest_swap0 > 64 * MIB, "the host did not swap the guest's idle memory")

        config = env.write_config(host_pressure="/proc/pressure/memory", host_memory=memcg.ns_dir,
                                  extra="\n[Manager]\nHostMemoryReserve=%d\n\n[Defaults]\nRecoveryDelaySec=5s\n"
                                        "RecoveryDelayMaxSec=5s\n" % RESERVE)
        env.start_daemon(config=config)
        path = env.machine_path("vm-quiet")
        env.wait_property(path, "State", "managed", timeout=15)
        balance0 = env.get(abtest.AB, abtest.AB_PATH, abtest.AB_MANAGER, "HostMemoryBalance")
        log("HostMemoryBalance at start: %+d MiB" % (balance0 // MIB))
        check(balance0 > 0, "the daemon does not see the host over budget (balance %d)" % balance0)

        env.wait_for(lambda: env.ab_get(path, "TargetMemory") < 512 * MIB - 32 * MIB, 30,
                     "a take of at least 32 MiB with the host quiet")
        time.sleep(6)
        target = env.ab_get(path, "TargetMemory")
        last_move = env.ab_get(path, "LastMove")
        balance = env.get(abtest.AB, abtest.AB_PATH, abtest.AB_MANAGER, "HostMemoryBalance")
        log("took %d MiB (last move: %s), guest swap %d -> %d MiB, balance %+d MiB" % (
            (512 * MIB - target) // MIB, last_move[1], guest_swap0 // MIB, realguest.swap_bytes(g.pid) // MIB, balance // MIB))
        text = env.daemon_log_text()
        check("reason=host-budget" in text, "no move logged with reason host-budget")
        check(realguest.swap_bytes(g.pid) < guest_swap0 - 32 * MIB, "the guest's swap did not fall")

        # While the workload holds its memory, memory goes back only into the room there is:
        # the host never goes over budget again by our give-backs, and the guest gets back at
        # most the room the takes left (their rounding), not what it had.
        low = env.ab_get(path, "TargetMemory")
        room = max(0, -env.get(abtest.AB, abtest.AB_PATH, abtest.AB_MANAGER, "HostMemoryBalance"))
        high, worst = low, -(1 << 62)
        t_end = time.monotonic() + 20
        while time.monotonic() < t_end:
            high = max(high, env.ab_get(path, "TargetMemory"))
            worst = max(worst, env.get(abtest.AB, abtest.AB_PATH, abtest.AB_MANAGER, "HostMemoryBalance"))
            time.sleep(1)
        log("20 s with the host workload holding: target %d -> at most %d MiB (room %d MiB), balance at worst %+d MiB" % (
            low // MIB, high // MIB, room // MIB, worst // MIB))
        check(high <= low + room + 2 * MIB, "gave back %d MiB into %d MiB of room" % ((high - low) // MIB, room // MIB))
        check(worst <= 8 * MIB, "the host went over budget again (%+d MiB)" % (worst // MIB))

        hog.stop()
        env.wait_for(lambda: env.ab_get(path, "TargetMemory") >= high + 32 * MIB, 40,
                     "memory given back once the host has room")
        log("given back: target %d MiB after the workload ended" % (env.ab_get(path, "TargetMemory") // MIB))
        check(memcg.oom_kills() == 0, "the host memcg OOM-killed something")
        print("".join(l for l in env.daemon_log_text().splitlines(True)
                      if "balloon target" in l or "pressure event" in l)[-4000:])
    finally:
        memcg.close()


abtest.main(test, "e2e-budget-quiet")
