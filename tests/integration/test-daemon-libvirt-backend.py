#!/usr/bin/python3
"""Which backend drives a machine, and the libvirt backend without a libvirtd: machines that
machined lists with service libvirt-qemu (as libvirt registers its domains) and no QMP socket
of the daemon's own go to libvirt; one with such a socket stays on QMP; Backend=qmp keeps a
libvirt machine off libvirt. libvirt's library is loaded only by the first libvirt machine
(dlopen): before it, the daemon has no libvirt.so mapped. With libvirtd unreachable the libvirt
machine is kept, failed, its StateReason says so and when it retries, and the retries back off.
Without libvirt's library (hidden from a second daemon by /dev/null bound over it in a mount
namespace of its own) the libvirt machine is failed with a StateReason naming the package to
install, and the QMP machines are served. (A real libvirtd and a real domain:
tests/e2e/test-libvirt.py.)"""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
import abtest  # noqa: E402
from abtest import check, log  # noqa: E402


def have_libvirt():
    for line in open(os.path.join(abtest.BUILDDIR, "build-config.h")):
        if line.split()[:2] == ["#define", "HAVE_LIBVIRT"]:
            return line.split()[2] == "1"
    return False


def libvirt_library():
    """The file ld.so loads for libvirt.so.0 (ldconfig's cache; this architecture's first), or None."""
    out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=True).stdout
    found = [m.groups() for m in re.finditer(r"^\s*libvirt\.so\.0 \(([^)]*)\) => (\S+)$", out, re.M)]
    arch = "x86-64" if os.uname().machine == "x86_64" else ""
    found.sort(key=lambda f: arch not in f[0])
    return os.path.realpath(found[0][1]) if found else None


def mapped(env, what):
    """Whether the daemon has a file whose name contains what mapped."""
    return any(what in line for line in open("/proc/%d/maps" % env.daemon.host_pid))


def machine(env, name, leader_cmd, service):
    """A machine registered as libvirt does, under the given service name."""
    proc = env.spawn(leader_cmd, name="vm-" + name, stderr=env.file("%s.leader.log" % name))
    env.create_machine(name, proc.ns_pid, service=service)
    return proc


