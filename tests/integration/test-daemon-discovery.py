#!/usr/bin/python3
"""Discovery: VMs registered with machined (before and after the daemon starts) appear on
org.autoballoon1 within 1 s with Unit, ControlGroup, Leader and QMPSocket (from the leader's
command line); TerminateMachine removes them within 1 s; an idle daemon does not wake up; SIGTERM ends it
cleanly."""
import os
import sys
import time

import dbus

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
import abtest  # noqa: E402
from abtest import check, log  # noqa: E402

APPEAR_SECONDS = 1.0
IDLE_SECONDS = 5


def check_machine(env, vm):
    path = env.machine_path(vm.name)
    props = env.get_all(abtest.AB, path, abtest.AB_MACHINE)
    log("%s: %s" % (vm.name, {k: props[k] for k in ("Unit", "ControlGroup", "Leader", "QMPSocket", "State")}))
    check(props["Name"] == vm.name, "Name is %r" % props["Name"])
    check(props["Unit"] == vm.unit, "Unit is %r, machined says %r" % (props["Unit"], vm.unit))
    cg = env.control_group(vm.unit)
    check(props["ControlGroup"] == cg, "ControlGroup is %r, systemd1 says %r" % (props["ControlGroup"], cg))
    check(props["Leader"] == vm.proc.ns_pid, "Leader is %r, not the ns PID %d" % (props["Leader"], vm.proc.ns_pid))
    check(props["QMPSocket"] == vm.qmp_socket, "QMPSocket is %r, not %r" % (props["QMPSocket"], vm.qmp_socket))
    # until the daemon moves the balloon, the target is the VM's current size
    env.wait_property(path, "State", "managed", timeout=5)
    env.wait_property(path, "TargetMemory", 512 << 20, timeout=2)


def test(env):
    pre = env.start_vm("pre")            # registered before the daemon starts
    # the host pressure source given as a unit: resolved through systemd1's ControlGroup
    env.start_daemon(env.write_config(host_pressure="machine.slice"))
    src = env.get(abtest.AB, abtest.AB_PATH, abtest.AB_MANAGER, "HostPressureSource")
    want = "/sys/fs/cgroup/%s/machine.slice/memory.pressure" % env.name
    check(src == want, "HostPressureSource=machine.slice resolved to %r, not %r" % (src, want))
    check_machine(env, pre)
    machines = env.ab_machines()
    check(".host" not in machines, "the host is listed as a machine: %s" % machines)

    # a VM that appears while the daemon runs (the name needs escaping in the object path)
    t = time.monotonic()
    vm = env.start_vm("vm-2.test")
    path = env.machine_path(vm.name)
    check(path.endswith("/vm_2d2_2etest"), "unexpected path encoding %s" % path)
    env.wait_signal("MachineAdded", lambda s: s[4][0] == vm.name, timeout=APPEAR_SECONDS, since=t)
    appeared = env.wait_for(lambda: vm.name in env.ab_machines() and time.monotonic(), APPEAR_SECONDS,
                            "%s on org.autoballoon1" % vm.name)
    log("%s appeared after %.3f s" % (vm.name, appeared - t))
    check(env.ab_call("GetMachine", vm.name) == path, "GetMachine path differs")
    check_machine(env, vm)

    try:
        env.ab_call("GetMachine", "no-such-vm")
        raise abtest.Fail("GetMachine of an unknown name succeeded")
    except dbus.DBusException as e:
        check(e.get_dbus_name() == "org.autoballoon1.Error.NoSuchMachine", "GetMachine error %s" % e.get_dbus_name())

    # TerminateMachine: gone within 1 s, MachineRemoved, the other VM untouched
    t = time.monotonic()
    env.terminate_machine(vm.name)
    env.wait_signal("MachineRemoved", lambda s: s[4][0] == vm.name, timeout=APPEAR_SECONDS, since=t)
    gone = env.wait_for(lambda: vm.name not in env.ab_machines() and time.monotonic(), APPEAR_SECONDS,
                        "%s removed" % vm.name)
    log("%s removed after %.3f s" % (vm.name, gone - t))
    check(list(env.ab_machines()) == ["pre"], "machines now: %s" % env.ab_machines())
    env.wait_property(env.machine_path("pre"), "State", "managed", timeout=1)

    # QMP on -chardev + -mon mode=control (libvirt's way), after an HMP monitor that must be
    # skipped
    hmp, qmp = env.file("chardev.hmp"), env.file("chardev.qmp")
    cmd = env.fake_qmp_cmd("chardev", qmp, env.file("chardev.qmp-record.log"))
    cmd = [cmd[0], "-chardev", "socket,id=hmp0,path=%s,server=on,wait=off" % hmp,
           "-mon", "chardev=hmp0,mode=readline",
           "-chardev", "socket,id=charmonitor,path=%s,server=on,wait=off" % qmp,
           "-mon", "chardev=charmonitor,id=monitor,mode=control"] + cmd[3:]
    vm = env.start_vm("chardev", leader_cmd=cmd)
    env.wait_for(lambda: os.path.exists(qmp), 5, "QMP socket of the -chardev VM")
    vm.qmp_socket = qmp
    env.wait_for(lambda: "chardev" in env.ab_machines(), APPEAR_SECONDS, "chardev VM on org.autoballoon1")
    check_machine(env, vm)

    # a VM with no QMP socket on its command line and no drop-in: listed, saying why
    env.start_vm("noqmp", leader_cmd=["sleep", "600"])
    st = env.wait_property(env.machine_path("noqmp"), "State", "unmanaged", timeout=APPEAR_SECONDS)
    reason = env.ab_get(env.machine_path("noqmp"), "StateReason")
    log("noqmp: %s, %r" % (st, reason))
    check(reason, "no StateReason for an unmanaged VM")

    # idle: no pressure, every VM at its maximum -> no timer may wake the daemon
    def wakeups():
        st = dict(l.split(":", 1) for l in open("/proc/%d/status" % env.daemon.host_pid))
        return int(st["voluntary_ctxt_switches"]) + int(st["nonvoluntary_ctxt_switches"])
    # settled: the start-up's last replies are in once a half second passes without a wake-up
    env.wait_for(lambda: (lambda w: (time.sleep(0.5), wakeups() == w)[1])(wakeups()), 10,
                 "the daemon to settle after start-up")
    w0 = wakeups()
    time.sleep(IDLE_SECONDS)   # the measurement window
    idle = wakeups() - w0
    log("daemon wakeups while idle: %d in %d s" % (idle, IDLE_SECONDS))
    check(idle <= 2, "the daemon woke up %d times in %d idle seconds" % (idle, IDLE_SECONDS))

    rc = env.stop_daemon()
    check(rc == 0, "daemon exit code %s on SIGTERM" % rc)


abtest.main(test, "daemon-discovery")
