#!/usr/bin/python3
"""The host memory budget costs an idle host nothing: with every VM at its maximum and more
than one reserve of room, the daemon wakes up 0 times in 60 s — with a v1 memory cgroup as
HostMemorySource= (its usage threshold registered in cgroup.event_control) and with the
default /proc/meminfo. Then the memcg's use crosses the threshold for real (a process in it
allocates), and the daemon wakes up and looks: the threshold is live, not decoration."""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
import abtest  # noqa: E402
import realguest  # noqa: E402
from abtest import check, log  # noqa: E402

MIB = 1 << 20
IDLE_SECONDS = 60


def wakeups(env):
    st = dict(l.split(":", 1) for l in open("/proc/%d/status" % env.daemon.host_pid))
    return int(st["voluntary_ctxt_switches"]) + int(st["nonvoluntary_ctxt_switches"])


def idle_for(env, seconds, what):
    time.sleep(1)
    w0 = wakeups(env)
    time.sleep(seconds)
    n = wakeups(env) - w0
    log("%s: %d wake-ups in %d idle seconds" % (what, n, seconds))
    return n


def test(env):
    # with swap: the fake VMs do not live in this memcg, and on a host that cannot swap the
    # budget would count their whole room to grow against it
    memcg = realguest.HostMemcg(env, "host", 512 * MIB, swap=256 * MIB)
    try:
        check(memcg.ns_dir, "no v1 memory cgroup visible inside the namespace")
        vms = [env.start_vm("idle-%d" % i) for i in range(3)]
        env.start_daemon(env.write_config(host_memory=memcg.ns_dir,
                                          extra="\n[Manager]\nHostMemoryReserve=64M\n"))
        for vm in vms:
            env.wait_property(env.machine_path(vm.name), "State", "managed", timeout=5)
        balance = env.get(abtest.AB, abtest.AB_PATH, abtest.AB_MANAGER, "HostMemoryBalance")
        check(balance < -64 * MIB, "the memcg is not idle (balance %d MiB)" % (balance // MIB))
        n = idle_for(env, IDLE_SECONDS, "v1 memcg budget, %d VMs at their maximum" % len(vms))
        check(n == 0, "the daemon woke up %d times in %d idle seconds with a v1 memcg budget" % (n, IDLE_SECONDS))

        # the threshold (capacity - 2 reserves = 384 MiB) is crossed by a process in the memcg
        w0 = wakeups(env)
        hog = env.spawn(["python3", "-c", "import time; b = bytearray(420 << 20); b[::4096] = b'x' * (len(b) // 4096); "
                         "time.sleep(30)"], name="memcg-hog", memcg=memcg.dir)
        env.wait_for(lambda: memcg.usage() > 400 * MIB, 10, "the memcg's use to cross 400 MiB")
        env.wait_for(lambda: "use crossed the watch threshold" in env.daemon_log_text(), 5,
                     "the daemon to wake up on the memcg's usage threshold")
        log("threshold crossed: %d wake-ups" % (wakeups(env) - w0))
        hog.stop()
        env.stop_daemon()

        # the default source, /proc/meminfo (the machine's own: plenty of room)
        env.start_daemon(env.write_config(host_memory="/proc/meminfo"))
        for vm in vms:
            env.wait_property(env.machine_path(vm.name), "State", "managed", timeout=5)
        n = idle_for(env, IDLE_SECONDS, "/proc/meminfo budget")
        check(n == 0, "the daemon woke up %d times in %d idle seconds with /proc/meminfo" % (n, IDLE_SECONDS))
        env.stop_daemon()
    finally:
        memcg.close()


abtest.main(test, "daemon-budget-idle")
