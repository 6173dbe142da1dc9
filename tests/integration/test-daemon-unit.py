#!/usr/bin/python3
"""The daemon as the shipped unit (units/autoballoond.service, its whole sandbox) started by the
environment's real systemd: Type=notify start; the sandbox in force (capabilities, no new
privileges, seccomp, OOM score, the host's /tmp read-only); fake VMs whose QMP sockets are in
/tmp and in /run managed and their balloons moved; PSI triggers, drop-ins and a reload working
inside the sandbox; a relative socket path unmanaged with a StateReason that says why; libvirt
loaded (dlopen) inside the sandbox by a libvirt machine (built with libvirt); the
watchdog on (WatchdogUSec), fed over an idle spell, and enforced: a loop that stops turning is
killed and the unit restarted, the VMs managed again.

The unit runs with a test drop-in: ExecStart= the build's daemon with the test's config,
WatchdogSec= short enough for a test, logs to the state dir, no core dumps, LeakSanitizer off
(it needs ptrace(), which the seccomp filter refuses; other tests check leaks), and
ReadWritePaths= the state dir instead of ConfigurationDirectory=, which would create
/etc/autoballoon on the host: the environment shares the host's /etc."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import dbus

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
import abtest  # noqa: E402
from abtest import check, log  # noqa: E402

MIB = 1 << 20
UNIT = "autoballoond.service"
WATCHDOG_SEC = 2
IDLE_SECONDS = 10
CAP_DAC_OVERRIDE, CAP_SYS_PTRACE, CAP_SYS_RESOURCE = 1, 19, 24


def systemctl(env, *args, check_rc=True):
    r = subprocess.run([abtest.ENV_SH, "exec", "systemctl", "--no-pager", *args], text=True,
                       capture_output=True, env=dict(os.environ, AB_ENV_NAME=env.name), timeout=60)
    if check_rc and r.returncode != 0:
        raise abtest.Fail("systemctl %s: %s%s" % (" ".join(args), r.stdout, r.stderr))
    return r


def unit_props(env, *props):
    out = systemctl(env, "show", UNIT, *("-p" + p for p in props)).stdout
    return dict(l.split("=", 1) for l in out.splitlines() if "=" in l)


def install_unit(env, config):
    """The built unit and the test drop-in into the environment's unit directory."""
    units = os.path.join(env.state, "units")
    shutil.copy(os.path.join(abtest.BUILDDIR, "units", UNIT), units)
    # the targets a unit with default dependencies pulls in; the environment has none
    for t in ("sysinit.target", "basic.target", "shutdown.target"):
        with open(os.path.join(units, t), "w") as f:
            f.write("[Unit]\nDefaultDependencies=no\n")
    os.makedirs(os.path.join(units, UNIT + ".d"), exist_ok=True)
    with open(os.path.join(units, UNIT + ".d", "test.conf"), "w") as f:
        f.write("[Service]\nExecStart=\nExecStart=%s --config=%s --log-level=debug\n"
                "WatchdogSec=%ds\nLimitCORE=0\n"
                "Environment=ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 "
                "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1\n"
                "StandardOutput=append:%s\nStandardError=inherit\n"
                "ConfigurationDirectory=\nReadWritePaths=\nReadWritePaths=%s\n"
                % (os.path.join(abtest.BUILDDIR, "controller/autoballoond"), config, WATCHDOG_SEC,
                   env.file("autoballoond.log"), env.state))
    systemctl(env, "daemon-reload")


def main_host_pid(env):
    """The unit's main process as the host sees it (/proc here is the host's)."""
    cg = env.cgroup_dir(env.control_group(UNIT))
    pids = [int(p) for p in open(os.path.join(cg, "cgroup.procs")).read().split()]
    check(len(pids) == 1, "%s runs %d processes: %s" % (UNIT, len(pids), pids))
    return pids[0]


def proc_status(pid):
    return dict(l.rstrip("\n").split(":\t", 1) for l in open("/proc/%d/status" % pid) if ":\t" in l)


