#!/usr/bin/python3
"""machined restarting: the daemon keeps its machines (the VMs still run and their QMP
connections are ours), re-enumerates when machined is back, picks up VMs registered after
the restart, forgets VMs that went away while machined was down, and never crashes. A
re-enumeration that fails half-way (ENOMEM, injected with the test-only
$AUTOBALLOON_TEST_ENUMERATION_ENOMEM) removes no machine and is asked again."""
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
import abtest  # noqa: E402
from abtest import check, log  # noqa: E402


def machined(env, verb):
    r = subprocess.run(["nsenter", "-t", str(env.pid1), "-p", "-m", "-u", "--",
                        "systemctl", verb, "systemd-machined.service"], capture_output=True, text=True)
    check(r.returncode == 0, "systemctl %s systemd-machined: %s" % (verb, r.stderr))


def test(env):
    vm1 = env.start_vm("keep")
    gone = env.start_vm("gone")
    env.start_daemon()
    for vm in (vm1, gone):
        env.wait_property(env.machine_path(vm.name), "State", "managed", timeout=5)

    # machined goes away; a VM dies while it is down
    machined(env, "stop")
    env.wait_for(lambda: "machined left the bus" in env.daemon_log_text(), 5, "the daemon to notice")
    gone.proc.kill(signal.SIGKILL)
    # the daemon sees its QMP connection end: the machine is still listed, not managed
    env.wait_property(env.machine_path("gone"), "State", lambda v: v != "managed", timeout=5)
    check(set(env.ab_machines()) == {"keep", "gone"}, "machines dropped while machined was down: %s"
          % env.ab_machines())
    env.wait_property(env.machine_path("keep"), "State", "managed")

    # machined comes back (it reloads its machines from /run/systemd/machines); the VM that
    # died meanwhile is no longer among them
    t = time.monotonic()
    machined(env, "start")
    env.wait_for(lambda: set(env.ab_machines()) == {"keep"}, 5,
                 "the daemon to re-enumerate (keep only); has %s" % env.ab_machines())
    log("re-enumerated %.2f s after machined's start" % (time.monotonic() - t))
    check(env.ab_get(env.machine_path("keep"), "State") == "managed", "keep is no longer managed")

    # a VM registered after the restart appears as usual
    t = time.monotonic()
    late = env.start_vm("late")
    env.wait_for(lambda: "late" in env.ab_machines(), 1.0, "late on org.autoballoon1")
    env.wait_property(env.machine_path(late.name), "State", "managed", timeout=5)
    log("late appeared %.3f s after CreateMachine" % (time.monotonic() - t))
    env.daemon_check()
    check(env.stop_daemon() == 0, "daemon exit code")

    # the machine list after the next machined restart (the daemon's second) fails after its
    # first VM: the daemon must not read the rest as gone
    os.environ["AUTOBALLOON_TEST_ENUMERATION_ENOMEM"] = "2"
    try:
        env.start_daemon()
    finally:
        del os.environ["AUTOBALLOON_TEST_ENUMERATION_ENOMEM"]
    for name in ("keep", "late"):
        env.wait_property(env.machine_path(name), "State", "managed", timeout=5)
    t = time.monotonic()
    machined(env, "stop")
    machined(env, "start")
    env.wait_for(lambda: "Failed to read systemd-machined's machine list" in env.daemon_log_text(), 5,
                 "the injected failure")
    env.wait_for(lambda: env.daemon_log_text().count("re-enumerating machines") >= 1 and
                 "asking again" in env.daemon_log_text(), 5, "the daemon to ask again")
    env.pump(2.0)   # the list asked again (after 1 s) is read in full
    removed = [s for s in env.signals if s[0] >= t and s[3] == "MachineRemoved"]
    check(not removed, "machines removed after a failed enumeration: %s" % removed)
    check(set(env.ab_machines()) == {"keep", "late"}, "machines now: %s" % env.ab_machines())
    log("a machine list that failed half-way removed nothing; asked again")
    check(env.stop_daemon() == 0, "daemon exit code")


abtest.main(test, "daemon-machined-restart")
