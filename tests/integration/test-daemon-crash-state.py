#!/usr/bin/python3
"""The policy's memory of a VM survives a real SIGKILL of the daemon.

Two fake VMs, only their own scopes' pressure acting (real stalls; the host source is a quiet
cgroup), critical pressure out of reach so that a hold-off holds:
- `backoff` (RecoveryDelaySec=8s): a real stall inflates it, the cool-down passes, recovery
  starts, and a second stall comes back within one cool-down of a recovery step: its cool-down
  doubles to 16 s. The daemon is killed right after that stall. The restarted daemon must not
  give memory back for those 16 s (a daemon that forgot gives it back at once), and must after.
- `held` (HoldOffSec=40s): resized by hand, then the guest deflates itself (the fake's `actual`):
  the daemon adopts it and holds off. After the crash, a real stall in its scope must not inflate
  it before the hold-off's end (a daemon that forgot inflates it at once), and a stall after the
  end must: its scope's watch is alive, only the hold-off kept it off.
Both are kept in RuntimeMachinesDirectory/NAME.state, which goes when the VM goes, stays after a
clean exit, and is not handed to a VM recreated under the same name while the daemon was down."""
import os
import signal
import sys
import time

import dbus

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
import abtest  # noqa: E402
from abtest import check, log  # noqa: E402

MIB = 1 << 20
STALL_SECONDS = 6
BACKOFF_DELAY = 8       # RecoveryDelaySec= of `backoff`; one return doubles it
HOLD_OFF = 40           # HoldOffSec= of `held`
NEVER_CRITICAL = "CriticalPressure=full 1900ms 2s\n"


def moves(env, name, reason, since=0):
    """Log lines of the daemon's moves of name for reason, from byte offset since."""
    return [l for l in env.daemon_log_text()[since:].splitlines() if "machine=%s reason=%s" % (name, reason) in l]


