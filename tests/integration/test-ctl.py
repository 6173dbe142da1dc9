#!/usr/bin/python3
"""autoballoonctl against the daemon on the private bus (DBUS_SYSTEM_BUS_ADDRESS): the status
table and its JSON, list, show (Key=Value, -p, --value, --json), set-property and set-default
in the config file's syntax, resize, reload, top redrawing on a change; exit codes 0, 1
(refused by the daemon, or not root), 2 (usage, checked before anything is sent) and 4 (no
such machine, for every verb that names one)."""
import json
import os
import select
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
import abtest  # noqa: E402
from abtest import check, log  # noqa: E402

MIB = 1 << 20
NOBODY = 65534


def ctl(env, *args, rc=0, uid=None):
    exe = os.path.join(abtest.BUILDDIR, "controller/autoballoonctl")
    if not os.access(exe, os.X_OK):
        raise abtest.Skip("no autoballoonctl at %s" % exe)
    cmd = [exe, *args]
    if uid is not None:
        cmd = ["setpriv", "--reuid=%d" % uid, "--regid=%d" % uid, "--clear-groups", *cmd]
    r = subprocess.run(cmd, env=dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=env.address),
                       capture_output=True, text=True, timeout=30)
    log("$ autoballoonctl %s -> %d\n%s%s" % (" ".join(args), r.returncode, r.stdout, r.stderr))
    check(r.returncode == rc, "autoballoonctl %s: exit %d, expected %d" % (" ".join(args), r.returncode, rc))
    return r


