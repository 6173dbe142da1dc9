#!/usr/bin/python3
"""free-page-reporting as the daemon sees it: a VM whose balloon has it on shows
FreePageReporting=true (announced once with PropertiesChanged), one with it off shows false
and the daemon logs the hint once, also across a reconnect; a VM whose QEMU has no such
property (before 5.1) shows false, gets the hint, and is still managed: its balloon moves."""
import os
import sys

import dbus

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
import abtest  # noqa: E402
from abtest import check, log  # noqa: E402

MIB = 1 << 20
HINT = "-device virtio-balloon-pci,free-page-reporting=on"


def hints(env, name):
    return [l for l in env.daemon_log_text().splitlines() if "Machine %s:" % name in l and HINT in l]


def fpr_reads(vm):
    return [l for l in vm.records().splitlines() if '"property":"free-page-reporting"' in l]


def test(env):
    env.start_daemon()
    vms = {}
    for name, mode in (("vm-on", "on"), ("vm-off", "off"), ("vm-old", "absent")):
        vms[name] = env.start_vm(name, memory="512M", extra=("--fake-free-page-reporting=" + mode,
                                                              "--fake-control=" + env.file(name + ".ctl")))
    paths = {name: env.machine_path(name) for name in vms}
    for name, path in paths.items():
        env.wait_property(path, "State", "managed", timeout=5)

    # the property, read from the balloon's own path during attach
    for name, want in (("vm-on", True), ("vm-off", False), ("vm-old", False)):
        got = env.ab_get(paths[name], "FreePageReporting")
        log("%s: FreePageReporting=%s" % (name, got))
        check(got is want, "%s: FreePageReporting=%r, expected %r" % (name, got, want))
        reads = fpr_reads(vms[name])
        check(len(reads) == 1 and '"path":"/machine/peripheral/balloon0"' in reads[0],
              "%s: expected one qom-get free-page-reporting on the balloon's path: %r" % (name, reads))

    # announced when it became known (true), and only then
    env.pump(0.3)
    changed = env.properties_changed(paths["vm-on"], "FreePageReporting")
    check([c.get("FreePageReporting") for _, c in changed] == [True],
          "vm-on: PropertiesChanged for FreePageReporting: %r" % changed)
    for name in ("vm-off", "vm-old"):
        changed = env.properties_changed(paths[name], "FreePageReporting")
        check(not changed, "%s: FreePageReporting announced though still false: %r" % (name, changed))

    # the hint: once for each machine without it, never for the one with it
    check(not hints(env, "vm-on"), "hint logged for vm-on, which has free page reporting: %r" % hints(env, "vm-on"))
    check(len(hints(env, "vm-off")) == 1, "vm-off: %d hints, expected one" % len(hints(env, "vm-off")))
    check("is off" in hints(env, "vm-off")[0] and "freePageReporting='on'" in hints(env, "vm-off")[0],
          "vm-off hint: %r" % hints(env, "vm-off")[0])
    check(len(hints(env, "vm-old")) == 1, "vm-old: %d hints, expected one" % len(hints(env, "vm-old")))
    check("has no free-page-reporting" in hints(env, "vm-old")[0], "vm-old hint: %r" % hints(env, "vm-old")[0])
    log("hint: %s" % hints(env, "vm-off")[0])

    # a reconnect reads it again, but says nothing new: still one hint, no flapping property
    for name in ("vm-off", "vm-on"):
        env.fake_control(env.file(name + ".ctl"), "hangup")
    for name in ("vm-off", "vm-on"):
        env.wait_for(lambda: len(fpr_reads(vms[name])) == 2, 5, "%s read free-page-reporting again" % name)
        env.wait_property(paths[name], "State", "managed", timeout=5)
    env.pump(0.3)
    check(len(hints(env, "vm-off")) == 1, "vm-off: %d hints after a reconnect, expected one" % len(hints(env, "vm-off")))
    check(env.ab_get(paths["vm-on"], "FreePageReporting") is True, "vm-on lost FreePageReporting on reconnect")
    check(len(env.properties_changed(paths["vm-on"], "FreePageReporting")) == 1,
          "vm-on: FreePageReporting announced again though unchanged")

    # without the property the machine is managed all the same: its balloon moves
    env.ab_call("ResizeMachine", "vm-old", dbus.UInt64(256 * MIB))
    env.wait_for(lambda: any('"execute":"balloon"' in l and str(256 * MIB) in l
                             for l in vms["vm-old"].records().splitlines()), 3, "balloon 256M at vm-old")
    env.wait_property(paths["vm-old"], "ActualMemory", 256 * MIB, timeout=3)
    check(env.ab_get(paths["vm-old"], "State") == "managed", "vm-old not managed")

    check(env.stop_daemon() == 0, "daemon did not exit cleanly")


abtest.main(test, "daemon-free-page-reporting")
