#!/usr/bin/python3
"""The QMP peer is verified before a word is sent. A VM whose command line names another VM's
monitor (as a compromised QEMU could rewrite its own) is not driven through it: State failed,
a StateReason naming the PID that answered and why it was refused, no command on that monitor,
retries at back-off; the other VM is unaffected (managed, its balloon moves). A QMP server
that is not the leader but runs in the VM's scope is accepted, after a retry."""
import json
import os
import sys
import time

import dbus

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
import abtest  # noqa: E402
from abtest import check, log  # noqa: E402

MIB = 1 << 20


def sleeper_cmd(*qemu_args):
    """A leader that only looks like QEMU: its argv carries the QMP options, it listens on nothing."""
    return ["/usr/bin/python3", "-c", "import time; time.sleep(600)", *qemu_args]


def commands(vm):
    return [json.loads(l).get("execute") for l in vm.records().splitlines() if l.strip()]


def test(env):
    victim_extra = env.file("victim-extra.qmp")
    # the victim: a fake QEMU with two QMP monitors, as QEMU allows; its own first on the command
    # line (the daemon's), a second one that the liar's command line names
    victim = env.start_vm("victim", extra=["-qmp", "unix:%s,server=on,wait=off" % victim_extra])
    env.wait_for(lambda: os.path.exists(victim_extra), 5, "the victim's second monitor")
    liar = env.start_vm("liar", leader_cmd=sleeper_cmd("-qmp", "unix:%s,server=on,wait=off" % victim_extra))

    # a VM whose QMP server is a helper process, not its leader: outside the scope at first
    helper_sock = env.file("helper.qmp")
    server = env.spawn(env.fake_qmp_cmd("helper", helper_sock, env.file("helper.qmp-record.log"), memory="256M"),
                       name="qmp-helper", stderr=env.file("helper.qmp.log"))
    env.wait_for(lambda: os.path.exists(helper_sock), 5, "QMP socket %s" % helper_sock)
    env.start_vm("helper", leader_cmd=sleeper_cmd("-qmp", "unix:%s,server=on,wait=off" % helper_sock))

    t0 = time.monotonic()
    env.start_daemon()
    vpath, lpath, hpath = (env.machine_path(n) for n in ("victim", "liar", "helper"))
    env.wait_property(vpath, "State", "managed", timeout=5)
    env.wait_property(lpath, "State", "failed", timeout=5)
    env.wait_property(hpath, "State", "failed", timeout=5)
    reason = env.ab_get(lpath, "StateReason")
    log("liar: failed after %.2f s, StateReason %r" % (time.monotonic() - t0, reason))
    check("Refused" in reason and victim_extra in reason, "StateReason does not say what was refused: %r" % reason)
    check("PID %d" % victim.proc.ns_pid in reason, "StateReason does not name the PID that answered (%d): %r"
          % (victim.proc.ns_pid, reason))
    check("PID %d" % liar.proc.ns_pid in reason, "StateReason does not name the liar's leader: %r" % reason)
    check(env.ab_get(lpath, "MemorySize") == 0, "the liar learnt a RAM size through the other VM's monitor")

    # a helper moved into its VM's scope is accepted on the next retry
    hcg = env.ab_get(hpath, "ControlGroup")
    hreason = env.ab_get(hpath, "StateReason")
    check("Refused" in hreason and "PID %d" % server.ns_pid in hreason, "helper StateReason: %r" % hreason)
    with open(env.cgroup_dir(hcg) + "/cgroup.procs", "w") as f:
        f.write(str(server.host_pid))
    t = time.monotonic()
    env.wait_property(hpath, "State", "managed", timeout=10)
    log("helper in its scope (%s): managed after %.2f s" % (hcg, time.monotonic() - t))
    check(env.ab_get(hpath, "MemorySize") == 256 * MIB, "helper MemorySize %s" % env.ab_get(hpath, "MemorySize"))

    # retries go on at back-off; none gets through, nothing reaches the victim's QEMU for the liar
    time.sleep(3)
    check(env.ab_get(lpath, "State") == "failed", "liar State %s" % env.ab_get(lpath, "State"))
    refusals = env.daemon_log_text().count("Refused the QMP socket %s" % victim_extra)
    cmds = commands(victim)
    log("victim's QEMU got %s; %d refusal(s) logged" % (cmds, refusals))
    check(cmds.count("qmp_capabilities") == 1, "the victim's monitors were negotiated %d times: %s"
          % (cmds.count("qmp_capabilities"), cmds))
    check(cmds.count("query-memory-size-summary") == 1, "the liar queried the victim's QEMU: %s" % cmds)

    # the victim is unaffected: its own properties, and its balloon moves when asked
    check(env.ab_get(vpath, "MemorySize") == 512 * MIB, "victim MemorySize %s" % env.ab_get(vpath, "MemorySize"))
    env.ab_call("ResizeMachine", "victim", dbus.UInt64(384 * MIB))
    env.wait_property(vpath, "ActualMemory", 384 * MIB, timeout=5)
    check(commands(victim).count("balloon") == 1, "balloon commands on the victim: %s" % commands(victim))
    check(env.ab_get(lpath, "State") == "failed", "liar State %s after the victim moved" % env.ab_get(lpath, "State"))

    rc = env.stop_daemon()
    check(rc == 0, "daemon exit code %s on SIGTERM" % rc)


abtest.main(test, "daemon-qmp-peer")
