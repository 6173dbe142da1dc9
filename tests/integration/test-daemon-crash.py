#!/usr/bin/python3
"""A crash (a real SIGKILL of the daemon, so no deflate on exit) with runtime settings in place:
the restarted daemon keeps them (they live under /run and end at reboot, not at a restart),
resumes every VM from the size it reports, and leaves no guest below its floor: a VM
disabled with --runtime stays disabled and untouched, a runtime MinimumMemory= holds, a VM
resized by hand is not reset to its maximum."""
import os
import signal
import sys

import dbus

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
import abtest  # noqa: E402
from abtest import AB_MANAGER, AB_PATH, check, log  # noqa: E402

MIB = 1 << 20


def props(*kv):
    return dbus.Array([dbus.Struct(p, signature="sv") for p in kv], signature="(sv)")


def test(env):
    vms = {n: env.start_vm(n, memory="512M", extra=["--fake-balloon-speed=instant"])
           for n in ("off", "floor", "resized")}
    path = {n: env.machine_path(n) for n in vms}
    env.start_daemon()
    for n in vms:
        env.wait_property(path[n], "State", "managed", timeout=5)

    # runtime settings (what autoballoonctl set-property --runtime does), and moves by hand
    env.ab_call("ResizeMachine", "off", dbus.UInt64(450 * MIB))
    env.wait_property(path["off"], "ActualMemory", 450 * MIB, timeout=3)
    env.ab_call("SetMachineProperties", "off", True, props(("Enabled", dbus.Boolean(False, variant_level=1))))
    env.ab_call("ResizeMachine", "floor", dbus.UInt64(400 * MIB))
    env.wait_property(path["floor"], "ActualMemory", 400 * MIB, timeout=3)
    env.ab_call("SetMachineProperties", "floor", True, props(("MinimumMemory", dbus.UInt64(400 * MIB, variant_level=1))))
    env.ab_call("ResizeMachine", "resized", dbus.UInt64(300 * MIB))
    env.wait_property(path["resized"], "ActualMemory", 300 * MIB, timeout=3)
    env.ab_call("SetDefaultProperties", True, props(("StepEscalationMax", dbus.UInt32(8, variant_level=1))))
    env.wait_property(path["off"], "State", "unmanaged", timeout=2)
    before = {n: len(vm.balloon_targets()) for n, vm in vms.items()}

    # the crash: no DeflateOnExit, nothing written on the way out
    rc = env.daemon.stop(signal.SIGKILL)
    env.daemon = None
    check(rc == -signal.SIGKILL, "daemon exit code %s, not killed by SIGKILL" % rc)
    for n, vm in vms.items():
        check(len(vm.balloon_targets()) == before[n], "%s got a balloon command from a killed daemon" % n)
    log("daemon killed")

    env.start_daemon()
    for n in ("floor", "resized"):
        env.wait_property(path[n], "State", "managed", timeout=5)
    env.wait_property(path["off"], "State", "unmanaged", timeout=5)
    env.pump(1.0)   # whatever the restarted daemon does at once, it has done now
    got = {n: {p: env.ab_get(path[n], p) for p in ("Enabled", "MinimumMemory", "ActualMemory", "TargetMemory")}
           for n in vms}
    log("after the restart: %s" % got)
    check(got["off"]["Enabled"] is False or got["off"]["Enabled"] == 0, "the runtime Enabled=no did not hold")
    check(got["floor"]["MinimumMemory"] == 400 * MIB, "the runtime MinimumMemory= did not hold")
    check(env.get(abtest.AB, AB_PATH, AB_MANAGER, "StepEscalationMax") == 8, "the runtime default did not hold")
    check(got["resized"]["TargetMemory"] == 300 * MIB and got["resized"]["ActualMemory"] == 300 * MIB,
          "the hand-resized VM was not resumed from its reported size")
    check(got["off"]["ActualMemory"] == 450 * MIB, "the disabled VM moved")
    for n, vm in vms.items():
        after = vm.balloon_targets()[before[n]:]
        log("%s: balloon commands after the restart: %s MiB" % (n, [v // MIB for v in after]))
        floor = got[n]["MinimumMemory"]
        check(all(v >= floor for v in after), "%s was ballooned below its floor %d MiB: %s" %
              (n, floor // MIB, [v // MIB for v in after]))
        check(got[n]["ActualMemory"] >= floor, "%s left below its floor" % n)
    check(vms["off"].balloon_targets()[before["off"]:] == [], "the VM disabled at runtime was moved after the restart")
    check(os.path.exists(env.file("machines.run.d/off.conf")), "the runtime drop-in is gone")
    check(env.stop_daemon() == 0, "daemon did not exit cleanly")


abtest.main(test, "daemon-crash")
