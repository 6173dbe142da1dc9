#!/usr/bin/python3
"""Real memory stalls in a cgroup2 directory (a VM's scope), for integration tests.

cgroup2 has no memory controller on this host (it is on v1), so a worker process joins a
child of our own v1 memory cgroup with a small memory.limit_in_bytes, and the target cgroup2
directory; PSI follows the cgroup2 membership, so the v1 limit's reclaim stalls show in that
directory's memory.pressure. Modes:
  write  buffered writes through the small memcg: reclaim waits on dirty/writeback pages
         (10-25 % "some"); nothing global is touched.
  anon   an anonymous working set larger than the limit, swapped to a private zram device
         (hot_add, mkswap, swapon; swapoff + hot_remove afterwards). Note: while it runs the
         host has swap, which every memcg on the host can use.

  stall.py [--mode write|anon] [--seconds 8] [--limit 64M] [--nsenter PID1] CGROUP2_DIR
CGROUP2_DIR is a host path (e.g. /sys/fs/cgroup/unified/NAME/machine.slice/machine-vm.scope)
or a ControlGroup path (/NAME/machine.slice/...). With --nsenter the worker runs inside that
process's pid+mount namespaces (so it dies with a machined-env instance).
"""
import argparse
import os
import random
import subprocess
import sys
import time

SELF = os.path.abspath(__file__)


def cgroup2_mount():
    for line in open("/proc/self/mountinfo"):
        left, _, right = line.partition(" - ")
        if right.split()[0] == "cgroup2":
            return left.split()[4]
    raise RuntimeError("no cgroup2 mount")


def memcg_v1_own():
    """Our own v1 memory cgroup directory (its limits are never changed; we make children)."""
    mnt = None
    for line in open("/proc/self/mountinfo"):
        left, _, right = line.partition(" - ")
        f = right.split()
        if f[0] == "cgroup" and "memory" in f[2].split(","):
            mnt = left.split()[4]
            break
    own = [l.split(":", 2)[2].strip() for l in open("/proc/self/cgroup") if l.split(":")[1] == "memory"]
    if not mnt or not own:
        raise RuntimeError("no v1 memory cgroup")
    return mnt + own[0]


def control_group(path):
    """ControlGroup form (/a/b) of a host cgroup2 directory or of a ControlGroup path."""
    mnt = cgroup2_mount()
    if path.startswith(mnt + "/"):
        return path[len(mnt):]
    return path


def parse_size(s):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(s[:-1]) * mult[s[-1].upper()] if s[-1].upper() in mult else int(s)


def pressure_totals(cgdir):
    """{'some': usec, 'full': usec} of cgdir/memory.pressure."""
    out = {}
    for line in open(os.path.join(cgdir, "memory.pressure")):
        kind, *fields = line.split()
        out[kind] = int(dict(f.split("=") for f in fields)["total"])
    return out


def _write(path, value):
    with open(path, "w") as f:
        f.write(str(value))


class Zram:
    """A private zram swap device; removed again in close(). A marker file in marker_dir
    (zramN) lets machined-env.sh stop remove it if we crash."""

    def __init__(self, size, marker_dir):
        self.dev = None
        with open("/sys/class/zram-control/hot_add") as f:
            self.id = int(f.read())
        self.dev = "/dev/zram%d" % self.id
        self.marker = os.path.join(marker_dir, "zram%d" % self.id)
        open(self.marker, "w").close()
        try:
            _write("/sys/block/zram%d/disksize" % self.id, size)
            subprocess.run(["mkswap", self.dev], check=True, capture_output=True)
            subprocess.run(["swapon", self.dev], check=True, capture_output=True)
        except BaseException:
            self.close()
            raise

    def written_bytes(self):
        """Bytes written to the device since it was made (/sys/block/zramN/stat, field 7:
        sectors written): for a swap device, everything swapped out to it."""
        return int(open("/sys/block/zram%d/stat" % self.id).read().split()[6]) * 512

    def close(self):
        if self.dev is None:
            return
        subprocess.run(["swapoff", self.dev], capture_output=True)
        for _ in range(50):
            try:
                _write("/sys/class/zram-control/hot_remove", self.id)
                break
            except OSError:  # EBUSY right after swapoff
                time.sleep(0.1)
        os.unlink(self.marker)
        self.dev = None


