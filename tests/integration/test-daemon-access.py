#!/usr/bin/python3
"""Access control on the real system bus: reads are open to everyone; writes and ResizeMachine
need uid 0 (or polkit, which is not running here, so a non-root caller gets AccessDenied,
never a hang or another error); bad values are InvalidArgs naming the property."""
import os
import sys

import dbus

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
import abtest  # noqa: E402
from abtest import AB, AB_MACHINE, AB_MANAGER, AB_PATH, PROPS, check, log, typed  # noqa: E402

NOBODY = 65534
MIB = 1 << 20
DENIED = "org.freedesktop.DBus.Error.AccessDenied"
INVALID = "org.freedesktop.DBus.Error.InvalidArgs"


def balloons(vm):
    return [l for l in vm.records().splitlines() if '"balloon"' in l]


def test(env):
    env.start_daemon()
    vm = env.start_vm("vm1", memory="512M")
    path = env.machine_path("vm1")
    env.wait_property(path, "State", "managed", timeout=5)

    # reads: open
    r = env.call_as(NOBODY, AB, AB_PATH, AB_MANAGER, "ListMachines")
    check(r[0] == "ok" and "vm1" in r[1], "ListMachines as nobody: %s" % (r,))
    r = env.call_as(NOBODY, AB, path, PROPS, "Get", "ss", [AB_MACHINE, "ActualMemory"])
    check(r[0] == "ok", "Get ActualMemory as nobody: %s" % (r,))

    # writes as nobody: AccessDenied, and nothing changes
    weight = env.ab_get(path, "Weight")
    for what, call in (
            ("Set Weight", (path, PROPS, "Set", "ssv", [AB_MACHINE, "Weight", typed("u", 500)])),
            ("SetMachineProperties", (AB_PATH, AB_MANAGER, "SetMachineProperties", "sba(sv)",
                                      ["vm1", True, [["Weight", typed("u", 500)]]])),
            ("ResizeMachine", (AB_PATH, AB_MANAGER, "ResizeMachine", "st", ["vm1", 256 * MIB]))):
        r = env.call_as(NOBODY, AB, *call)
        log("%s as nobody: %s" % (what, r))
        check(r[0] == DENIED, "%s as nobody: %s, expected AccessDenied" % (what, r))
    check(env.ab_get(path, "Weight") == weight, "Weight changed by a denied call")
    check(balloons(vm) == [], "a denied ResizeMachine reached the VM: %s" % balloons(vm))

    # root: allowed, announced, and bad values are InvalidArgs that name the property
    env.call(AB, path, PROPS, "Set", AB_MACHINE, "Weight", dbus.UInt32(500, variant_level=1))
    env.wait_for(lambda: env.properties_changed(path, "Weight"), 2, "PropertiesChanged(Weight)")
    check(env.ab_get(path, "Weight") == 500, "Weight not set by root")
    for what, args in (("Weight 0", ("Weight", dbus.UInt32(0, variant_level=1))),
                       ("MinimumMemory above the VM's RAM", ("MinimumMemory", dbus.UInt64(4 << 30, variant_level=1)))):
        try:
            env.call(AB, path, PROPS, "Set", AB_MACHINE, *args)
            raise abtest.Fail("%s accepted" % what)
        except dbus.DBusException as e:
            log("%s: %s: %s" % (what, e.get_dbus_name(), e.get_dbus_message()))
            check(e.get_dbus_name() == INVALID and args[0] in e.get_dbus_message(),
                  "%s: %s %s" % (what, e.get_dbus_name(), e.get_dbus_message()))
    try:
        env.ab_call("ResizeMachine", "vm1", dbus.UInt64(2 << 30))
        raise abtest.Fail("ResizeMachine above the VM's RAM accepted")
    except dbus.DBusException as e:
        check(e.get_dbus_name() == INVALID, "ResizeMachine 2G: %s" % e.get_dbus_name())
    env.ab_call("ResizeMachine", "vm1", dbus.UInt64(256 * MIB))
    env.wait_for(lambda: balloons(vm), 2, "the balloon command from ResizeMachine")
    check(str(256 * MIB) in balloons(vm)[0], "ResizeMachine sent %s" % balloons(vm))
    env.wait_property(path, "ActualMemory", 256 * MIB, timeout=3)
    check(env.stop_daemon() == 0, "daemon did not exit cleanly")


abtest.main(test, "daemon-access")
