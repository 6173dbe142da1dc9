#!/usr/bin/python3
"""QMP failures: a QMP peer killed mid-run, a peer sending garbage, one that hangs up, one
whose main loop sticks in the middle of the balloon attach (the step times out). The daemon
logs each, the machine's State says so (with a StateReason), it reconnects or attaches again
when the peer is back, keeps serving the other machines, and does not crash."""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
import abtest  # noqa: E402
from abtest import check, log  # noqa: E402

BROKEN = ("failed", "connecting")


def separate_qmp_vm(env, name, server_cmd=None, mode=None):
    """A VM whose QMP server is not its leader: leader `sleep`, socket named by a drop-in, so
    the peer can die or misbehave while machined still lists the VM."""
    sock = env.file("%s.qmp" % name)
    env.machine_dropin(name, "[Machine]\nQMPSocket=%s\n" % sock)
    if mode:
        server = env.bad_qmp(sock, mode)
    else:
        server = env.spawn(env.fake_qmp_cmd(name, sock, env.file("%s.qmp-record.log" % name)),
                           name="qmp-" + name, stderr=env.file("%s.qmp.log" % name))
        env.wait_for(lambda: os.path.exists(sock), 5, "QMP socket %s" % sock)
    vm = env.start_vm(name, leader_cmd=["sleep", "600"])
    vm.qmp_socket, vm.server = sock, server
    return vm


def state(env, name):
    p = env.machine_path(name)
    return env.ab_get(p, "State"), env.ab_get(p, "StateReason")


def still_serving(env, healthy):
    env.daemon_check()
    m = env.ab_machines()
    check(healthy in m and m[healthy][0] == "managed", "healthy VM not managed: %s" % m)
    env.ab_get(env.machine_path(healthy), "ActualMemory")


