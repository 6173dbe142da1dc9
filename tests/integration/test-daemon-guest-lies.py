#!/usr/bin/python3
"""A guest that lies: it reports available=0 and a balloon size (actual) above its RAM, 16 GiB
then 2^64-1, while a healthy VM beside it is squeezed by real host pressure (a stall under
machine.slice). The daemon stays sane: the liar's ActualMemory is clamped to its RAM, it never
gets a target above its MaximumMemory=, and the healthy VM is never taken below its floor (its
working set + reserve) for it."""
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
import abtest  # noqa: E402
from abtest import check, log  # noqa: E402

MIB = 1 << 20
GIB = 1 << 30
STALL_SECONDS = 10
LIAR_MAX = 768 * MIB
HEALTHY_USED = 300 * MIB
# the healthy guest's floor: its use + the default reserve, max(128 MiB, 10 % of 1 GiB)
HEALTHY_FLOOR = HEALTHY_USED + 128 * MIB


def balloon_targets(vm):
    return [int(m["arguments"]["value"]) for m in map(json.loads, vm.records().splitlines())
            if m.get("execute") == "balloon"]


def mib(values):
    return [v // MIB for v in values]


def test(env):
    env.machine_dropin("liar", "[Machine]\nMaximumMemory=%dM\n" % (LIAR_MAX // MIB))
    env.start_daemon(env.write_config(host_pressure="machine.slice"))
    ctl = env.file("liar.control")
    liar = env.start_vm("liar", memory="1G", extra=["--fake-stats=available=0", "--fake-control=" + ctl])
    healthy = env.start_vm("healthy", memory="1G", extra=["--fake-stats=used=%dM" % (HEALTHY_USED // MIB)])
    lpath, hpath = env.machine_path("liar"), env.machine_path("healthy")
    for p in (lpath, hpath):
        env.wait_property(p, "State", "managed", timeout=5)
    # MaximumMemory= below the RAM: the daemon brings it there at once
    env.wait_property(lpath, "TargetMemory", LIAR_MAX, timeout=5)
    env.wait_property(lpath, "ActualMemory", LIAR_MAX, timeout=5)

    # the lie: 16 GiB in a 1 GiB guest
    t = time.monotonic()
    check(env.fake_control(ctl, "lie-actual 16G") == "ok", "fake control refused lie-actual")
    actual = env.wait_property(lpath, "ActualMemory", lambda v: v != LIAR_MAX, timeout=3)
    log("liar reports 16 GiB: ActualMemory %d MiB after %.2f s" % (actual // MIB, time.monotonic() - t))
    check(actual == GIB, "the liar's ActualMemory is %d MiB, not clamped to its RAM (1024 MiB)" % (actual // MIB))

    # real host pressure: a stall in an unmanaged scope under machine.slice
    hog = env.start_vm("hog", leader_cmd=["sleep", "600"])
    hog_cg = env.wait_for(lambda: env.ab_get(env.machine_path("hog"), "ControlGroup"), 2, "hog's scope")
    t = time.monotonic()
    stall = env.stall(hog_cg, seconds=STALL_SECONDS)
    env.wait_for(lambda: balloon_targets(healthy), STALL_SECONDS + 4, "a balloon command to the healthy VM")
    log("first balloon to healthy after %.2f s of host stall: %s MiB" % (time.monotonic() - t,
                                                                          mib(balloon_targets(healthy))))
    # and now the largest lie there is, mid-pressure
    check(env.fake_control(ctl, "lie-actual 18446744073709551615") == "ok", "fake control refused lie-actual")
    seen = []
    while time.monotonic() - t < STALL_SECONDS + 1:
        env.daemon_check()
        seen.append((env.ab_get(lpath, "ActualMemory"), env.ab_get(lpath, "TargetMemory"),
                     env.ab_get(hpath, "TargetMemory")))
        env.pump(0.25)
    r = stall.wait()
    env.pump(1)
    log("stall:", r)

    lb, hb = balloon_targets(liar), balloon_targets(healthy)
    log("balloon targets: liar %s MiB, healthy %s MiB" % (mib(lb), mib(hb)))
    log("liar ActualMemory seen %s MiB, TargetMemory %s MiB" % (sorted({mib([a])[0] for a, _, _ in seen}),
                                                                 sorted({mib([tg])[0] for _, tg, _ in seen})))
    check(seen and all(a <= GIB for a, _, _ in seen), "the liar's ActualMemory left its RAM: %s MiB"
          % sorted({a // MIB for a, _, _ in seen}))
    check(all(tg <= LIAR_MAX for _, tg, _ in seen), "the liar's TargetMemory went above its maximum")
    check(lb and max(lb) <= LIAR_MAX, "the liar was asked for more than its maximum: %s MiB" % mib(lb))
    check(hb and min(hb) < GIB, "the healthy VM was never inflated: the pressure did not act")
    check(min(hb) >= HEALTHY_FLOOR, "the healthy VM was squeezed below its floor (%d MiB): %s MiB"
          % (HEALTHY_FLOOR // MIB, mib(hb)))
    check(all(h >= HEALTHY_FLOOR for _, _, h in seen), "the healthy VM's TargetMemory went below its floor")
    check(env.ab_get(lpath, "MemorySize") == GIB, "the liar's MemorySize changed")
    check("above its RAM" in env.daemon_log_text(), "the daemon did not log the lie")
    check(env.stop_daemon() == 0, "daemon did not exit cleanly")


abtest.main(test, "daemon-guest-lies")
