#!/usr/bin/python3
"""Nothing forgotten across a daemon restart: a daemon stopped without deflating
(DeflateOnExit=no) leaves a guest inflated; the next daemon resumes from the guest's reported
size (TargetMemory = ActualMemory, not the configured RAM), and recovery gives the memory back
up to the maximum. With DeflateOnExit=yes the stop itself returns the guest to its maximum."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
import abtest  # noqa: E402
from abtest import check, log  # noqa: E402

MIB = 1 << 20


def test(env):
    vm = env.start_vm("keepme")
    path = env.machine_path(vm.name)
    fast_recovery = "\n[Defaults]\nRecoveryDelaySec=2s\nRecoveryStep=25%\nRecoveryIntervalSec=1s\n"
    no_deflate = env.write_config(extra=fast_recovery + "\n[Manager]\nDeflateOnExit=no\n")

    env.start_daemon(config=no_deflate)
    env.wait_property(path, "State", "managed", timeout=5)
    env.ab_call("ResizeMachine", vm.name, abtest.dbus.UInt64(300 * MIB))
    env.wait_property(path, "ActualMemory", 300 * MIB, timeout=10)
    check(env.stop_daemon() == 0, "daemon exit code")
    balloons = vm.balloon_targets()
    check(balloons and balloons[-1] == 300 * MIB,
          "DeflateOnExit=no still deflated: %s" % balloons[-1:])
    log("stopped with the guest at 300 MiB (DeflateOnExit=no)")

    # the next daemon resumes from what the guest reports, then gives it back
    log_offset = len(env.daemon_log_text())   # the log file is shared by every start
    env.start_daemon(config=no_deflate)
    env.wait_property(path, "State", "managed", timeout=5)
    # (the first give-back may land before a Get could see 300 MiB: the log below says where
    # the new daemon started from)
    env.wait_property(path, "TargetMemory", 512 * MIB, timeout=20)
    env.wait_property(path, "ActualMemory", 512 * MIB, timeout=10)
    moves = [l for l in env.daemon_log_text()[log_offset:].splitlines() if "balloon target" in l]
    # recovery, or relief when the guest lives below its reserve at 300 MiB (then it is in need
    # and gets memory back sooner): either way a give-back starting from the guest's own size
    check(moves and "balloon target 300M →" in moves[0] and
          ("reason=recovery" in moves[0] or "reason=guest-pressure" in moves[0]),
          "the first move of the new daemon was not a give-back from 300M: %s" % moves[:1])
    log("resumed from 300 MiB; %s returned the guest to 512 MiB"
        % ("recovery" if "reason=recovery" in moves[0] else "relief of a guest below its reserve"))

    # DeflateOnExit=yes: the stop returns an inflated guest to its maximum
    env.ab_call("ResizeMachine", vm.name, abtest.dbus.UInt64(256 * MIB))
    env.wait_property(path, "ActualMemory", 256 * MIB, timeout=10)
    env.stop_daemon()
    env.start_daemon(config=env.write_config(extra=fast_recovery))
    env.wait_property(path, "State", "managed", timeout=5)
    env.ab_call("ResizeMachine", vm.name, abtest.dbus.UInt64(256 * MIB))
    env.wait_property(path, "ActualMemory", 256 * MIB, timeout=10)
    check(env.stop_daemon() == 0, "daemon exit code")
    balloons = vm.balloon_targets()
    check(balloons[-1] == 512 * MIB,
          "DeflateOnExit=yes did not return the guest to 512 MiB: %s" % balloons[-1:])
    log("DeflateOnExit=yes: the stop sent balloon 512 MiB")


abtest.main(test, "daemon-restart")