def test(env):
    env.start_daemon()
    # a peer that accepts and never greets: only the greeting timeout (10 s) can tell
    hang_t = time.monotonic()
    separate_qmp_vm(env, "bad-hang", mode="hang")
    # a QEMU that answers qmp_capabilities, then sticks (its main loop busy) before the first
    # attach step: the step times out (10 s) over a live connection, nothing reconnects
    slow_ctl = env.file("slow.control")
    env.start_vm("slow-attach", extra=["--fake-hang-after=1", "--fake-control=" + slow_ctl])
    healthy = env.start_vm("healthy")
    peer = separate_qmp_vm(env, "peer")
    for name in ("healthy", "peer"):
        env.wait_property(env.machine_path(name), "State", "managed", timeout=5)

    # 1. the QMP peer is killed mid-run; the VM itself (its scope) lives on
    t = time.monotonic()
    peer.server.stop(signal.SIGKILL)
    st = env.wait_property(env.machine_path("peer"), "State", lambda v: v in BROKEN, timeout=2)
    reason = env.ab_get(env.machine_path("peer"), "StateReason")
    log("peer killed: State %s after %.2f s, StateReason %r" % (st, time.monotonic() - t, reason))
    check(reason, "no StateReason for a dead QMP peer")
    still_serving(env, "healthy")
    # it comes back on the same socket: the daemon reconnects
    peer.server = env.spawn(env.fake_qmp_cmd("peer", peer.qmp_socket, env.file("peer.qmp-record2.log")),
                            name="qmp-peer2", stderr=env.file("peer.qmp2.log"))
    t = time.monotonic()
    env.wait_property(env.machine_path("peer"), "State", "managed", timeout=10)
    log("peer back: managed again after %.2f s" % (time.monotonic() - t))

    # 2. a running VM's monitor sends garbage, then hangs up: the VM stays, the daemon notes
    # it (failed + reason, PropertiesChanged) and reconnects to the same monitor
    ctl = env.file("ctl.control")
    env.start_vm("ctl", extra=["--fake-control=" + ctl])
    cpath = env.machine_path("ctl")
    env.wait_property(cpath, "State", "managed", timeout=5)
    for command in ("garbage", "hangup"):
        t = time.monotonic()
        check(env.fake_control(ctl, command) == "ok", "fake control %s refused" % command)
        env.wait_for(lambda: any(c.get("State") in BROKEN for _, c in env.properties_changed(cpath, "State", since=t)),
                     2, "State failed/connecting after %s" % command)
        env.wait_property(cpath, "State", "managed", timeout=5)
        seen = [c for _, c in env.properties_changed(cpath, since=t)]
        reasons = [c["StateReason"] for c in seen if c.get("StateReason")]
        log("ctl %s: %s; managed again after %.2f s" % (command, seen, time.monotonic() - t))
        check(reasons, "no StateReason announced after %s: %s" % (command, seen))
        still_serving(env, "healthy")

    # 3. peers that send garbage or hang up mid-greeting
    for mode in ("garbage", "close"):
        name = "bad-" + mode
        t = time.monotonic()
        separate_qmp_vm(env, name, mode=mode)
        env.wait_signal("MachineAdded", lambda s: s[4][0] == name, timeout=2, since=t)
        st = env.wait_property(env.machine_path(name), "State", lambda v: v in BROKEN, timeout=3)
        # it goes through a few reconnects with the same peer, and stays broken
        conns = env.file("%s.qmp.connections" % name)
        env.wait_for(lambda: os.path.exists(conns) and len(open(conns).read().splitlines()) >= 3, 10,
                     "%s: three connections to the bad peer" % name)
        st, reason = state(env, name)
        log("%s: State %s, StateReason %r" % (name, st, reason))
        check(st in BROKEN and reason, "%s: State %r, StateReason %r" % (name, st, reason))
        still_serving(env, "healthy")

    # 4. the leader (QEMU) itself killed: machined drops the VM, the daemon follows
    t = time.monotonic()
    healthy.proc.stop(signal.SIGKILL)
    env.wait_for(lambda: "healthy" not in env.ab_machines(), 3, "healthy removed after its leader died")
    log("leader killed: removed after %.2f s" % (time.monotonic() - t))
    env.wait_property(env.machine_path("peer"), "State", "managed", timeout=1)

    st = env.wait_property(env.machine_path("bad-hang"), "State", "failed",
                           timeout=max(1, 13 - (time.monotonic() - hang_t)))
    log("bad-hang: State %s after %.1f s, StateReason %r" % (st, time.monotonic() - hang_t,
                                                           state(env, "bad-hang")[1]))
    check(state(env, "bad-hang")[1], "no StateReason for a peer that never greets")

    # 5. the attach step timed out: failed, saying it tries again; once QEMU answers again
    # the attach is retried (with back-off) and the machine is managed
    spath = env.machine_path("slow-attach")
    st = env.wait_property(spath, "State", "failed", timeout=max(1, 13 - (time.monotonic() - hang_t)))
    reason = env.ab_get(spath, "StateReason")
    log("slow-attach: State %s after %.1f s, StateReason %r" % (st, time.monotonic() - hang_t, reason))
    check("trying again" in reason, "slow-attach: StateReason does not say it tries again: %r" % reason)
    t = time.monotonic()
    check(env.fake_control(slow_ctl, "unhang") == "ok", "fake control unhang refused")
    env.wait_property(spath, "State", "managed", timeout=12)
    log("slow-attach: managed %.2f s after its QEMU answered again" % (time.monotonic() - t))

    # 6. a QMP socket path too long for a unix socket address: unmanaged, StateReason says
    # what to do (a shorter QMPSocket=, then reload), and a reload with it manages the VM
    short = env.file("long.qmp")
    server = env.spawn(env.fake_qmp_cmd("long", short, env.file("long.qmp-record.log")), name="qmp-long",
                       stderr=env.file("long.qmp.log"))
    env.wait_for(lambda: os.path.exists(short), 5, "QMP socket %s" % short)
    longdir = env.file("d" * 60)
    os.makedirs(longdir, exist_ok=True)
    longpath = os.path.join(longdir, "a-qmp-socket-path-longer-than-sun_path-allows.qmp")
    check(len(longpath) >= 108, "test path is only %d bytes" % len(longpath))
    os.symlink(short, longpath)
    env.machine_dropin("long", "[Machine]\nQMPSocket=%s\n" % longpath)
    env.start_vm("long", leader_cmd=["sleep", "600"])
    lpath = env.machine_path("long")
    st = env.wait_property(lpath, "State", "unmanaged", timeout=3)
    reason = env.ab_get(lpath, "StateReason")
    log("long QMP path (%d bytes): State %s, StateReason %r" % (len(longpath), st, reason))
    check("longer than a unix socket address" in reason and "QMPSocket=" in reason and "reload" in reason,
          "StateReason does not say what to do: %r" % reason)
    env.machine_dropin("long", "[Machine]\nQMPSocket=%s\n" % short)
    env.ab_call("Reload")
    env.wait_property(lpath, "State", "managed", timeout=5)
    log("long: managed after a shorter QMPSocket= and Reload()")
    server.stop()

    log_text = env.daemon_log_text()
    for name in ("peer", "bad-garbage", "bad-close", "bad-hang"):
        check(name in log_text, "the daemon log does not mention %s" % name)
    rc = env.stop_daemon()
    check(rc == 0, "daemon exit code %s on SIGTERM" % rc)


abtest.main(test, "daemon-qmp-failure")
