#!/usr/bin/python3
"""Forged signals: an unprivileged local user (uid 65534) sends every signal the daemon acts on
— machined's MachineRemoved and MachineNew, the bus's NameOwnerChanged for machined — straight
to the daemon's unique name, with real machine names and object paths. The system bus lets
anyone send a unicast signal to anyone, and sd-bus cannot check a well-known sender on a
dbus-daemon bus by itself. Nothing may change: both machines stay listed with the same
identity. Real signals still work afterwards (TerminateMachine removes one)."""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
import abtest  # noqa: E402
from abtest import check, log  # noqa: E402

NOBODY = 65534

SEND = r'''
import dbus, dbus.lowlevel, json, sys
a = json.loads(sys.argv[1])
b = dbus.bus.BusConnection(a["address"])
for s in a["signals"]:
    m = dbus.lowlevel.SignalMessage(s["path"], s["iface"], s["member"])
    m.set_destination(a["dest"])
    m.append(*s["args"], signature=s["sig"])
    b.send_message(m)
b.flush()
print(b.get_unique_name())
'''


def identity(env, name):
    props = env.get_all(abtest.AB, env.machine_path(name), abtest.AB_MACHINE)
    return {k: props[k] for k in ("Name", "Unit", "ControlGroup", "Leader", "QMPSocket", "State")}


def test(env):
    vm1, vm2 = env.start_vm("spoof-a"), env.start_vm("spoof-b")
    env.start_daemon()
    for vm in (vm1, vm2):
        env.wait_property(env.machine_path(vm.name), "State", "managed", timeout=5)
    before = {vm.name: identity(env, vm.name) for vm in (vm1, vm2)}
    daemon = env.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetNameOwner", abtest.AB)
    machined = env.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetNameOwner", abtest.M1)
    mgr = abtest.M1 + ".Manager"
    signals = [
        dict(path=abtest.M1_PATH, iface=mgr, member="MachineRemoved", sig="so", args=[vm1.name, vm1.machined_path]),
        # vm1's name with vm2's machine: would swap vm1's leader, unit and cgroup for vm2's
        dict(path=abtest.M1_PATH, iface=mgr, member="MachineNew", sig="so", args=[vm1.name, vm2.machined_path]),
        dict(path=abtest.M1_PATH, iface=mgr, member="MachineRemoved", sig="so", args=[vm2.name, vm2.machined_path]),
        # "machined left" and "machined is back under another name"
        dict(path="/org/freedesktop/DBus", iface="org.freedesktop.DBus", member="NameOwnerChanged", sig="sss",
             args=[abtest.M1, str(machined), ""]),
        dict(path="/org/freedesktop/DBus", iface="org.freedesktop.DBus", member="NameOwnerChanged", sig="sss",
             args=[abtest.M1, "", ":1.9999"]),
        dict(path=abtest.M1_PATH, iface=mgr, member="MachineRemoved", sig="so", args=[vm1.name, vm1.machined_path]),
    ]
    arg = json.dumps(dict(address=env.address, dest=str(daemon), signals=signals))
    r = subprocess.run(["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups",
                        "/usr/bin/python3", "-c", SEND, arg], capture_output=True, text=True, timeout=30)
    check(r.returncode == 0, "sending as uid %d failed: %s" % (NOBODY, r.stderr.strip()))
    sender = r.stdout.strip()
    log("uid %d (%s) sent %d forged signals to the daemon (%s)" % (NOBODY, sender, len(signals), daemon))

    # the daemon reads them in order; a Get after them is answered after they are handled
    ignored = lambda: env.daemon_log_text().count("from %s" % sender)  # noqa: E731
    end = time.monotonic() + 3
    while ignored() < len(signals) and time.monotonic() < end:
        env.pump(0.05)
    env.pump(0.5)
    names = sorted(env.ab_machines())
    check(names == sorted([vm1.name, vm2.name]), "the machines listed changed: %s" % names)
    for vm in (vm1, vm2):
        now = identity(env, vm.name)
        check(now == before[vm.name], "%s changed: %s -> %s" % (vm.name, before[vm.name], now))
    log("both machines kept their identity: %s" % before)
    check(ignored() >= len(signals), "the daemon logged %d of %d forged signals as ignored" % (ignored(), len(signals)))

    # the real machined is still believed
    env.terminate_machine(vm1.name)
    env.wait_for(lambda: vm1.name not in env.ab_machines(), 5, "the real MachineRemoved to count")
    check(identity(env, vm2.name) == before[vm2.name], "%s changed after a real removal" % vm2.name)


abtest.main(test, "daemon-spoof")