def test(env):
    env.start_vm("vm1", memory="512M", extra=("--fake-free-page-reporting=on",))
    env.start_vm("vm2", memory="1G")
    env.start_daemon()
    for name in ("vm1", "vm2"):
        env.wait_property(env.machine_path(name), "State", "managed", timeout=5)
        env.wait_property(env.machine_path(name), "TargetMemory", lambda v: v > 0, timeout=2)
    env.wait_property(env.machine_path("vm1"), "FreePageReporting", True, timeout=2)

    ctl(env, "--help")
    check(ctl(env, "--version").stdout.startswith("autoballoonctl "), "--version")

    # status: a table like machinectl's, sorted by name, with a legend
    lines = ctl(env, "status").stdout.splitlines()
    check(lines[0].split() == ["MACHINE", "STATE", "ACTUAL", "TARGET", "MIN", "MAX", "PRESSURE", "FPR",
                                "BACKEND"],
          "header: %r" % lines[0])
    check(lines[1].split() == ["vm1", "managed", "512M", "512M", "128M", "512M", "none", "yes", "qmp"],
          "vm1 row: %r" % lines[1])
    check(lines[2].split() == ["vm2", "managed", "1G", "1G", "256M", "1G", "none", "no", "qmp"],
          "vm2 row: %r" % lines[2])
    check("2 machines listed." in lines and any(l.startswith("Host pressure: none") for l in lines), "legend: %r" % lines)
    check(ctl(env, "status", "--no-legend").stdout.splitlines()[0].split()[0] == "vm1", "--no-legend kept the header")
    check(ctl(env, "status", "vm2", "--no-legend").stdout.split()[0] == "vm2", "status vm2 shows another machine")
    check(ctl(env).stdout.splitlines()[0].startswith("MACHINE"), "no verb is not status")

    doc = json.loads(ctl(env, "status", "--json").stdout)
    want = {"machine": "vm1", "state": "managed", "actual": 512 * MIB, "target": 512 * MIB,
            "min": 128 * MIB, "max": 512 * MIB, "pressure": "none", "fpr": True,
            "backend": "qmp"}
    check(doc["machines"][0] == want, "status --json: %r" % doc["machines"][0])
    check(doc["machines"][1]["fpr"] is False, "status --json vm2 fpr: %r" % doc["machines"][1])
    check([m["machine"] for m in doc["machines"]] == ["vm1", "vm2"], "status --json machines")

    lines = ctl(env, "list").stdout.splitlines()
    check(lines[0].split() == ["MACHINE", "STATE", "OBJECT"] and
          lines[1].split() == ["vm1", "managed", env.machine_path("vm1")], "list: %r" % lines)
    doc = json.loads(ctl(env, "list", "--json").stdout)
    check(doc["machines"][1] == {"machine": "vm2", "state": "managed", "object": env.machine_path("vm2")},
          "list --json: %r" % doc)

    # show: Key=Value, -p, --value, --json; without a name, the manager
    out = ctl(env, "show", "vm1").stdout.splitlines()
    for kv in ("Name=vm1", "State=managed", "Weight=100", "Enabled=yes", "MemorySize=%d" % (512 * MIB), "LastMove=",
               "FreePageReporting=yes"):
        check(kv in out, "show vm1 lacks %s" % kv)
    got = ctl(env, "show", "vm1", "-p", "Weight,Enabled", "--no-pager").stdout.splitlines()
    check(sorted(got) == ["Enabled=yes", "Weight=100"], "show -p A,B: %r" % got)
    got = ctl(env, "show", "vm1", "-p", "Weight", "-p", "Enabled").stdout.splitlines()
    check(sorted(got) == ["Enabled=yes", "Weight=100"], "show -p: %r" % got)
    check(ctl(env, "show", "vm1", "-p", "Weight", "--value").stdout == "100\n", "show --value")
    doc = json.loads(ctl(env, "show", "vm1", "--json", "-p", "Name,Weight,Enabled,LastMove,FreePageReporting").stdout)
    check(doc == {"Name": "vm1", "Weight": 100, "Enabled": True, "LastMove": None, "FreePageReporting": True},
          "show --json: %r" % doc)
    check("FreePageReporting=no" in ctl(env, "show", "vm2").stdout.splitlines(), "show vm2: FreePageReporting")
    out = ctl(env, "show").stdout.splitlines()
    check(any(l.startswith("Version=") for l in out), "show (manager)")
    check("PressureTriggers=low some 100000 2000000, medium some 200000 2000000, critical full 200000 2000000"
          in out, "show: PressureTriggers")
    doc = json.loads(ctl(env, "show", "--json=short", "-p", "PressureTriggers").stdout)
    check(doc["PressureTriggers"][2] == {"level": "critical", "type": "full", "stall_usec": 200000,
                                         "window_usec": 2000000}, "show --json PressureTriggers: %r" % doc)

    # set-property in the config file's syntax; persistent by default, --runtime in /run
    ctl(env, "set-property", "vm1", "Weight=200", "MaximumMemory=384M", "LowStep=2.5%", "RecoveryDelaySec=1min")
    got = ctl(env, "show", "vm1", "-p", "Weight,MaximumMemory,LowStep,RecoveryDelaySec").stdout.splitlines()
    check(sorted(got) == sorted(["Weight=200", "MaximumMemory=%d" % (384 * MIB), "LowStep=25",
                                 "RecoveryDelaySec=60000000"]), "after set-property: %r" % got)
    check("MaximumMemory=%d" % (384 * MIB) in open(env.file("machines.d/vm1.conf")).read(), "not persisted")
    ctl(env, "set-property", "--runtime", "vm2", "Enabled=no")
    check("Enabled=no" in open(env.file("machines.run.d/vm2.conf")).read(), "--runtime not in the runtime dir")
    env.wait_property(env.machine_path("vm2"), "State", "unmanaged", timeout=2)
    ctl(env, "set-property", "vm2", "Enabled=yes", "--runtime")
    ctl(env, "set-default", "--runtime", "Weight=150")
    check(ctl(env, "show", "-p", "Weight", "--value").stdout == "150\n", "set-default")
    check(ctl(env, "show", "vm2", "-p", "Weight", "--value").stdout == "150\n", "vm2 did not inherit the default")

    # resize: sizes base 1024, within the bounds
    ctl(env, "resize", "vm1", "256M")
    env.wait_property(env.machine_path("vm1"), "ActualMemory", 256 * MIB, timeout=3)
    r = ctl(env, "resize", "vm1", "1G", rc=1)
    check("EffectiveMaximumMemory" in r.stderr, "resize above the maximum: %s" % r.stderr)
    r = ctl(env, "set-property", "vm1", "MinimumMemory=500M", rc=1)   # the daemon refuses: above MaximumMemory
    check("MinimumMemory" in r.stderr and "MaximumMemory" in r.stderr, "refusal: %s" % r.stderr)

    # top: a first frame, then a new one on a change
    exe = os.path.join(abtest.BUILDDIR, "controller/autoballoonctl")
    top = subprocess.Popen([exe, "top"], env=dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=env.address),
                           stdout=subprocess.PIPE, text=True)
    try:
        def read_until(word, timeout):
            buf, end = "", time.monotonic() + timeout
            while word not in buf and time.monotonic() < end:
                if select.select([top.stdout], [], [], 0.1)[0]:
                    buf += os.read(top.stdout.fileno(), 65536).decode()
            return buf
        first = read_until("machines listed", 3)
        check("vm1" in first and "256M" in first, "top's first frame: %r" % first)
        ctl(env, "resize", "vm1", "320M")
        frame = read_until("320M", 3)
        check("320M" in frame, "top did not redraw after a resize: %r" % frame)
    finally:
        top.terminate()
        check(top.wait(5) == 0, "top did not exit cleanly on SIGTERM")

    ctl(env, "reload")

    # exit codes: 4 for an unknown machine, for every verb that names one
    for args in (("status", "nope"), ("status", "vm1", "nope"), ("show", "nope"),
                 ("set-property", "nope", "Weight=5"), ("resize", "nope", "1G")):
        r = ctl(env, *args, rc=4)
        check("nope" in r.stderr, "%s: the error does not name the machine" % (args,))
    # 2: usage, nothing sent
    for args in (("bogus",), ("resize", "vm1"), ("resize", "vm1", "lots"), ("set-property", "vm1", "Wait=5"),
                 ("set-property", "vm1", "Weight=0"), ("set-property", "vm1", "Weight"), ("show", "a", "b"),
                 ("--json=xml", "list"), ("set-default",)):
        ctl(env, *args, rc=2)
    # 1: refused; as nobody: reads work, writes are denied
    ctl(env, "status", uid=NOBODY)
    r = ctl(env, "set-property", "vm1", "Weight=300", uid=NOBODY, rc=1)
    check("denied" in r.stderr, "not root: %s" % r.stderr)
    ctl(env, "resize", "vm1", "300M", uid=NOBODY, rc=1)
    check(env.ab_get(env.machine_path("vm1"), "Weight") == 200, "a denied set-property changed Weight")
    check(env.stop_daemon() == 0, "daemon did not exit cleanly")


abtest.main(test, "ctl")
