#!/usr/bin/python3
"""PSI watches come back: HostPressureSource= names a slice; the slice is stopped (its cgroup
removed, the daemon's triggers see POLLERR) and started again. A real stall in the restarted
slice must still reach the daemon (the idle VM is inflated): the watch was re-armed, not left
dead. Then a new VM's scope triggers fail to open with EMFILE (the daemon's fd limit lowered
while it comes); once fds are there again, a real stall in its scope reaches the daemon. Last, that VM is
restarted under the same name (a new scope at the same cgroup path): a real stall in the new
scope reaches the daemon. That is the realistic way a VM's scope "comes back": machined ties a
machine to its scope (CreateMachine starts machine-NAME.scope, as libvirt and abtest do), so a
scope cannot vanish under a machine machined still lists; what comes back is a new QEMU
registered again under the same name, whose scope has the old one's cgroup path, maybe before
the daemon's triggers on the old scope have seen POLLERR."""
import os
import subprocess
import sys
import time

import dbus

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
import abtest  # noqa: E402
from abtest import S1, check, log  # noqa: E402

MIB = 1 << 20
SLICE = "abtest-host.slice"
STALL_SECONDS = 8


def systemd(env, method, *args, signature=None):
    return env.call(S1, "/org/freedesktop/systemd1", S1 + ".Manager", method, *args, signature=signature)


def start_slice(env):
    systemd(env, "StartTransientUnit", SLICE, "fail", dbus.Array([], signature="(sv)"),
            dbus.Array([], signature="(sa(sv))"), signature="ssa(sv)a(sa(sv))")
    return env.wait_for(lambda: os.path.isdir(env.cgroup_dir(env.control_group(SLICE))) and env.control_group(SLICE),
                        5, "%s started" % SLICE)