def mount_options(pid, path):
    """The options of the mount that holds path, in pid's mount namespace."""
    best, opts = "", ""
    for line in open("/proc/%d/mountinfo" % pid):
        f = line.split()
        mnt = f[4]
        if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
            best, opts = mnt, f[5]
    return opts.split(",")


def have_libvirt():
    for line in open(os.path.join(abtest.BUILDDIR, "build-config.h")):
        if line.split()[:2] == ["#define", "HAVE_LIBVIRT"]:
            return line.split()[2] == "1"
    return False


def fake_vm(env, name, sock, cwd=None, wait_path=None):
    """A fake VM whose leader's command line names sock (relative to cwd if given)."""
    rec = env.file("%s.qmp-record.log" % name)
    cmd = env.fake_qmp_cmd(name, sock, rec)
    if cwd:
        cmd = ["sh", "-c", 'cd "$0" && exec "$@"', cwd, *cmd]
    proc = env.spawn(cmd, name="vm-" + name, stderr=env.file("%s.leader.log" % name))
    env.wait_for(lambda: os.path.exists(wait_path or sock), 5, "QMP socket of %s" % name)
    return abtest.VM(name, proc, sock, rec, env.create_machine(name, proc.ns_pid))


def test(env):
    fake = os.path.join(abtest.BUILDDIR, "tests/fake-qmp/fake-qmp")
    if not os.access(fake, os.X_OK):
        raise abtest.Skip("no fake QMP device at %s" % fake)
    tmpdir = tempfile.mkdtemp(prefix="abt-unit-", dir="/tmp")
    try:
        run(env, tmpdir)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def run(env, tmpdir):
    # /tmp: the host's, which the unit leaves visible (read-only); /run: the namespace's own
    # tmpfs, as a VM manager's /run/<manager>/... would be; the host sees it through PID 1's root
    vm_tmp = fake_vm(env, "vm-tmp", os.path.join(tmpdir, "vm-tmp.qmp"))
    vm_run = fake_vm(env, "vm-run", "/run/abt-vm-run.qmp",
                     wait_path="/proc/%d/root/run/abt-vm-run.qmp" % env.pid1)
    vm_rel = fake_vm(env, "vm-rel", "vm-rel.qmp", cwd=tmpdir, wait_path=os.path.join(tmpdir, "vm-rel.qmp"))

    config = env.write_config()
    # libvirt's machine below: a socket nobody listens on, as with libvirtd stopped
    with open(config) as f:
        text = f.read().replace("[Manager]\n", "[Manager]\nLibvirtURI=qemu+unix:///system?socket=%s\n"
                                % env.file("no-libvirt-sock"), 1)
    with open(config, "w") as f:
        f.write(text)
    install_unit(env, config)
    t = time.monotonic()
    systemctl(env, "start", UNIT)   # Type=notify: returns after READY=1
    p = unit_props(env, "ActiveState", "SubState", "MainPID", "WatchdogUSec", "NRestarts")
    log("%s started in %.2f s: %s" % (UNIT, time.monotonic() - t, p))
    check(p["ActiveState"] == "active" and p["SubState"] == "running", "unit not running: %s" % p)
    check(env.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                   "NameHasOwner", abtest.AB), "%s not on the bus" % abtest.AB)

    # the sandbox is the one the unit file promises
    pid = main_host_pid(env)
    st = proc_status(pid)
    cap_eff, cap_bnd = int(st["CapEff"], 16), int(st["CapBnd"], 16)
    log("daemon host pid %d: CapEff %s CapBnd %s NoNewPrivs %s Seccomp %s" %
        (pid, st["CapEff"], st["CapBnd"], st["NoNewPrivs"], st["Seccomp"]))
    # what the unit grants, within what this machine grants us (a container may lack some)
    want = ((1 << CAP_DAC_OVERRIDE) | (1 << CAP_SYS_RESOURCE)) & int(proc_status(os.getpid())["CapBnd"], 16)
    check(cap_bnd == want, "bounding set %s, not %x (DAC_OVERRIDE, SYS_RESOURCE)" % (st["CapBnd"], want))
    check(not cap_eff & (1 << CAP_SYS_PTRACE), "CAP_SYS_PTRACE effective")
    check(st["NoNewPrivs"] == "1" and st["Seccomp"] == "2", "no NoNewPrivileges or no seccomp filter")
    # lowering it needs CAP_SYS_RESOURCE in the manager (systemd then ignores the failure)
    oom = open("/proc/%d/oom_score_adj" % pid).read().strip()
    check(unit_props(env, "OOMScoreAdjust")["OOMScoreAdjust"] == "-900", "OOMScoreAdjust= is not -900")
    if want & (1 << CAP_SYS_RESOURCE):
        check(oom == "-900", "oom_score_adj %s, not -900" % oom)
    else:
        log("oom_score_adj %s: this machine grants no CAP_SYS_RESOURCE, so systemd cannot lower it" % oom)
    check("ro" in mount_options(pid, tmpdir), "the host's /tmp is writable to the daemon: %s" %
          mount_options(pid, tmpdir))

    # /tmp and /run sockets managed; a balloon move reaches each
    for vm in (vm_tmp, vm_run):
        path = env.machine_path(vm.name)
        env.wait_property(path, "State", "managed", timeout=5)
        check(env.ab_get(path, "QMPSocket") == vm.qmp_socket, "%s QMPSocket %r" % (vm.name, env.ab_get(path, "QMPSocket")))
        env.ab_call("ResizeMachine", vm.name, dbus.UInt64(384 * MIB))
        env.wait_for(lambda: vm.balloon_targets() == [384 * MIB], 3, "the balloon command to %s" % vm.name)
        env.wait_property(path, "ActualMemory", 384 * MIB, timeout=3)
        log("%s (%s): managed, balloon moved to 384 MiB" % (vm.name, vm.qmp_socket))

    # what the sandbox must still allow: PSI triggers written into cgroup files, drop-ins
    # written (persistent and runtime; the test's MachinesDirectory= is in the state dir)
    text = open(env.file("autoballoond.log"), errors="replace").read()
    check("annot watch" not in text, "a PSI trigger could not be armed in the sandbox:\n%s" % text[-3000:])
    for runtime, d in ((False, "machines.d"), (True, "machines.run.d")):
        weight = 300 + runtime
        env.ab_call("SetMachineProperties", vm_tmp.name, runtime,
                    dbus.Array([("Weight", dbus.UInt32(weight, variant_level=1))], signature="(sv)"))
        dropin = open(env.file("%s/%s.conf" % (d, vm_tmp.name))).read()
        check("Weight=%d" % weight in dropin, "%s drop-in: %r" % (d, dropin))
    log("PSI triggers armed; persistent and runtime drop-ins written")
    systemctl(env, "reload", UNIT)   # ExecReload= sends SIGHUP, under the same sandbox
    env.wait_for(lambda: "Reloaded " in open(env.file("autoballoond.log"), errors="replace").read(), 5,
                 "the daemon to reload")
    check(unit_props(env, "ActiveState")["ActiveState"] == "active", "not active after reload")

    # a relative path cannot be resolved without CAP_SYS_PTRACE: said so, nothing connected
    path = env.machine_path(vm_rel.name)
    env.wait_property(path, "State", "unmanaged", timeout=5)
    reason = env.ab_get(path, "StateReason")
    log("%s: %s" % (vm_rel.name, reason))
    check('"vm-rel.qmp"' in reason and "relative" in reason and "CAP_SYS_PTRACE" in reason and
          "QMPSocket=" in reason, "StateReason does not say why: %r" % reason)
    check(vm_rel.records() == "", "the daemon talked to the relative socket: %s" % vm_rel.records())

    # libvirt is dlopen()ed by the first libvirt machine: under MemoryDenyWriteExecute= and the
    # seccomp filter too. It loads, and the machine fails only for want of a libvirtd.
    if have_libvirt():
        check(not any("libvirt.so" in l for l in open("/proc/%d/maps" % pid)), "libvirt mapped before a libvirt machine")
        lv = env.spawn(["sleep", "600"], name="vm-lv", stderr=env.file("vm-lv.leader.log"))
        env.create_machine("vm-lv", lv.ns_pid, service="libvirt-qemu")
        path = env.machine_path("vm-lv")
        env.wait_property(path, "State", "failed", timeout=5)
        reason = env.ab_get(path, "StateReason")
        log("vm-lv: %s" % reason)
        check(env.ab_get(path, "Backend") == "libvirt" and "cannot connect" in reason,
              "vm-lv: Backend %r, StateReason %r" % (env.ab_get(path, "Backend"), reason))
        check(any("libvirt.so" in l for l in open("/proc/%d/maps" % pid)), "libvirt not loaded in the sandbox")

    # the watchdog: on, and fed by the loop while nothing happens
    usec = int(env.get(abtest.S1, unit_path(env), abtest.S1 + ".Service", "WatchdogUSec"))
    check(usec == WATCHDOG_SEC * 1000000, "WatchdogUSec %d" % usec)
    main_pid = p["MainPID"]
    stamps = set()
    end = time.monotonic() + IDLE_SECONDS
    while time.monotonic() < end:
        stamps.add(int(env.get(abtest.S1, unit_path(env), abtest.S1 + ".Service", "WatchdogTimestampMonotonic")))
        time.sleep(0.25)
    p = unit_props(env, "ActiveState", "MainPID", "NRestarts", "Result")
    log("after %d s idle: %d distinct watchdog pings seen, %s" % (IDLE_SECONDS, len(stamps), p))
    check(p["ActiveState"] == "active" and p["MainPID"] == main_pid and p["NRestarts"] == "0",
          "the daemon did not survive %d s idle with WatchdogSec=%d: %s" % (IDLE_SECONDS, WATCHDOG_SEC, p))
    check(len(stamps) >= IDLE_SECONDS // WATCHDOG_SEC, "only %d watchdog pings in %d s" % (len(stamps), IDLE_SECONDS))

    # ... and enforced: a stopped loop sends no pings; systemd aborts it and restarts the unit
    os.kill(pid, signal.SIGSTOP)
    t = time.monotonic()
    try:
        env.wait_for(lambda: unit_props(env, "Result")["Result"] == "watchdog", WATCHDOG_SEC + 5,
                     "the watchdog to fire on a stopped daemon", interval=0.2)
        log("watchdog fired %.1f s after SIGSTOP" % (time.monotonic() - t))
    finally:
        try:
            os.kill(pid, signal.SIGCONT)   # systemd sends one after its SIGABRT; in case it did not
        except ProcessLookupError:
            pass
    env.wait_for(lambda: unit_props(env, "NRestarts")["NRestarts"] == "1" and
                 unit_props(env, "ActiveState")["ActiveState"] == "active", 15, "the restart",
                 interval=0.2)
    p = unit_props(env, "MainPID", "NRestarts")
    check(p["MainPID"] != main_pid, "same MainPID after the restart: %s" % p)
    for vm in (vm_tmp, vm_run):
        env.wait_property(env.machine_path(vm.name), "State", "managed", timeout=5)
    log("restarted (MainPID %s), both VMs managed again" % p["MainPID"])

    systemctl(env, "stop", UNIT)
    p = unit_props(env, "ActiveState", "Result", "ExecMainStatus")
    check(p["ActiveState"] == "inactive" and p["Result"] == "success" and p["ExecMainStatus"] == "0",
          "stop: %s" % p)
    log("stopped cleanly: %s" % p)


def unit_path(env):
    return env.call(abtest.S1, "/org/freedesktop/systemd1", abtest.S1 + ".Manager", "GetUnit", UNIT)


abtest.main(test, "daemon-unit")
