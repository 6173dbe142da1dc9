#!/usr/bin/python3
"""The PSI thresholds are knobs: LowPressure/MediumPressure/CriticalPressure are writable on
a Machine (its scope's triggers) and on the Manager (the host's, and every machine's that sets
none). A change re-arms the triggers at once (a real stall in the scope still moves the
balloon afterwards); a bad trigger is InvalidArgs naming the property, and changes nothing."""
import os
import sys

import dbus

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
import abtest  # noqa: E402
from abtest import check, log  # noqa: E402


def set_prop(env, path, iface, prop, value):
    env.call(abtest.AB, path, abtest.PROPS, "Set", iface, prop, dbus.String(value, variant_level=1))


def test(env):
    vm = env.start_vm("trig")
    env.start_daemon()
    path = env.machine_path(vm.name)
    env.wait_property(path, "State", "managed", timeout=5)
    check(env.ab_get(path, "LowPressure") == "some 100000 2000000", "default LowPressure %r"
          % env.ab_get(path, "LowPressure"))   # the test config's [Pressure] Low=some 100ms 2s

    # per machine: its scope's triggers, re-armed
    set_prop(env, path, abtest.AB_MACHINE, "LowPressure", "some 150ms 2s")
    check(env.ab_get(path, "LowPressure") == "some 150000 2000000", "LowPressure not set")
    for bad in ("some 3s 2s", "half 1s 2s", "some 100ms 20s", ""):
        try:
            set_prop(env, path, abtest.AB_MACHINE, "LowPressure", bad)
            raise abtest.Fail("LowPressure=%r accepted" % bad)
        except dbus.DBusException as e:
            check(e.get_dbus_name() == "org.freedesktop.DBus.Error.InvalidArgs" and "LowPressure" in str(e),
                  "LowPressure=%r: %s" % (bad, e))
    check(env.ab_get(path, "LowPressure") == "some 150000 2000000", "a refused value changed LowPressure")

    # defaults: the host's triggers follow
    set_prop(env, abtest.AB_PATH, abtest.AB_MANAGER, "CriticalPressure", "full 300ms 2s")
    armed = env.get(abtest.AB, abtest.AB_PATH, abtest.AB_MANAGER, "PressureTriggers")
    log("host triggers now %s" % armed)
    check(any(t[0] == "critical" and t[1] == "full" and t[2] == 300000 and t[3] == 2000000 for t in armed),
          "host critical trigger not re-armed: %s" % armed)
    check(env.ab_get(path, "CriticalPressure") == "full 300000 2000000", "machine did not inherit the default")

    # the re-armed scope triggers still fire: a real stall moves the balloon
    s = env.stall(env.ab_get(path, "ControlGroup"), seconds=8)
    env.wait_property(path, "TargetMemory", lambda v: v < 512 << 20, timeout=12)
    log("stall: %s" % s.wait())
    check(env.stop_daemon() == 0, "daemon exit code")


abtest.main(test, "daemon-triggers")
