"""Real QEMU guests (TCG) for end-to-end tests and the demo: images from guest/build-all.sh,
guests started inside a machined-env namespace and registered with machined as libvirt
does, and a "host" v1 memory cgroup whose limit plays the host's RAM, with zram swap so that
going over it is reclaim (real PSI stalls) rather than an instant OOM kill."""
import os
import subprocess
import sys
import time

import abtest
from abtest import Fail, log

sys.path.insert(0, os.path.join(abtest.SRCDIR, "guest"))
import guestlib  # noqa: E402

MIB = 1 << 20


def images(outdir=None):
    """Builds (or reuses) the guest kernel and initramfs; returns the output dir."""
    outdir = os.path.abspath(outdir or os.environ.get("AB_GUEST_DIR") or os.path.join(abtest.BUILDDIR, "guest"))
    t = time.monotonic()
    r = subprocess.run([os.path.join(abtest.SRCDIR, "guest/build-all.sh"), outdir],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise Fail("guest/build-all.sh failed:\n" + r.stdout[-2000:] + r.stderr[-2000:])
    log("guest images ready in %s (%.1f s)" % (outdir, time.monotonic() - t))
    return outdir


def _write(path, value):
    with open(path, "w") as f:
        f.write(str(value))


def rss_bytes(pid):
    """VmRSS of a process, from /proc (0 once it is gone)."""
    try:
        for line in open("/proc/%d/status" % pid):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return 0


def swap_bytes(pid):
    """VmSwap of a process: what the host swapped out of it (0 once it is gone)."""
    return rss_swap_bytes(pid) - rss_bytes(pid)


def rss_swap_bytes(pid):
    """VmRSS + VmSwap: what the host spends on a process, wherever the pages are."""
    total = 0
    try:
        for line in open("/proc/%d/status" % pid):
            if line.startswith(("VmRSS:", "VmSwap:")):
                total += int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return total


class HostMemcg:
    """A child of the env's v1 memory cgroup with memory.limit_in_bytes = limit: the "host
    RAM" the guests and a host workload share. With swap (a private zram device), going
    over the limit swaps instead of OOM-killing. Removed in close()."""

    def __init__(self, env, name, limit, swap=None, no_swap=False):
        self.env = env
        self.dir = os.path.join(env.vars["AB_ENV_MEMCG"], name)
        # the same directory as the daemon inside the namespace sees it (HostMemorySource=)
        self.ns_dir = os.path.join(env.vars["AB_ENV_MEMCG_NS"], name) if env.vars.get("AB_ENV_MEMCG_NS") else None
        os.makedirs(self.dir)
        self.zram = None
        try:
            _write(self.dir + "/memory.limit_in_bytes", limit)
            if swap:
                import stall
                self.zram = stall.Zram(swap, env.state)
                _write(self.dir + "/memory.memsw.limit_in_bytes", limit + swap)
            elif no_swap:
                # memory+swap = memory: nothing of ours swaps, even into a swap device some
                # other test has switched on meanwhile (swap is machine-wide)
                _write(self.dir + "/memory.memsw.limit_in_bytes", limit)
        except BaseException:
            self.close()
            raise

    def usage(self):
        return int(open(self.dir + "/memory.usage_in_bytes").read())

    def read(self, name):
        """An integer control file of the memcg, e.g. memory.memsw.max_usage_in_bytes."""
        return int(open(os.path.join(self.dir, name)).read())

    def stat(self, key):
        for line in open(self.dir + "/memory.stat"):
            k, v = line.split()
            if k == key:
                return int(v)
        return 0

    def oom_kills(self):
        for line in open(self.dir + "/memory.oom_control"):
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        return 0

    def close(self):
        if self.dir is None:
            return
        for _ in range(100):
            try:
                pids = open(self.dir + "/cgroup.procs").read().split()
            except FileNotFoundError:
                break
            for p in pids:  # only processes this test started live here
                try:
                    os.kill(int(p), 9)
                except ProcessLookupError:
                    pass
            try:
                os.rmdir(self.dir)
                break
            except OSError:
                time.sleep(0.05)
        if self.zram:
            self.zram.close()
        self.dir = None


class Guest:
    def __init__(self, env, name, proc, rundir):
        self.env, self.name, self.proc, self.rundir = env, name, proc, rundir
        self.qmp_socket = os.path.join(rundir, "qmp.sock")

    @property
    def pid(self):
        return self.proc.host_pid

    def rss(self):
        return rss_bytes(self.proc.host_pid)

    def run(self, command, timeout=120.0):
        return guestlib.run(self.rundir, command, timeout)

    def run_bg(self, command):
        """Starts a guest command without waiting for it (its output goes to a log)."""
        import threading
        result = {}

        def go():
            try:
                result["rc"], result["out"] = guestlib.run(self.rundir, command, 600)
            except Exception as e:  # noqa: BLE001 — reported through result
                result["error"] = str(e)
        t = threading.Thread(target=go, daemon=True)
        t.start()
        return t, result


def start_guest(env, name, outdir, mem="512M", memcg=None, deflate_on_oom="on",
                balloon="patched", params=(), timeout=120, free_page_reporting="off"):
    """Boots a guest inside the namespace (QEMU is a direct child: its PID is the machine's
    leader), registers it with machined (CreateMachineWithNetwork, class vm), waits for its
    init. QEMU's own command line carries -qmp unix:RUNDIR/qmp.sock. free_page_reporting
    "on" turns on the balloon's free-page-reporting."""
    rundir = env.file("guest-" + name)
    os.makedirs(rundir, exist_ok=True)
    cmd = [os.path.join(abtest.SRCDIR, "guest/run-guest.sh"), "--foreground", "-o", outdir,
           "-m", mem, "-r", rundir, "--name", name, "--deflate-on-oom", deflate_on_oom,
           "--balloon", balloon, "--free-page-reporting", free_page_reporting]
    for p in params:
        cmd += ["--param", p]
    # A guest of the same name booted before in this environment left its console behind:
    # its ready marker must not count for this boot.
    console = os.path.join(rundir, "console.log")
    if os.path.exists(console):
        os.unlink(console)
    t = time.monotonic()
    proc = env.spawn(cmd, name="qemu-" + name, stdout=env.file("guest-%s.log" % name),
                     stderr=env.file("guest-%s.log" % name), memcg=memcg.dir if memcg else None)
    env.create_machine(name, proc.ns_pid)
    # Not guestlib.wait_ready(): QEMU's pidfile holds its PID in the namespace, not ours.

    def ready():
        if not proc.alive():
            return False
        try:
            return guestlib.READY_MARKER in open(console, "rb").read()
        except FileNotFoundError:
            return None
    end = time.monotonic() + timeout
    while ready() is not True and proc.alive() and time.monotonic() < end:
        time.sleep(0.1)
    if not ready():
        raise Fail("guest %s did not boot; console:\n%s" % (
            name, open(os.path.join(rundir, "console.log"), errors="replace").read()[-3000:]))
    log("guest %s booted in %.1f s (QEMU host pid %d, RSS %d MiB)" % (
        name, time.monotonic() - t, proc.host_pid, rss_bytes(proc.host_pid) // MIB))
    return Guest(env, name, proc, rundir)


def host_hog(env, memcg, mib, hold_seconds, outdir, passes=1):
    """A host workload: memhog MiB in the host memcg, every page written `passes` times
    (a workload that keeps using its memory, so the pressure lasts while it does not fit),
    then held for hold_seconds."""
    hog = os.path.join(outdir, "tools/memhog")
    return env.spawn([hog, str(mib), str(passes), str(hold_seconds)], name="host-hog", memcg=memcg.dir,
                     stdout=env.file("host-hog.log"), stderr=env.file("host-hog.log"))
