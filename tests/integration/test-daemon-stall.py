#!/usr/bin/python3
"""Scope pressure: a real memory stall in one VM's scope makes the daemon send that VM a
`balloon` with a lower target (the fake QMP device's record shows it); the fake's
BALLOON_CHANGE then shows up as ActualMemory on D-Bus, with PropertiesChanged."""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
import abtest  # noqa: E402
from abtest import check, log  # noqa: E402

MIB = 1 << 20
STALL_SECONDS = 10


def test(env):
    # host pressure from a quiet cgroup, so only the VM's own scope pressure can act
    quiet = "/sys/fs/cgroup/%s/system.slice/memory.pressure" % env.name
    env.start_daemon(env.write_config(host_pressure=quiet))
    # a guest that moves its balloon at 100 MiB/s, so BALLOON_CHANGE comes in steps
    ctl = env.file("vm1.control")
    vm = env.start_vm("vm1", memory="512M", extra=["--fake-balloon-speed=100M", "--fake-control=" + ctl])
    idle = env.start_vm("idle", memory="512M")
    path = env.machine_path(vm.name)
    env.wait_property(path, "State", "managed", timeout=5)
    env.wait_property(env.machine_path(idle.name), "State", "managed", timeout=5)
    before = env.ab_get(path, "ActualMemory")
    check(before == 512 * MIB, "ActualMemory before the stall is %d" % before)
    check(vm.balloon_targets() == [], "balloon before any pressure: %s" % vm.balloon_targets())

    cg = env.ab_get(path, "ControlGroup")
    t = time.monotonic()
    stall = env.stall(cg, seconds=STALL_SECONDS)
    sent = env.wait_for(lambda: vm.balloon_targets(), STALL_SECONDS + 4, "a balloon command to %s" % vm.name)
    log("first balloon to %s after %.2f s of stall: %s MiB" % (vm.name, time.monotonic() - t,
                                                                 [v // MIB for v in sent]))
    check(sent[0] < 512 * MIB, "balloon target %d is not below 512 MiB" % sent[0])
    target = env.wait_property(path, "TargetMemory", lambda v: v < 512 * MIB, timeout=2)
    # BALLOON_CHANGE from the fake -> ActualMemory, announced with PropertiesChanged
    actual = env.wait_property(path, "ActualMemory", lambda v: v < 512 * MIB, timeout=3)
    changes = env.wait_for(lambda: [c for _, c in env.properties_changed(path, "ActualMemory", since=t)
                                    if c.get("ActualMemory", 512 * MIB) < 512 * MIB],
                           2, "PropertiesChanged(ActualMemory)")
    log("TargetMemory %d MiB, ActualMemory %d MiB, PropertiesChanged: %s" %
        (target // MIB, actual // MIB, changes[:3]))
    check(env.ab_get(path, "ScopePressure") != "", "ScopePressure is empty")
    r = stall.wait()
    log("stall:", r)
    actuals = [c["ActualMemory"] // MIB for _, c in env.properties_changed(path, "ActualMemory", since=t)]
    log("ActualMemory announced %d times during the stall: %s MiB" % (len(actuals), actuals))
    check(len(set(actuals)) >= 2, "ActualMemory did not follow the balloon's steps: %s" % actuals)

    # the guest moves its balloon by itself (deflate-on-oom): BALLOON_CHANGE alone must
    # reach ActualMemory
    t = time.monotonic()
    check(env.fake_control(ctl, "actual 500M") == "ok", "fake control refused 'actual'")
    env.wait_for(lambda: any(c.get("ActualMemory") == 500 * MIB
                             for _, c in env.properties_changed(path, "ActualMemory", since=t)),
                 1, "PropertiesChanged(ActualMemory=500 MiB) after a BALLOON_CHANGE")
    check(env.ab_get(path, "ActualMemory") == 500 * MIB, "ActualMemory is not 500 MiB")
    log("guest self-deflate to 500 MiB seen after %.3f s; TargetMemory now %d MiB" %
        (time.monotonic() - t, env.ab_get(path, "TargetMemory") // MIB))
    check(idle.balloon_targets() == [], "the idle VM was ballooned by another VM's scope pressure: %s"
          % idle.balloon_targets())
    # every move is logged once, with its reason (STYLE.md: "why did my VM shrink?")
    moves = [l for l in env.daemon_log_text().splitlines() if "machine=vm1" in l and "reason=" in l]
    check(any("reason=scope-pressure" in l for l in moves), "no move of vm1 logged with reason=scope-pressure")

    rc = env.stop_daemon()
    check(rc == 0, "daemon exit code %s on SIGTERM" % rc)
    # DeflateOnExit=yes: the guest gets its memory back
    final = vm.balloon_targets()
    log("balloon commands to %s: %s MiB" % (vm.name, [v // MIB for v in final]))
    check(final[-1] == 512 * MIB, "not deflated to 512 MiB on exit: last target %d" % final[-1])


abtest.main(test, "daemon-stall")