def test(env):
    cg = start_slice(env)
    idle = env.start_vm("idle", memory="1G", extra=["--fake-stats=used=150M"])
    env.start_daemon(env.write_config(host_pressure=SLICE))
    env.wait_property(env.machine_path("idle"), "State", "managed", timeout=5)
    env.wait_for(lambda: "Watching host memory pressure" in env.daemon_log_text(), 3, "the daemon watching %s" % SLICE)

    systemd(env, "StopUnit", SLICE, "replace")
    env.wait_for(lambda: not os.path.isdir(env.cgroup_dir(cg)), 5, "%s's cgroup removed" % SLICE)
    log("%s stopped" % SLICE)
    env.wait_for(lambda: "went away" in env.daemon_log_text(), 3, "the daemon noticing the source went away")
    t = time.monotonic()
    cg2 = start_slice(env)
    log("%s started again (%s)" % (SLICE, cg2))
    n = env.daemon_log_text().count("Watching host memory pressure")
    env.wait_for(lambda: env.daemon_log_text().count("Watching host memory pressure") > 1, 5,
                 "host pressure watched again")
    log("host pressure watched again %.2f s after the slice came back (%d)" % (time.monotonic() - t, n))

    t = time.monotonic()
    stall = env.stall(cg2, seconds=STALL_SECONDS)
    env.wait_for(lambda: idle.balloon_targets(), STALL_SECONDS + 4, "a balloon command to the idle VM")
    log("first balloon to idle after %.2f s of stall in the restarted slice: %s MiB" %
        (time.monotonic() - t, [v // MIB for v in idle.balloon_targets()]))
    stall.wait()
    check(min(idle.balloon_targets()) < 1024 * MIB, "the idle VM was not inflated")

    # EMFILE: a new VM's scope triggers cannot all be opened (the daemon's soft fd limit lowered
    # to one above what it holds; the hard limit stays, raising it back needs privileges this
    # sandbox lacks); the watch is tried again, and works once fds are there
    pid = env.daemon.host_pid
    limits = [l for l in open("/proc/%d/limits" % pid) if l.startswith("Max open files")][0].split()
    soft, hard = limits[3], limits[4]
    nfds = len(os.listdir("/proc/%d/fd" % pid))
    subprocess.run(["prlimit", "--pid", str(pid), "--nofile=%d:%s" % (nfds + 1, hard)], check=True)
    try:
        starved = env.start_vm("starved", memory="512M")
        env.wait_for(lambda: "Machine starved: cannot watch" in env.daemon_log_text(), 5,
                     "the daemon failing to open starved's triggers")
        log("starved's scope triggers hit the fd limit (%d fds open)" % nfds)
    finally:
        subprocess.run(["prlimit", "--pid", str(pid), "--nofile=%s:%s" % (soft, hard)], check=True)
    spath = env.machine_path("starved")
    env.wait_property(spath, "State", "managed", timeout=10)
    time.sleep(4)   # the watch's back-off (1 s, then 2 s) runs out
    t = time.monotonic()
    stall = env.stall(env.ab_get(spath, "ControlGroup"), seconds=STALL_SECONDS)
    env.wait_for(lambda: "machine=starved reason=scope-pressure" in env.daemon_log_text(), STALL_SECONDS + 4,
                 "a move of starved for its scope's pressure")
    log("starved moved for its scope's pressure after %.2f s of stall: %s MiB" %
        (time.monotonic() - t, [v // MIB for v in starved.balloon_targets()]))
    stall.wait()
    moves = [l for l in env.daemon_log_text().splitlines() if "machine=starved" in l and "reason=" in l]
    log("starved's moves: %s" % [l.split("[", 1)[-1] for l in moves[:3]])
    # (the host's level may still be up from the slice's stall: a host-pressure move can come first)
    check(any("reason=scope-pressure" in l for l in moves), "starved was never moved for its scope's pressure")

    # The VM restarted under the same name: its QEMU ends, machined drops the machine with its
    # scope, and a new QEMU registers again at once, in a new scope of the same name and cgroup
    # path (machine-starved.scope). This is how a VM's scope "comes back": machined ties a machine
    # to its scope, so a scope cannot vanish under a machine it still lists; what returns is a new
    # machine, maybe before the old scope's triggers have seen POLLERR. Its watch must be the new
    # scope's, and alive.
    old_cg = env.ab_get(spath, "ControlGroup")
    env.terminate_machine("starved")
    env.wait_for(lambda: "starved" not in [str(m[0]) for m in env.list_machines()], 5, "machined dropping starved")
    if os.path.exists(env.file("starved.qmp")):   # the fake removes it when it can
        os.unlink(env.file("starved.qmp"))
    since = len(env.daemon_log_text())
    env.start_vm("starved", memory="512M")
    env.wait_for(lambda: env.daemon_log_text()[since:].count("Machine starved appeared") == 1, 5,
                 "the daemon seeing starved again")
    env.wait_property(spath, "State", "managed", timeout=10)
    new_cg = env.ab_get(spath, "ControlGroup")
    log("starved re-registered: %s (was %s)" % (new_cg, old_cg))
    t = time.monotonic()
    stall = env.stall(new_cg, seconds=STALL_SECONDS)
    env.wait_for(lambda: "machine=starved reason=scope-pressure" in env.daemon_log_text()[since:], STALL_SECONDS + 4,
                 "a move of the re-registered starved for its new scope's pressure")
    log("re-registered starved moved for its scope's pressure after %.2f s of stall" % (time.monotonic() - t))
    stall.wait()
    check(env.daemon_log_text()[since:].count("cannot watch") == 0, "the new scope's watch failed: %s" %
          [l for l in env.daemon_log_text()[since:].splitlines() if "cannot watch" in l])
    check(env.stop_daemon() == 0, "daemon did not exit cleanly")
    env.call(S1, "/org/freedesktop/systemd1", S1 + ".Manager", "StopUnit", SLICE, "replace")


abtest.main(test, "daemon-psi-rearm")