class Stall:
    """Start a stall in a cgroup2 directory; stop() (or the end of `seconds`) cleans up.

    with Stall("/NAME/machine.slice/machine-vm1.scope", seconds=8, nsenter=pid1) as s:
        ...            # the stall is running
    s.result           # pressure deltas, failcnt
    """

    def __init__(self, cgroup, seconds=8.0, mode="write", limit="64M", nsenter=None,
                 memcg_parent=None, scratch="/var/tmp"):
        self.cg = control_group(cgroup)
        self.cgdir = cgroup2_mount() + self.cg
        self.seconds, self.mode, self.limit = seconds, mode, parse_size(limit)
        self.nsenter, self.scratch = nsenter, scratch
        self.parent = memcg_parent or os.environ.get("AB_ENV_MEMCG") or memcg_v1_own()
        self.memcg = self.zram = self.proc = None
        self.result = None

    def start(self):
        try:
            self.before = pressure_totals(self.cgdir)
            self.memcg = os.path.join(self.parent, "stall-%d-%d" % (os.getpid(), id(self) % 10000))
            os.makedirs(self.memcg)
            _write(self.memcg + "/memory.limit_in_bytes", self.limit)
            if self.mode == "anon":
                self.zram = Zram(8 * self.limit, self.scratch)
                _write(self.memcg + "/memory.memsw.limit_in_bytes", 8 * self.limit)
            cmd = ["/usr/bin/python3", SELF, "--worker", "--mode", self.mode,
                   "--seconds", str(self.seconds), "--limit", str(self.limit),
                   "--scratch", self.scratch, self.cg]
            if self.nsenter:
                cmd = ["nsenter", "-t", str(self.nsenter), "-p", "-m", "-u", "--"] + cmd
            procs = self.memcg + "/cgroup.procs"
            # join the v1 memcg before exec, so nsenter's child inherits it
            self.proc = subprocess.Popen(cmd, preexec_fn=lambda: _write(procs, os.getpid()),
                                         stdout=subprocess.PIPE, text=True)
            self.t0 = time.monotonic()
            line = self.proc.stdout.readline()  # "ready" once it is in the scope
            if not line.startswith("ready"):
                raise RuntimeError("stall worker failed to start: %r" % line)
        except BaseException:
            self.stop()
            raise
        return self

    def wait(self):
        if self.proc:
            try:
                self.proc.wait(self.seconds + 30)
            except subprocess.TimeoutExpired:
                pass
        return self.stop()

    def stop(self):
        """Kill the worker, remove the memcg child and the zram device. Idempotent."""
        if self.proc:
            if self.proc.poll() is None:
                self.proc.kill()  # nsenter (ours); its child is killed through the memcg below
            self.proc.wait()
            self.proc.stdout.close()
        if self.memcg and os.path.isdir(self.memcg):
            self.failcnt = int(open(self.memcg + "/memory.failcnt").read())
            for _ in range(100):
                pids = open(self.memcg + "/cgroup.procs").read().split()
                for p in pids:  # only our worker lives here
                    try:
                        os.kill(int(p), 9)
                    except ProcessLookupError:
                        pass
                try:
                    os.rmdir(self.memcg)
                    break
                except OSError:
                    time.sleep(0.05)
        if self.zram:
            self.zram.close()
        if self.proc and self.result is None:
            after = pressure_totals(self.cgdir) if os.path.isdir(self.cgdir) else self.before
            secs = time.monotonic() - self.t0
            self.result = {k + "_usec": after[k] - self.before[k] for k in after}
            self.result.update(seconds=round(secs, 2), failcnt=getattr(self, "failcnt", None),
                               some_percent=round(100 * self.result["some_usec"] / 1e6 / secs, 1),
                               full_percent=round(100 * self.result["full_usec"] / 1e6 / secs, 1))
        self.proc = self.memcg = self.zram = None
        return self.result

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def worker(a):
    """Runs in the v1 memcg (inherited); joins the cgroup2 dir and makes memory stall."""
    _write(cgroup2_mount() + a.cgroup + "/cgroup.procs", os.getpid())
    print("ready", flush=True)
    end = time.monotonic() + a.seconds
    if a.mode == "anon":
        # a working set 2x the limit, touched at random: constant swap-out/swap-in to zram
        size = 2 * a.limit
        buf = bytearray(size)
        pages = size // 4096
        for i in range(pages):
            buf[i * 4096] = 1
        rnd = random.randrange
        while time.monotonic() < end:
            for _ in range(5000):
                buf[rnd(pages) * 4096] = 2
    else:
        # buffered writes: v1 memcg reclaim has to wait on dirty/writeback pages
        path = os.path.join(a.scratch, "ab-stall-%d.bin" % os.getpid())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.unlink(path)  # nothing left behind if we are killed
            chunk = b"x" * (1 << 20)
            while time.monotonic() < end:
                for _ in range(4 * a.limit >> 20):
                    os.write(fd, chunk)
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, 0)
        finally:
            os.close(fd)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cgroup")
    p.add_argument("--mode", choices=["write", "anon"], default="write")
    p.add_argument("--seconds", type=float, default=8)
    p.add_argument("--limit", default="64M")
    p.add_argument("--nsenter", type=int)
    p.add_argument("--scratch", default="/var/tmp")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        a.limit = parse_size(a.limit)
        return worker(a)
    s = Stall(a.cgroup, a.seconds, a.mode, a.limit, a.nsenter, scratch=a.scratch)
    s.start()
    try:
        print(s.wait())
    finally:
        s.stop()


if __name__ == "__main__":
    sys.exit(main())
