#!/usr/bin/python3
"""200 VMs: the daemon's sliced work (stats rounds of STATS_SLICE machines per dispatch,
PropertiesChanged sweeps of EMIT_SLICE signals per dispatch, machines sharing the defaults'
knobs) loses nothing. The VMs are one fake QMP process serving 200 sockets (fake-qmp
--fake-many), each registered with the real machined (class vm, a `sleep` leader each) and
named by a QMPSocket= drop-in, as in tests/bench/bench-daemon.py.

A change the daemon made but never announced is caught two ways: the announced value of each
machine (InterfacesAdded, then every PropertiesChanged) must equal what GetManagedObjects says
once the bus is quiet, and a stats round that changed every guest must be announced for every
machine in that round, not one round later. A machine left behind a sweep is picked up by
the next sweep, which the next change of any machine starts: within a burst of changes that
comes at once, so only a change left behind by the burst's last sweep shows (measured here:
changes behind a running sweep happen at every host event, and the burst's later changes swept
every one of them)."""
import json
import os
import sys
import time

import dbus

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
import abtest  # noqa: E402
from abtest import AB, AB_MACHINE, AB_PATH, Fail, check, log  # noqa: E402

MIB = 1 << 20
N = 200
RAM = 512 * MIB
STATS_INTERVAL_SEC = 5
# Announced values compared with the daemon's after this long without a PropertiesChanged:
# longer than the fake's BALLOON_CHANGE throttle (1 s), well short of a stats round.
QUIET_SEC = 1.3
# Every machine's new GuestAvailableMemory within this of the first one: a round of 200 takes
# well under a second here; a machine left behind waits for the next round, STATS_INTERVAL_SEC on.
ROUND_SPREAD_MAX_SEC = 2.5
PROPS = ("State", "TargetMemory", "ActualMemory", "GuestAvailableMemory", "LastMove")
OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"

# No recovery within the test: the only changes are the ones the test makes, so a change left
# unannounced stays so until the next stats round.
CONFIG = """[Manager]
HostPressureSource=/sys/fs/cgroup{host}/memory.pressure
HostMemorySource=
MachinesDirectory={machines}
RuntimeMachinesDirectory={runtime}
StatsIntervalSec={interval}
DeflateOnExit=yes

[Pressure]
Low=some 100ms 2s
Medium=some 1900ms 2s
Critical=full 2s 2s

[Defaults]
RecoveryDelaySec=10min
RecoveryDelayMaxSec=10min
"""

def vm_name(i):
    return "vm-%04d" % (i + 1)   # fake-qmp --fake-many's names


class Announced:
    """What the daemon announced per machine: InterfacesAdded, then each PropertiesChanged.
    Reads env.signals incrementally (one pass per call, not one per machine)."""

    def __init__(self, env):
        self.env, self.pos = env, 0
        self.value = {}     # (path, prop) -> last announced value
        self.history = {}   # (path, prop) -> [(time, value)]
        self.last_time = 0.0

    def update(self):
        self.env.pump()
        sig = self.env.signals
        for t, path, iface, member, args in sig[self.pos:]:
            if member == "InterfacesAdded" and AB_MACHINE in args[1]:
                self._set(t, args[0], args[1][AB_MACHINE])
            elif member == "PropertiesChanged" and args[0] == AB_MACHINE:
                self._set(t, path, args[1])
                self.last_time = t
        self.pos = len(sig)

    def _set(self, t, path, props):
        for k, v in props.items():
            if k in PROPS:
                self.value[(str(path), k)] = v
                self.history.setdefault((str(path), k), []).append((t, v))

    def since(self, path, prop, t0):
        return [(t, v) for t, v in self.history.get((path, prop), []) if t >= t0]


def managed_objects(env):
    objs = env.call(AB, AB_PATH, OBJECT_MANAGER, "GetManagedObjects", timeout=30)
    return {str(p): ifaces[AB_MACHINE] for p, ifaces in objs.items() if AB_MACHINE in ifaces}