def test(env):
    # a socket nobody listens on: the connection fails at once, as with libvirtd stopped
    uri = "qemu+unix:///system?socket=%s" % env.file("no-libvirt-sock")
    env.machine_dropin("lv-forced-qmp", "[Machine]\nBackend=qmp\n")
    # write_config has no LibvirtURI= argument: add the line to its [Manager] section
    path = env.write_config()
    text = open(path).read().replace("[Manager]\n", "[Manager]\nLibvirtURI=%s\n" % uri, 1)
    with open(path, "w") as f:
        f.write(text)
    env.start_daemon(config=path)

    sock, rec = env.file("lv-qmp.qmp"), env.file("lv-qmp.rec")
    machine(env, "lv-qmp", env.fake_qmp_cmd("lv-qmp", sock, rec), "libvirt-qemu")
    machine(env, "lv-forced-qmp", ["sleep", "600"], "libvirt-qemu")
    machine(env, "plain", ["sleep", "600"], "autoballoon-test")

    # a QMP socket of our own on the command line wins over libvirt
    p = env.machine_path("lv-qmp")
    env.wait_property(p, "State", "managed", timeout=5)
    check(env.ab_get(p, "Backend") == "qmp", "lv-qmp: Backend %r" % env.ab_get(p, "Backend"))

    # not libvirt's, no socket: unmanaged, no backend
    p = env.machine_path("plain")
    env.wait_property(p, "State", "unmanaged", timeout=5)
    check(env.ab_get(p, "Backend") == "", "plain: Backend %r" % env.ab_get(p, "Backend"))

    # Backend=qmp: libvirt's, but kept off libvirt
    p = env.machine_path("lv-forced-qmp")
    env.wait_property(p, "State", "unmanaged", timeout=5)
    check(env.ab_get(p, "Backend") == "", "lv-forced-qmp: Backend %r" % env.ab_get(p, "Backend"))
    check("QMP" in env.ab_get(p, "StateReason"), "lv-forced-qmp: %r" % env.ab_get(p, "StateReason"))

    # none of these needed libvirt: its library (and glib, which it pulls in) is not loaded
    check(not mapped(env, "libvirt.so"), "libvirt.so mapped with no libvirt machine")
    check(not mapped(env, "libglib-2.0.so"), "glib mapped with no libvirt machine")

    machine(env, "lv-nosock", ["sleep", "600"], "libvirt-qemu")
    p = env.machine_path("lv-nosock")
    if not have_libvirt():
        env.wait_property(p, "State", "unmanaged", timeout=5)
        reason = env.ab_get(p, "StateReason")
        log("built without libvirt:", reason)
        check("without libvirt" in reason, "lv-nosock: %r" % reason)
        return

    # libvirt's, no socket: the libvirt backend, which cannot connect
    env.wait_property(p, "State", "failed", timeout=5)
    check(env.ab_get(p, "Backend") == "libvirt", "lv-nosock: Backend %r" % env.ab_get(p, "Backend"))
    check(mapped(env, "libvirt.so"), "libvirt.so not loaded by the first libvirt machine")
    since = env.signals[-1][0] if env.signals else 0
    env.pump(4)
    reasons = [c.get("StateReason") for c in
               (s[4][1] for s in env.signals if s[0] >= since and s[1] == p and s[3] == "PropertiesChanged")
               if c.get("StateReason")]
    log("StateReason while libvirt is unreachable:", reasons)
    check(all(uri in r and "cannot connect" in r and "reconnecting in" in r for r in reasons),
          "StateReason does not say why and when: %r" % reasons)
    delays = [float(m.group(1)) for r in reasons for m in [re.search(r"reconnecting in ([0-9.]+) s", r)] if m]
    check(len(delays) >= 2 and delays == sorted(delays) and delays[-1] > delays[0],
          "the retries do not back off: %r" % delays)
    # the machine is kept all along, the others still served
    check("lv-nosock" in env.ab_machines(), "the libvirt machine was dropped")
    check(env.ab_get(env.machine_path("lv-qmp"), "State") == "managed", "lv-qmp no longer managed")
    check(env.stop_daemon() == 0, "the daemon did not exit cleanly")

    # libvirt not installed: a daemon that finds /dev/null where ld.so finds libvirt.so.0
    lib = libvirt_library()
    check(lib is not None, "libvirt.so.0 is not in ld.so's cache, but autoballoond was built with libvirt")
    log("hiding", lib)
    env.start_daemon(config=path, prefix=["unshare", "--mount", "--propagation", "private", "--",
                                          "sh", "-c", 'mount --bind /dev/null "$0" && exec "$@"', lib])
    env.wait_property(env.machine_path("lv-qmp"), "State", "managed", timeout=5)
    env.wait_property(p, "State", "failed", timeout=5)
    reason = env.ab_get(p, "StateReason")
    log("StateReason without libvirt's library:", reason)
    check("libvirt.so.0 cannot be loaded" in reason and "libvirt0" in reason and "reconnecting in" in reason,
          "lv-nosock: %r" % reason)
    check(not mapped(env, "libvirt.so"), "libvirt.so mapped, though hidden")
    # the retries try to load it again (a libvirt installed meanwhile is used), without a crash
    env.pump(2)
    env.daemon_check()
    n = env.daemon_log_text().count("Cannot load libvirt.so.0")
    check(n >= 2, "the retries did not try to load libvirt again (%d tries logged)" % n)
    check(env.ab_get(env.machine_path("lv-qmp"), "State") == "managed", "lv-qmp no longer managed")
    check(env.stop_daemon() == 0, "the daemon without libvirt did not exit cleanly")


abtest.main(test, "daemon-libvirt-backend")