def test(env):
    quiet = "/sys/fs/cgroup/%s/system.slice/memory.pressure" % env.name
    config = env.write_config(host_pressure=quiet)
    env.machine_dropin("backoff", "[Machine]\nRecoveryDelaySec=%ds\nRecoveryDelayMaxSec=2min\nRecoveryIntervalSec=1s\n%s"
                       % (BACKOFF_DELAY, NEVER_CRITICAL))
    env.machine_dropin("held", "[Machine]\nHoldOffSec=%ds\nRecoveryDelaySec=3s\n%s" % (HOLD_OFF, NEVER_CRITICAL))
    ctl = env.file("held.control")
    backoff = env.start_vm("backoff", memory="1G", extra=["--fake-balloon-speed=instant", "--fake-stats=used=150M"])
    held = env.start_vm("held", memory="1G", extra=["--fake-balloon-speed=instant", "--fake-stats=used=150M",
                                                    "--fake-control=" + ctl])
    bpath, hpath = env.machine_path("backoff"), env.machine_path("held")
    env.start_daemon(config)
    for p in (bpath, hpath):
        env.wait_property(p, "State", "managed", timeout=5)
    bcg, hcg = env.ab_get(bpath, "ControlGroup"), env.ab_get(hpath, "ControlGroup")

    # backoff: pressure, recovery, pressure again within a cool-down of the recovery: back-off
    env.stall(bcg, seconds=STALL_SECONDS)
    env.wait_for(lambda: moves(env, "backoff", "scope-pressure"), STALL_SECONDS + 4, "a take from backoff")
    env.wait_for(lambda: moves(env, "backoff", "recovery"), STALL_SECONDS + BACKOFF_DELAY + 8,
                 "backoff's first recovery step")
    log("backoff: first recovery step; pressure again")
    n_takes = len(moves(env, "backoff", "scope-pressure"))
    stall = env.stall(bcg, seconds=STALL_SECONDS)

    # held: a size by hand, then the guest deflates itself: adopted, held off
    env.ab_call("ResizeMachine", "held", dbus.UInt64(700 * MIB))
    env.wait_property(hpath, "ActualMemory", 700 * MIB, timeout=3)
    env.pump(1.2)   # past the fake's BALLOON_CHANGE throttle, so that the next one is seen alone
    check(env.fake_control(ctl, "actual 900M") == "ok", "fake control refused 'actual'")
    env.wait_for(lambda: moves(env, "held", "adopt-self-deflate"), 4, "held's self-deflate adopted")
    hold_off_end = time.monotonic() + HOLD_OFF
    log("held: self-deflate adopted; held off until +%d s" % HOLD_OFF)

    env.wait_for(lambda: len(moves(env, "backoff", "scope-pressure")) > n_takes, STALL_SECONDS + 4,
                 "a take from backoff in the second stall")
    stall.wait()
    env.pump(1.5)   # the trailing PSI windows, and one flush of the state (<= 1 s)
    text = open(env.file("machines.run.d/backoff.state")).read()
    log("backoff.state:\n" + text)
    check("recovery-delay-usec=%d" % (2 * BACKOFF_DELAY * 1000000) in text,
          "backoff's doubled cool-down is not in its state file")
    check("hold-off-until=" in open(env.file("machines.run.d/held.state")).read(), "held's hold-off is not kept")

    # the crash
    btargets, htargets = len(backoff.balloon_targets()), len(held.balloon_targets())
    rc = env.daemon.stop(signal.SIGKILL)
    env.daemon = None
    check(rc == -signal.SIGKILL, "daemon exit code %s, not killed by SIGKILL" % rc)
    before = backoff.balloon_targets()[-1]
    log("daemon killed; backoff at %d MiB" % (before // MIB))

    since = len(env.daemon_log_text())
    t_restart = time.monotonic()
    env.start_daemon(config)
    for p in (bpath, hpath):
        env.wait_property(p, "State", "managed", timeout=5)
    kept = [l for l in env.daemon_log_text()[since:].splitlines() if "kept from the previous instance" in l]
    log("restored:\n  " + "\n  ".join(kept))
    check(any("Machine backoff:" in l and "backed off to %d s" % (2 * BACKOFF_DELAY) in l for l in kept),
          "the restarted daemon did not say it kept backoff's back-off")

    # backoff: no memory back within its backed-off cool-down (a daemon that forgot gives it at once)
    quiet_until = t_restart + 2 * BACKOFF_DELAY - 5
    while time.monotonic() < quiet_until:
        env.pump(0.2)
        env.daemon_check()
        grown = [v for v in backoff.balloon_targets()[btargets:] if v > before]
        check(not grown, "backoff got memory back %.1f s after the restart, within its kept cool-down of %d s: %s MiB"
              % (time.monotonic() - t_restart, 2 * BACKOFF_DELAY, [v // MIB for v in grown]))
    log("backoff: no recovery for %.1f s after the restart" % (time.monotonic() - t_restart))
    env.wait_for(lambda: [v for v in backoff.balloon_targets()[btargets:] if v > before], 15,
                 "backoff's recovery after its kept cool-down")
    log("backoff: recovery %.1f s after the restart" % (time.monotonic() - t_restart))

    # held: a real stall in its scope within the hold-off: no take. (Not while backoff waits: a
    # scope event anywhere restarts every VM's cool-down.)
    check(time.monotonic() + STALL_SECONDS + 4 < hold_off_end, "too late for a stall within held's hold-off")
    stall = env.stall(hcg, seconds=STALL_SECONDS + 2)
    stall.wait()
    env.pump(2)
    taken = moves(env, "held", "scope-pressure", since)
    check(not taken, "held was inflated within its kept hold-off: %s" % taken)
    log("held: no take during a %d s stall in its scope within the hold-off" % (STALL_SECONDS + 2))

    # after the hold-off's end the same stall inflates it: the watch is alive
    env.pump(max(0, hold_off_end - time.monotonic() + 1))
    t = time.monotonic()
    stall = env.stall(hcg, seconds=STALL_SECONDS + 2)
    env.wait_for(lambda: moves(env, "held", "scope-pressure", since), STALL_SECONDS + 6,
                 "a take from held after its hold-off")
    log("held: inflated %.1f s into a stall after the hold-off: %s MiB" %
        (time.monotonic() - t, [v // MIB for v in held.balloon_targets()[htargets:]]))
    stall.wait()

    # the VM goes, its file with it
    env.terminate_machine("held")
    env.wait_for(lambda: not os.path.exists(env.file("machines.run.d/held.state")), 3, "held.state removed")
    check(env.stop_daemon() == 0, "daemon did not exit cleanly")
    check(os.path.exists(env.file("machines.run.d/backoff.state")), "a clean exit dropped backoff's state")

    # with the daemon down, backoff is recreated under its name (a new QEMU): the next instance
    # must not hand the new VM its predecessor's back-off
    env.terminate_machine("backoff")
    env.wait_for(lambda: "backoff" not in [str(m[0]) for m in env.list_machines()], 5, "machined dropping backoff")
    if os.path.exists(env.file("backoff.qmp")):
        os.unlink(env.file("backoff.qmp"))
    env.start_vm("backoff", memory="1G", extra=["--fake-balloon-speed=instant"])
    since = len(env.daemon_log_text())
    env.start_daemon(config)
    env.wait_property(bpath, "State", "managed", timeout=5)
    env.pump(0.5)
    text = env.daemon_log_text()[since:]
    check("Machine backoff: kept from the previous instance" not in text,
          "the recreated backoff got its predecessor's state: %s" %
          [l for l in text.splitlines() if "kept from the previous" in l])
    check("another VM's or another boot's" in text, "the predecessor's file was not refused as another VM's")
    log("the recreated backoff started from nothing")
    check(env.stop_daemon() == 0, "daemon did not exit cleanly")


abtest.main(test, "daemon-crash-state")
