#!/usr/bin/python3
"""Host pressure (HostPressureSource=machine.slice) takes memory from the guest that can best
spare it: a real stall under machine.slice inflates the idle guest (lots of available
memory), not the busy one (its working set fills it), and never below the busy guest's
working set (docs/policy.md: never squeeze a guest blindly toward a host-wide target).

The host is idle before the stall, so the first event finds no fresh guest statistics: both
guests give a blind low step (1 % of RAM) at once, the daemon asks them for their statistics,
and the rest of the event is decided when they are in: the idle guest gives more, the busy one
nothing (its working set and reserve fill its RAM)."""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
import abtest  # noqa: E402
from abtest import check, log  # noqa: E402

MIB = 1 << 20
STALL_SECONDS = 10


def test(env):
    env.start_daemon(env.write_config(host_pressure="machine.slice"))
    idle = env.start_vm("idle", memory="1G", extra=["--fake-stats=used=150M"])
    busy = env.start_vm("busy", memory="1G", extra=["--fake-stats=used=950M"])
    for vm in (idle, busy):
        env.wait_property(env.machine_path(vm.name), "State", "managed", timeout=5)
    # a host workload under machine.slice (in its own unmanaged scope): the slice stalls,
    # neither VM's scope does
    hog = env.start_vm("hog", leader_cmd=["sleep", "600"])
    hog_cg = env.wait_for(lambda: env.ab_get(env.machine_path("hog"), "ControlGroup"), 2, "hog's scope")

    t = time.monotonic()
    stall = env.stall(hog_cg, seconds=STALL_SECONDS)
    env.wait_for(lambda: idle.balloon_targets(), STALL_SECONDS + 4, "a balloon command to the idle VM")
    log("first balloon to idle after %.2f s of host stall: %s MiB" %
        (time.monotonic() - t, [v // MIB for v in idle.balloon_targets()]))
    level = env.get(abtest.AB, abtest.AB_PATH, abtest.AB_MANAGER, "HostPressure")
    r = stall.wait()
    log("stall:", r, "HostPressure was", level)
    env.pump(1)
    i, b = idle.balloon_targets(), busy.balloon_targets()
    log("balloon targets: idle %s MiB, busy %s MiB" % ([v // MIB for v in i], [v // MIB for v in b]))
    check(level != "none", "HostPressure stayed 'none' under a %.0f %% stall" % r["some_percent"])
    check(min(i) < 1024 * MIB, "the idle VM was not inflated")
    check(not b or min(b) >= 950 * MIB,
          "the busy VM was squeezed into its working set (950 MiB used): %s MiB" % [v // MIB for v in b])
    # nothing polls guest statistics on an idle host: the first event found none
    text = env.daemon_log_text()
    check("gave at most a blind low step" in text, "the first event did not say it stepped blind")
    check("its rest decided on the guest statistics" in text, "no rest of the blind event was decided")
    blind = 1024 - 1024 // 100   # the low step, in whole MiB
    check(i[0] // MIB == blind, "the idle VM's first move was not the blind low step: %s MiB" % (i[0] // MIB))
    check(len(i) >= 2 and i[1] < i[0], "the idle VM gave nothing more: %s MiB" % [v // MIB for v in i])
    check(not b or min(b) // MIB >= blind, "the busy VM gave more than the blind step: %s MiB" % [v // MIB for v in b])
    check(not b or min(i) < min(b), "the busy VM gave more than the idle one")
    last = env.ab_get(env.machine_path("idle"), "LastMove")
    log("idle LastMove:", last)
    check(last[1] == "host-pressure", "idle's last move reason is %r" % (last[1],))
    check(env.stop_daemon() == 0, "daemon did not exit cleanly")


abtest.main(test, "daemon-host-pressure")
