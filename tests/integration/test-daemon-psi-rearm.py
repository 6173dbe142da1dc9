#!/usr/bin/python3
"""PSI watches come back with their cgroup: HostPressureSource= names a slice; the slice is
stopped (its cgroup removed, the daemon's triggers see POLLERR) and started again. A real
stall in the restarted slice must still reach the daemon (HostPressure rises, the idle VM is
inflated): the watch was re-armed, not left dead."""
import os
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
    check(env.stop_daemon() == 0, "daemon did not exit cleanly")
    env.call(S1, "/org/freedesktop/systemd1", S1 + ".Manager", "StopUnit", SLICE, "replace")


abtest.main(test, "daemon-psi-rearm")