def wait_quiet(env, ann, timeout=20):
    """Until no machine's PropertiesChanged came for QUIET_SEC."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ann.update()
        if time.monotonic() - max(ann.last_time, 0) >= QUIET_SEC:
            return
        env.pump(0.05)
    raise Fail("the daemon's PropertiesChanged never paused for %.1f s" % QUIET_SEC)


def unannounced(env, ann, what):
    """Every machine's announced value of PROPS equals the daemon's, once the bus is quiet. A
    mismatch is looked at again 0.5 s later (a stats round may have begun under the first look):
    a change that is still unannounced with the same value is lost."""
    wait_quiet(env, ann)
    gap = time.monotonic() - ann.last_time
    first = managed_objects(env)
    ann.update()

    def diff(objs):
        return {(p, k): (objs[p][k], ann.value.get((p, k))) for p in objs for k in PROPS
                if ann.value.get((p, k)) != objs[p][k]}
    bad = diff(first)
    if bad:
        env.pump(0.5)
        second = managed_objects(env)
        ann.update()
        bad = {pk: v for pk, v in diff(second).items() if pk in bad and bad[pk][0] == v[0]}
    log("%s: %d machines, announced values checked %.2f s after the last PropertiesChanged: %d unannounced" %
        (what, len(first), gap, len(bad)))
    check(not bad, "%s: %d changes never announced (path, property): (daemon's, announced): %s" %
          (what, len(bad), sorted(bad.items())[:6]))
    return first


def stats_round(env, ann, control, used, paths, what):
    """Change every guest's used memory; every machine announces a new GuestAvailableMemory in
    the next round, all of them in that round."""
    before = managed_objects(env)
    old = {p: before[p]["GuestAvailableMemory"] for p in paths}
    t0 = time.monotonic()
    check(env.fake_control(control, "stats used=%s" % used) == "ok", "fake stats command failed")

    def new_value(p):
        return next(((t, v) for t, v in ann.since(p, "GuestAvailableMemory", t0) if v != old[p]), None)

    def all_new():
        ann.update()
        return all(new_value(p) for p in paths)
    try:
        env.wait_for(all_new, 3 * STATS_INTERVAL_SEC, "GuestAvailableMemory of every machine after used=%s" % used)
    except Fail:
        missing = [p for p in paths if not new_value(p)]
        raise Fail("%s: %d of %d machines never announced a new GuestAvailableMemory: %s" %
                   (what, len(missing), len(paths), missing[:5]))
    times = sorted(new_value(p)[0] for p in paths)
    spread = times[-1] - times[0]
    log("%s: used=%s, every machine's new GuestAvailableMemory announced %.2f..%.2f s after the change "
        "(spread %.3f s)" % (what, used, times[0] - t0, times[-1] - t0, spread))
    check(spread < ROUND_SPREAD_MAX_SEC,
          "%s: the new GuestAvailableMemory of some machine came %.2f s after the first one's: left "
          "behind a sweep until the next round" % (what, spread))
    return t0


def test(env):
    t_start = time.monotonic()
    build = os.path.abspath(abtest.BUILDDIR)
    fake_exe = os.path.join(build, "tests/fake-qmp/fake-qmp")
    if not os.access(fake_exe, os.X_OK):
        raise abtest.Skip("%s is not built" % fake_exe)
    vm_dir = env.file("vms")
    os.makedirs(vm_dir)
    os.makedirs(env.file("machines.d"))
    record = env.file("fake-record.log")
    env.spawn([fake_exe, "--fake-many=%d" % N, "--fake-dir=" + vm_dir, "--record=" + record, "-m", "512M"],
              name="fake-qmp", stderr=env.file("fake-qmp.log"))
    control = os.path.join(vm_dir, "control.sock")
    env.wait_for(lambda: os.path.exists(control), 20, "fake-qmp with %d VMs" % N)

    host_cg = "/%s/ab-many-host" % env.name
    os.makedirs(env.cgroup2 + host_cg)
    config = env.file("autoballoond.conf")
    with open(config, "w") as f:
        f.write(CONFIG.format(host=host_cg, machines=env.file("machines.d"), runtime=env.file("machines.run.d"),
                              interval=STATS_INTERVAL_SEC))

    leaders, pids = env.spawn_leaders(N)
    names = [vm_name(i) for i in range(N)]
    for name in names:
        env.machine_dropin(name, "[Machine]\nQMPSocket=%s/%s.qmp\n" % (vm_dir, name))
    t = time.monotonic()
    env.create_machines(list(zip(names, pids)))
    log("%d machines registered with machined in %.2f s" % (N, time.monotonic() - t))

    ann = Announced(env)
    t = time.monotonic()
    env.start_daemon(config, args=("--log-level=info",), timeout=20)
    paths = {name: env.machine_path(name) for name in names}

    # 1. every machine managed
    def all_managed():
        env.daemon_check()
        ms = env.ab_machines()
        return len(ms) == N and all(s == "managed" for s, _ in ms.values())
    env.wait_for(all_managed, 30, "all %d machines managed" % N, interval=0.2)
    log("all %d machines managed %.2f s after the start" % (N, time.monotonic() - t))
    unannounced(env, ann, "start-up")

    # 2. a real stall in the host pressure source moves every VM; each announces its TargetMemory
    t0 = time.monotonic()
    offset = os.path.getsize(record)
    stall = env.stall(host_cg, seconds=6)
    while stall.proc.poll() is None:
        env.daemon_check()
        ann.update()
        env.pump(0.05)
    r = stall.wait()
    moved = {}
    with open(record) as f:
        f.seek(offset)
        for line in f:
            if '"execute":"balloon"' in line:
                rec = json.loads(line)
                moved[rec["vm"]] = rec["arguments"]["value"]
    log("stall %s %% some: balloon commands to %d VMs" % (r["some_percent"], len(moved)))
    check(len(moved) == N, "a host stall moved %d of %d VMs (none to %s)" %
          (len(moved), N, sorted(set(names) - set(moved))[:5]))
    ann.update()
    silent = [n for n in names if not ann.since(paths[n], "TargetMemory", t0)]
    check(not silent, "%d machines moved by the stall never announced TargetMemory: %s" % (len(silent), silent[:5]))
    unannounced(env, ann, "after the stall")

    # 3. stats rounds (the VMs are below their maximum now: polled every StatsIntervalSec). The
    # guests' used memory only falls (from 40 % of RAM): a drop in available memory would grow
    # them back to their maximum, and stats polling would stop.
    all_paths = [paths[n] for n in names]
    stats_round(env, ann, control, "150M", all_paths, "200 VMs")
    unannounced(env, ann, "after a stats round")

    # 4. machines removed while a round's sweep is under way: the last machines move into the
    # holes, behind the sweep; every remaining one still announces its next change
    removed = [vm_name(i) for i in range(1, 2 * N // 10, 2)]   # low indices: holes behind the sweep
    before = managed_objects(env)
    t0 = time.monotonic()
    check(env.fake_control(control, "stats used=100M") == "ok", "fake stats command failed")
    env.wait_for(lambda: ann.update() or any(v != before[p]["GuestAvailableMemory"] for p in all_paths
                                             for _, v in ann.since(p, "GuestAvailableMemory", t0)),
                 3 * STATS_INTERVAL_SEC, "the round after used=100M")
    t_round = time.monotonic()
    mgr = env.bus.get_object(abtest.M1, abtest.M1_PATH, introspect=False)
    terminate = mgr.get_dbus_method("TerminateMachine", abtest.M1 + ".Manager")
    errors = []
    t_sent = time.monotonic()
    for name in removed:   # not waiting for the answers: spread over the round's sweeps
        terminate(name, reply_handler=lambda *_: None, error_handler=errors.append)
        env.pump(0.01)
    env.wait_for(lambda: not any(n in env.ab_machines() for n in removed), 20, "%d machines gone" % len(removed))
    check(not errors, "TerminateMachine failed: %s" % errors[:3])
    log("%d machines terminated with machined, sent from %.3f s after the round's first signal on, "
        "gone from the daemon after %.3f s" % (len(removed), t_sent - t_round, time.monotonic() - t_round))
    left = [n for n in names if n not in removed]
    unannounced(env, ann, "after removals during a round")
    stats_round(env, ann, control, "50M", [paths[n] for n in left], "%d VMs after removals" % len(left))
    unannounced(env, ann, "after the next round")

    # 5. knobs: one machine's own MinimumMemory, a new default MinimumMemoryPercent for the rest
    own = vm_name(0)
    env.ab_call("SetMachineProperties", own, True,
                dbus.Array([("MinimumMemory", dbus.UInt64(300 * MIB, variant_level=1))], signature="(sv)"))
    env.ab_call("SetDefaultProperties", True,
                dbus.Array([("MinimumMemoryPercent", dbus.UInt32(99, variant_level=1))], signature="(sv)"))
    objs = managed_objects(env)
    floor_own, floor = 300 * MIB, RAM * 99 // 100
    wrong = [(n, objs[paths[n]]["EffectiveMinimumMemory"]) for n in left
             if objs[paths[n]]["EffectiveMinimumMemory"] != (floor_own if n == own else floor)]
    check(not wrong, "EffectiveMinimumMemory after MinimumMemoryPercent=99 (own MinimumMemory=300M on %s): "
          "wrong on %d machines: %s" % (own, len(wrong), wrong[:5]))
    check(objs[paths[own]]["MinimumMemoryPercent"] == 99 and objs[paths[own]]["MinimumMemory"] == floor_own,
          "%s: MinimumMemory %s, MinimumMemoryPercent %s" % (own, objs[paths[own]]["MinimumMemory"],
                                                           objs[paths[own]]["MinimumMemoryPercent"]))
    # the VMs below the new floor are grown to it, each move announced
    env.wait_for(lambda: all(env.ab_get(paths[n], "TargetMemory") >= floor for n in left if n != own),
                 10, "every VM at or above its new floor")
    objs = unannounced(env, ann, "after the new default floor")
    low = [(n, objs[paths[n]]["TargetMemory"]) for n in left if n != own and objs[paths[n]]["TargetMemory"] < floor]
    check(not low, "VMs below the default floor of 99 %%: %s" % low[:5])
    log("floors: %s %d MiB, the other %d VMs %d MiB" % (own, floor_own // MIB, len(left) - 1, floor // MIB))

    check(env.stop_daemon() == 0, "daemon did not exit cleanly")
    log("total %.1f s" % (time.monotonic() - t_start))


abtest.main(test, "daemon-many")
