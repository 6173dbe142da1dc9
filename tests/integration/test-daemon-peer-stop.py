#!/usr/bin/python3
"""The loop never waits on another service: systemd-machined, systemd (the namespace's PID 1)
and polkitd are each stopped (SIGSTOP, the test environment's own instance, by PID) while the
daemon has a call to it in flight, and a real stall arrives in a VM's scope meanwhile. The
daemon must still send that VM its `balloon` before the service resumes, and answer `Get`
within 100 ms throughout; after SIGCONT everything catches up: the machine created during the
stop is managed, the property write that waited for polkit is applied.

How the daemon is made to call the stopped service, without a race: the daemon itself is
stopped first, the event that makes it call (machined's MachineNew for a new VM, or an
unprivileged set-property) is queued for it, the service is stopped, and only then is the
daemon resumed. Each stop lasts STOP_SECONDS, longer than polkit's 5 s check timeout and far
longer than the 100 ms answer budget: a daemon that blocks on any of these calls fails here."""
import os
import signal
import sys
import time

import dbus

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
import abtest  # noqa: E402
from abtest import AB, AB_MACHINE, AB_MANAGER, AB_PATH, PROPS, check, log  # noqa: E402

MIB = 1 << 20
STOP_SECONDS = 7.0
ANSWER_BUDGET = 0.100
NOBODY = 65534
RULES = """polkit.addRule(function(action, subject) {
        if (action.id == "org.autoballoon1.manage" && subject.user == "nobody")
                return polkit.Result.YES;
        return polkit.Result.NOT_HANDLED;
});
"""


def ns_host_pid(env, comm):
    """Host PID of the process named comm in the environment's PID namespace."""
    ns = os.readlink("/proc/%d/ns/pid" % env.pid1)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if open("/proc/%s/comm" % pid).read().strip() == comm and os.readlink("/proc/%s/ns/pid" % pid) == ns:
                return int(pid)
        except OSError:
            continue
    raise abtest.Fail("no %s in the environment" % comm)


def stopped(env, what, service, vm, during=None):
    """Stop service (a PID, or a Proc started through nsenter) for STOP_SECONDS with a stall in vm's scope; probe Get all along. The daemon is
    resumed once pid is stopped; during() runs while the daemon is still stopped (it queues
    the event that makes the daemon call the service). Returns when pid runs again."""
    path = env.machine_path(vm.name)
    cg = env.ab_get(path, "ControlGroup")
    pause = service.pause if isinstance(service, abtest.Proc) else lambda: os.kill(service, signal.SIGSTOP)
    resume = service.resume if isinstance(service, abtest.Proc) else lambda: os.kill(service, signal.SIGCONT)
    env.daemon.pause()
    try:
        result = during() if during else None
        pause()
        t0 = time.monotonic()
    finally:
        env.daemon.resume()
    log("%s stopped; daemon resumed" % what)
    try:
        stall = env.stall(cg, seconds=STOP_SECONDS - 1)
        worst, n, sent_at = 0.0, 0, None
        while time.monotonic() - t0 < STOP_SECONDS:
            t = time.monotonic()
            try:
                env.call(AB, path, PROPS, "Get", AB_MACHINE, "State", timeout=STOP_SECONDS)
            except dbus.exceptions.DBusException as e:
                log("Get failed while %s was stopped: %s" % (what, e.get_dbus_name()))
            worst, n = max(worst, time.monotonic() - t), n + 1
            if sent_at is None and vm.balloon_targets():
                sent_at = time.monotonic() - t0
            env.daemon_check()
            time.sleep(0.05)
        stall.wait()
    finally:
        resume()
    log("%s stopped %.1f s: %d Get answered, slowest %.1f ms; balloon to %s %s" %
        (what, STOP_SECONDS, n, worst * 1000, vm.name,
         "after %.2f s" % sent_at if sent_at is not None else "never"))
    check(worst <= ANSWER_BUDGET, "%s stopped: Get took %.1f ms (budget %d ms)" % (what, worst * 1000,
                                                                                 ANSWER_BUDGET * 1000))
    check(sent_at is not None, "%s stopped: no balloon to %s while the stall ran" % (what, vm.name))
    check(vm.balloon_targets()[0] < 512 * MIB, "%s: balloon target is not below 512 MiB" % vm.name)
    return result


def test(env):
    polkitd = env.start_polkitd(RULES)
    quiet = "/sys/fs/cgroup/%s/system.slice/memory.pressure" % env.name
    vms = [env.start_vm("vm%d" % i, memory="512M") for i in (1, 2, 3)]
    env.start_daemon(env.write_config(host_pressure=quiet))
    for vm in vms:
        env.wait_property(env.machine_path(vm.name), "State", "managed", timeout=5)

    # machined: MachineNew for "late1" is queued for the daemon, which asks machined about it
    late = {}
    stopped(env, "systemd-machined", ns_host_pid(env, "systemd-machine"), vms[0],
            during=lambda: late.setdefault("late1", env.start_vm("late1", memory="512M")))
    env.wait_property(env.machine_path("late1"), "State", "managed", timeout=5)
    log("late1 managed after machined resumed")

    # systemd: machined answers, the daemon's GetUnit/ControlGroup for "late2" waits on PID 1
    stopped(env, "systemd", env.pid1, vms[1],
            during=lambda: late.setdefault("late2", env.start_vm("late2", memory="512M")))
    env.wait_property(env.machine_path("late2"), "State", "managed", timeout=5)
    log("late2 managed after systemd resumed")

    # polkitd: a property write and a method call by a user polkit will grant wait for it
    path = env.machine_path("vm1")
    calls = {}

    def queue_writes():
        calls["set"] = env.busctl_as(NOBODY, "set-property", AB, path, AB_MACHINE, "Weight", "u", "4321",
                                     background=True)
        calls["method"] = env.busctl_as(NOBODY, "call", AB, AB_PATH, AB_MANAGER, "SetMachineProperties",
                                        "sba(sv)", "vm2", "true", "1", "Weight", "u", "1234", background=True)
        time.sleep(0.3)   # both calls reach the daemon's socket before it resumes
    stopped(env, "polkitd", polkitd, vms[2], during=queue_writes)
    for what, p in calls.items():
        out, err = p.communicate(timeout=10)
        log("%s as nobody after polkitd resumed: %d %s" % (what, p.returncode, err.strip()))
        check(p.returncode == 0, "%s as nobody failed after polkitd resumed: %s" % (what, err.strip()))
    check(env.ab_get(path, "Weight") == 4321, "set-property held for polkit was not applied")
    check(env.ab_get(env.machine_path("vm2"), "Weight") == 1234, "SetMachineProperties held for polkit was not applied")
    check(env.stop_daemon() == 0, "daemon did not exit cleanly")


abtest.main(test, "daemon-peer-stop")
