#!/usr/bin/python3
"""Persistence of set-property: a persistent change (SetMachineProperties/SetDefaultProperties
with runtime=false) survives a daemon restart; a runtime one (and busctl set-property) survives
Reload() and a restart too (it lives under /run and ends at reboot, as systemctl set-property
--runtime does); a runtime drop-in written by hand is kept. A
hand-written drop-in with a bad value is reported with file and line, and the rest of it
loads; SIGHUP picks up edited drop-ins and announces what changed."""
import os
import signal
import sys
import time

import dbus

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
import abtest  # noqa: E402
from abtest import AB_MANAGER, AB_PATH, check, log  # noqa: E402

MIB = 1 << 20
SEC = 1000000


def props(*pairs):
    return dbus.Array([(k, v) for k, v in pairs], signature="(sv)")


def u(v):
    return dbus.UInt32(v, variant_level=1)


def t(v):
    return dbus.UInt64(v, variant_level=1)


def expect(env, path, want, iface=abtest.AB_MACHINE):
    for k, v in want.items():
        got = env.ab_get(path, k, iface)
        check(got == v, "%s %s is %r, expected %r" % (path, k, got, v))


def mark(env):
    """Now, after the signals of earlier calls are in: they get their time when dispatched."""
    env.pump(0.2)
    return time.monotonic()


def test(env):
    config = env.write_config(extra="\n[Manager]\nRuntimeConfigDirectory=%s\n" % env.file("conf.run.d"))
    hand = env.file("machines.d/vm1.conf")
    env.machine_dropin("vm1", "# written by hand\n[Machine]\nWeight=nonsense\nRecoveryDelaySec=40s\n")
    env.start_vm("vm1", memory="512M")
    env.start_vm("vm2", memory="512M")
    env.start_daemon(config=config)
    p1, p2 = env.machine_path("vm1"), env.machine_path("vm2")
    env.wait_property(p1, "State", "managed", timeout=5)
    env.wait_property(p2, "State", "managed", timeout=5)

    # the bad line: file and line, ignored; the good line after it: loaded
    where = "%s:3:" % hand
    check(any(where in l and "Weight" in l for l in env.daemon_log_text().splitlines()),
          "no '%s ... Weight' in the daemon's log" % where)
    expect(env, p1, {"Weight": 100, "RecoveryDelaySec": 40 * SEC})

    # persistent and runtime changes, machines and defaults
    env.ab_call("SetMachineProperties", "vm1", False, props(("MinimumMemory", t(128 * MIB))))
    env.ab_call("SetMachineProperties", "vm1", True, props(("Weight", u(700))))
    env.call(abtest.AB, p2, abtest.PROPS, "Set", abtest.AB_MACHINE, "Weight", u(900))   # runtime
    env.ab_call("SetDefaultProperties", False, props(("ReservePercent", u(7))))
    env.ab_call("SetDefaultProperties", True, props(("StepEscalationMax", u(8))))
    text = open(hand).read()
    check(text.startswith("# written by hand\n") and "RecoveryDelaySec=40s" in text and
          "MinimumMemory=%d" % (128 * MIB) in text, "the hand-written drop-in lost its lines:\n" + text)
    check(os.path.exists(env.file("autoballoond.conf.d/50-set-property.conf")), "no persistent defaults drop-in")
    after = {"MinimumMemory": 128 * MIB, "Weight": 700, "ReservePercent": 7, "StepEscalationMax": 8}
    expect(env, p1, after)
    expect(env, p2, {"Weight": 900, "ReservePercent": 7, "StepEscalationMax": 8})

    # Reload(): the runtime drop-ins are read again, nothing is lost
    since = mark(env)
    env.ab_call("Reload")
    expect(env, p1, after)
    expect(env, p2, {"Weight": 900})
    check(not env.properties_changed(p1, "Weight", since=since), "Reload() announced an unchanged Weight")

    # an edited drop-in and SIGHUP: applied and announced
    since = mark(env)
    env.machine_dropin("vm2", "[Machine]\nHoldOffSec=77s\n")
    env.daemon.kill(signal.SIGHUP)
    env.wait_property(p2, "HoldOffSec", 77 * SEC, timeout=3)
    env.wait_for(lambda: env.properties_changed(p2, "HoldOffSec", since=since), 2, "PropertiesChanged(HoldOffSec)")
    # a runtime drop-in written by hand is not the daemon's to remove
    os.makedirs(env.file("machines.run.d"), exist_ok=True)
    with open(env.file("machines.run.d/vm2.conf"), "w") as f:
        f.write("# by hand, for this boot\n[Machine]\nGuestMajorFaultRate=1234\n")

    # restart: persistent and runtime settings stay (runtime ones end at reboot, with /run)
    check(env.stop_daemon() == 0, "daemon did not exit cleanly")
    env.start_daemon(config=config)
    env.wait_property(p1, "State", "managed", timeout=5)
    expect(env, p1, {"MinimumMemory": 128 * MIB, "Weight": 700, "RecoveryDelaySec": 40 * SEC,
                     "ReservePercent": 7, "StepEscalationMax": 8})
    # (vm2's runtime Weight=900 was in the file the hand-written one replaced)
    expect(env, p2, {"Weight": 100, "HoldOffSec": 77 * SEC, "GuestMajorFaultRate": 1234, "ReservePercent": 7,
                     "StepEscalationMax": 8})
    expect(env, AB_PATH, {"ReservePercent": 7, "StepEscalationMax": 8}, iface=AB_MANAGER)
    check(os.path.exists(env.file("machines.run.d/vm1.conf")), "vm1's runtime drop-in was removed at restart")
    check(os.path.exists(env.file("conf.run.d/50-set-property.conf")), "the runtime defaults were removed at restart")
    check(any(where in l for l in env.daemon_log_text().splitlines()), "the bad line is not reported after a restart")
    log("persistent and runtime settings survived the restart")
    check(env.stop_daemon() == 0, "daemon did not exit cleanly")


abtest.main(test, "api-persist")
