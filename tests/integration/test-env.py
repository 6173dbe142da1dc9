#!/usr/bin/python3
"""The integration environment itself: real machined on a private bus, a VM registered as
libvirt does, its scope's ControlGroup, a real PSI stall there, the project's bus policy."""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
import abtest  # noqa: E402
from abtest import check, log, M1  # noqa: E402


def test(env):
    # the project's policy is loaded: root may own org.autoballoon1, and only because of it
    check(env.can_own(abtest.AB), "root cannot own %s on the private bus" % abtest.AB)
    check(not env.can_own("org.autoballoon1.NotInPolicy"), "the bus policy is not enforced")

    # a leader in the namespace: the fake QMP device (a build without it is a broken build, and
    # every other integration test needs it: fail here, where the cause is plain)
    try:
        cmd = env.fake_qmp_cmd("vm-env", env.file("vm-env.qmp"), env.file("vm-env.qmp-record.log"))
    except abtest.Skip as e:
        raise abtest.Fail("no fake QMP device: %s" % e)
    leader = env.spawn(cmd, name="leader", stderr=env.file("leader.log"))
    check(leader.ns_pid != leader.host_pid and leader.ns_pid > 1, "leader has no namespace PID")

    t = time.monotonic()
    mpath = env.create_machine("vm-env", leader.ns_pid)
    env.wait_signal("MachineNew", lambda s: s[4][0] == "vm-env", timeout=5, since=t)
    log("MachineNew after %.3f s" % (time.monotonic() - t))
    unit = env.get(M1, mpath, M1 + ".Machine", "Unit")
    # machined escapes the name as a unit name: '-' becomes \x2d
    check(unit == abtest.scope_name("vm-env") == "machine-vm\\x2denv.scope", "Unit is %r" % unit)
    check(env.get(M1, mpath, M1 + ".Machine", "Class") == "vm", "Class is not vm")
    check(env.get(M1, mpath, M1 + ".Machine", "Leader") == leader.ns_pid, "Leader is not the ns PID")
    cg = env.control_group(unit)
    check(cg == "/%s/machine.slice/%s" % (env.name, unit), "ControlGroup is %r" % cg)
    procs = open(env.cgroup_dir(cg) + "/cgroup.procs").read().split()
    check(str(leader.host_pid) in procs, "leader not in %s: %s" % (cg, procs))
    log("Unit %s, ControlGroup %s" % (unit, cg))

    # a real stall in the scope fires a PSI trigger on it (2 s windows: no CAP_SYS_RESOURCE)
    trig = env.psi_trigger(cg, "some 150000 2000000")
    s = env.stall(cg, seconds=8)
    t = time.monotonic()
    fired = trig.wait(8)
    log("PSI trigger %s after %.2f s" % ("fired" if fired else "did NOT fire", time.monotonic() - t))
    r = s.wait()
    log("stall in the scope:", r)
    check(fired, "PSI trigger on %s did not fire under the stall" % cg)
    check(r["some_percent"] >= 7.5, "stall too small: %s" % r)

    t = time.monotonic()
    env.terminate_machine("vm-env")
    env.wait_signal("MachineRemoved", lambda s: s[4][0] == "vm-env", timeout=5, since=t)
    log("MachineRemoved after %.3f s" % (time.monotonic() - t))
    env.wait_for(lambda: not os.path.exists(env.cgroup_dir(cg)), 5, "scope cgroup removed")
    env.wait_for(lambda: not leader.alive(), 5, "leader killed with its scope")
    left = [m for m in env.list_machines() if m[1] != "host"]  # machined always lists .host
    check(left == [], "machines left: %s" % left)


abtest.main(test, "env")
