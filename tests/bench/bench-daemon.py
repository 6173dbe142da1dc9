#!/usr/bin/python3
"""Benchmarks of autoballoond (docs/benchmarks.md): start-up, idle wake-ups, RSS, and reaction time from
a real PSI event to the `balloon` command, at 1, 100 and 1,000 VMs.

Everything is real except the guests: the real systemd-machined on a private bus (abtest.Env),
one real scope per VM (CreateMachineWithNetwork, class vm, one cheap `sleep` leader each), the
daemon run inside the namespace with the limits of this shell, a real memory stall in a cgroup of
our own that the daemon watches as HostPressureSource=. The VMs are one fake QMP process
serving N sockets (fake-qmp --fake-many=N); each machine's drop-in names its socket
(QMPSocket=), as an operator would for a VM whose QMP socket is not on its command line.

    AB_BUILDDIR=build /usr/bin/python3 tests/bench/bench-daemon.py [--vms 1,100,1000]
        [--idle-seconds 60] [--idle-at 1,1000] [--stall-seconds 20] [--json FILE]
        [--keep DIR] [--nofile SOFT] [--perf DIR] [--perf-stat EVENTS] [--probes]

Clocks: the kernel's event is stamped by a separate SCHED_FIFO process (--stamp) that arms the
same trigger as the daemon's Low level on the same memory.pressure file and stamps its POLLPRI
with CLOCK_REALTIME; the fake QMP device stamps each command it receives with CLOCK_REALTIME (µs)
in its record log ("fake" columns). Both are the same clock on the same machine. A second stamp
process, armed later, checks that two triggers with the same spec fire together ("skew"). The
daemon's stderr goes through a SCHED_FIFO process (--tslog) that stamps each line as it arrives;
the daemon logs a move right after sending its `balloon`, which gives the daemon-side time
("daemon" columns) without the fake's own queueing (one process serving 1,000 sockets).
"""
import argparse
import atexit
import json
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "../lib"))
import abtest  # noqa: E402
from abtest import Fail, log  # noqa: E402

MIB = 1 << 20
VM_RAM = "512M"
# The daemon's Low trigger below, in the kernel's syntax: psi-stamp arms exactly this.
LOW_TRIGGER = "some 100000 2000000"
# Only the Low level fires in these runs (Medium/Critical thresholds the stall cannot reach), so
# that every kernel event psi-stamp sees is one the daemon acts on, and the first balloon after
# it belongs to it. The reaction path (trigger -> policy -> QMP) is the same for every level.
# No host memory budget: fake VMs hold no guest memory on the host, so the budget would take
# nothing; this measures the PSI path (trigger -> policy -> QMP), which a budget take shares.
CONFIG = """[Manager]
HostPressureSource={host}
HostMemorySource=
MachinesDirectory={machines}
RuntimeMachinesDirectory={runtime}
DeflateOnExit=yes

[Pressure]
Low=some 100ms 2s
Medium=some 1900ms 2s
Critical=full 2s 2s
"""

def psi_stamp(path, trigger, seconds):
    """--stamp mode: print the CLOCK_REALTIME of every POLLPRI of a trigger, for `seconds`."""
    # Real-time priority: the stamp must not wait for a CPU behind the daemon, the fake and the
    # stall worker that the same kernel event wakes (2 CPUs here). It runs for microseconds.
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(50))
        rt = "fifo"
    except OSError:
        rt = "other"
    t = abtest.PsiTrigger(path, trigger)
    print("armed %s %.6f" % (rt, time.time()), flush=True)
    end = time.monotonic() + seconds
    while True:
        left = end - time.monotonic()
        if left <= 0:
            break
        for _fd, ev in t.poll.poll(int(left * 1000) + 1):
            now = time.time()
            if ev & select.POLLERR:
                print("error", flush=True)
                return 1
            if ev & select.POLLPRI:
                print("event %.6f %.6f" % (now, time.monotonic()), flush=True)
    t.close()
    return 0


def ts_log(path):
    """--tslog mode: copy stdin (the daemon's stderr) to path, each line prefixed with the
    CLOCK_REALTIME at which it arrived. Real-time priority, so a line is stamped when the daemon
    writes it: the daemon logs each move right after sending its `balloon`, so this is the
    daemon-side send time, without the fake's own queueing."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(40))
    except OSError:
        pass
    out = open(path, "w")
    rest = b""
    while True:
        data = os.read(0, 1 << 16)
        now = time.time()
        if not data:
            break
        lines = (rest + data).split(b"\n")
        rest = lines.pop()
        out.write("".join("%.6f %s\n" % (now, l.decode(errors="replace")) for l in lines))
        out.flush()
    if rest:
        out.write("%.6f %s\n" % (time.time(), rest.decode(errors="replace")))
    return 0


def quantiles(xs):
    xs = sorted(xs)
    if not xs:
        return {"n": 0}

    def q(p):
        return xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]
    return {"n": len(xs), "min": xs[0], "median": statistics.median(xs), "p95": q(0.95), "max": xs[-1]}


def fmt_ms(q):
    if not q.get("n"):
        return "n=0"
    return "median %.2f ms, p95 %.2f ms (min %.2f, max %.2f, n=%d)" % (
        q["median"] * 1e3, q["p95"] * 1e3, q["min"] * 1e3, q["max"] * 1e3, q["n"])


def proc_status(pid):
    out = {}
    for line in open("/proc/%d/status" % pid):
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def proc_cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def kib(s):
    return int(s.split()[0])

# A separate process on its own bus connection asks the daemon for a property every 2 ms and
# reports how long each answer took: the daemon's event loop being busy (or blocked in a
# close()) shows as a slow answer. Prints "ready", then on stdin EOF one JSON line.
PROBE = r"""
import dbus, json, select, sys, time
bus = dbus.bus.BusConnection(sys.argv[1])
get = bus.get_object("org.autoballoon1", "/org/autoballoon1", introspect=False).get_dbus_method(
    "Get", "org.freedesktop.DBus.Properties")
lat = []
print("ready", flush=True)
while not select.select([sys.stdin], [], [], 0.002)[0]:
    t = time.monotonic()
    get("org.autoballoon1.Manager", "LowPressure", timeout=300)
    lat.append(time.monotonic() - t)
lat.sort()
print(json.dumps({"gets": len(lat), "max_s": lat[-1] if lat else None,
                  "p99_s": lat[int(0.99 * (len(lat) - 1))] if lat else None,
                  "over_20ms": sum(x > 0.020 for x in lat)}), flush=True)
"""


class Bench:
    def __init__(self, env, args):
        self.env, self.args = env, args
        self.probes_set = self.probes_ok = False
        # absolute: the commands run in the namespace, from another working directory
        build = os.path.abspath(abtest.BUILDDIR)
        self.fake_exe = os.path.join(build, "tests/fake-qmp/fake-qmp")
        self.daemon_exe = os.path.join(build, "controller/autoballoond")
        for exe in (self.fake_exe, self.daemon_exe):
            if not os.access(exe, os.X_OK):
                raise abtest.Skip("%s is not built" % exe)
        self.n_registered = 0
        self.removed = set()
        self.results = {}

    # ---- environment ------------------------------------------------------------------------
    def setup(self, max_vms):
        env = self.env
        self.vm_dir = env.file("vms")
        os.makedirs(self.vm_dir, exist_ok=True)
        os.makedirs(env.file("machines.d"), exist_ok=True)
        # On tmpfs: the fake stamps each command as it records it, and the stall below writes
        # through the page cache of the disk the environment lives on; a record on that disk
        # now and then waited in ext4 for ms and stamped late (the fake's own delay, not the
        # daemon's).
        self.record = "/dev/shm/autoballoon-bench-%d-record.log" % os.getpid()
        atexit.register(lambda p=self.record: os.path.exists(p) and os.unlink(p))
        # The runtime drop-ins and each VM's kept state (RuntimeMachinesDirectory=) live in
        # /run/autoballoon on a real host: tmpfs. The environment's state dir is on this
        # machine's disk (a state file there cost 0.25-1 ms against ~23 us on tmpfs).
        self.runtime_dir = "/dev/shm/autoballoon-bench-%d-run.d" % os.getpid()
        os.makedirs(self.runtime_dir, exist_ok=True)
        atexit.register(shutil.rmtree, self.runtime_dir, True)
        t = time.monotonic()
        self.fake = env.spawn([self.fake_exe, "--fake-many=%d" % max_vms, "--fake-dir=" + self.vm_dir,
                               "--record=" + self.record, "-m", VM_RAM],
                              name="fake-qmp", stderr=env.file("fake-qmp.log"))
        env.wait_for(lambda: os.path.exists(os.path.join(self.vm_dir, "control.sock")), 20,
                     "fake-qmp with %d VMs" % max_vms)
        log("fake-qmp serving %d VMs (one process, pid %d) after %.2f s" %
            (max_vms, self.fake.host_pid, time.monotonic() - t))
        self.leaders = []

    def host_pressure(self, n):
        """A fresh cgroup of our own (next to machine.slice, removed with the env) as the host
        pressure source of this run. Fresh, because a trigger armed on a cgroup that stalled
        before fires on its first window as if that old stall were new (measured: the daemon
        restarted after a stall saw "full 2 s in 2 s", i.e. critical, on the next stall's first
        event), and the runs must not depend on each other."""
        env = self.env
        self.host_cg = "/%s/ab-bench-host-%d" % (env.name, n)
        self.host_dir = env.cgroup2 + self.host_cg
        os.makedirs(self.host_dir, exist_ok=True)
        self.config = env.file("autoballoond.conf")
        with open(self.config, "w") as f:
            f.write(CONFIG.format(host="/sys/fs/cgroup%s/memory.pressure" % self.host_cg,
                                  machines=env.file("machines.d"), runtime=self.runtime_dir))

    def vm_name(self, i):
        return "vm-%04d" % (i + 1)   # fake-qmp --fake-many's names

    def register(self, n):
        """Register VMs up to n in total with machined: a `sleep` leader each, a drop-in naming the
        fake's socket, CreateMachineWithNetwork as libvirt calls it."""
        env = self.env
        k = n - self.n_registered
        if k <= 0:
            return
        t = time.monotonic()
        helper, pids = env.spawn_leaders(k)
        self.leaders.append(helper)
        for j, pid in enumerate(pids):
            name = self.vm_name(self.n_registered + j)
            with open(env.file("machines.d/%s.conf" % name), "w") as f:
                f.write("[Machine]\nQMPSocket=%s/%s.qmp\n" % (self.vm_dir, name))
        env.create_machines([(self.vm_name(self.n_registered + j), pid) for j, pid in enumerate(pids)],
                            service="autoballoon-bench")
        self.n_registered = n
        log("registered %d machines with machined in %.2f s (%d in total)" % (k, time.monotonic() - t, n))
        self.settle()

    def settle(self, timeout=60):
        """Wait until the namespace's systemd, dbus-daemon and machined are idle (no CPU tick in
        0.5 s): they work for a while after a batch of CreateMachine calls, and a start-up
        measured during that would measure them."""
        pids = [self.env.pid1] + [int(p) for p in open("/proc/%d/task/%d/children" % (
            self.env.pid1, self.env.pid1)).read().split()]

        def ticks():
            total = 0
            for p in pids:
                try:
                    total += proc_cpu_seconds(p)
                except FileNotFoundError:
                    pass
            return total
        t = time.monotonic()
        last = ticks()
        while time.monotonic() - t < timeout:
            time.sleep(0.5)
            now = ticks()
            if now == last:
                break
            last = now
        log("systemd, dbus-daemon and machined idle after %.1f s" % (time.monotonic() - t))

    # ---- the daemon -----------------------------------------------------------------------------
    def start_daemon(self, n):
        """Start autoballoond with NOTIFY_SOCKET on a socket of ours; returns start-up figures.
        --nofile SOFT runs it with that soft RLIMIT_NOFILE (systemd's default for services is
        1024), to see what the unit as shipped could manage."""
        env = self.env
        sock_path = env.file("notify.sock")
        if os.path.exists(sock_path):
            os.unlink(sock_path)
        ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        ns.bind(sock_path)
        ns.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.notify = {"ready": None, "all_managed": None, "messages": 0, "last_status": ""}
        self.notify_sock = ns
        want = "%d machines (%d managed)" % (n, n)

        def reader():
            # Drained all the time, like systemd would: sd_notify() blocks on a full queue.
            while True:
                try:
                    data = ns.recv(65536)
                except OSError:
                    return
                now = time.monotonic()
                text = data.decode(errors="replace")
                self.notify["messages"] += 1
                for line in text.splitlines():
                    if line == "READY=1" and self.notify["ready"] is None:
                        self.notify["ready"] = now
                    if line.startswith("STATUS="):
                        self.notify["last_status"] = line[7:]
                        if line[7:].startswith(want) and self.notify["all_managed"] is None:
                            self.notify["all_managed"] = now
        threading.Thread(target=reader, daemon=True).start()

        denv = {k: v for k, v in os.environ.items() if k != "DBUS_SYSTEM_BUS_ADDRESS"}
        denv["NOTIFY_SOCKET"] = sock_path
        self.daemon_log = env.file("autoballoond-%d.log" % n)
        rfd, wfd = os.pipe()
        self.tslog = subprocess.Popen(["/usr/bin/python3", os.path.abspath(__file__), "--tslog", self.daemon_log],
                                      stdin=rfd)
        os.close(rfd)
        t0 = time.monotonic()
        limit = ["prlimit", "--nofile=%d:" % self.args.nofile, "--"] if self.args.nofile else []
        self.daemon = env.spawn(limit + [self.daemon_exe, "--config=" + self.config], name="autoballoond",
                                stdout=wfd, stderr=wfd, env=denv)
        os.close(wfd)
        pid = self.daemon.host_pid
        self.startup_stat = self.perf_stat(pid, "start-%d" % n)
        end = t0 + 60 + n * 0.1
        while self.notify["ready"] is None or self.notify["all_managed"] is None:
            if not self.daemon.alive():
                raise Fail("autoballoond exited (%s):\n%s" % (self.daemon.popen.returncode,
                                                              open(self.daemon_log).read()[-3000:]))
            if time.monotonic() > end:
                raise Fail("autoballoond: not all %d machines managed after %.0f s; last STATUS=%s" %
                           (n, end - t0, self.notify["last_status"]))
            time.sleep(0.002)
        cpu = proc_cpu_seconds(pid)
        owned = env.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                         "NameHasOwner", abtest.AB)
        if not owned:
            raise Fail("READY=1 but %s is not on the bus" % abtest.AB)
        r = {"ready_s": self.notify["ready"] - t0, "all_managed_s": self.notify["all_managed"] - t0,
             "cpu_s": cpu}
        log("N=%d: READY=1 after %.3f s, all %d managed after %.3f s, %.3f s CPU" %
            (n, r["ready_s"], n, r["all_managed_s"], cpu))
        return r

    def perf(self, pid, what):
        """--perf DIR: `perf record -g` of the daemon during one phase (for perf report)."""
        if not self.args.perf:
            return None
        os.makedirs(self.args.perf, exist_ok=True)
        out = os.path.join(self.args.perf, "perf-%s.data" % what)
        p = subprocess.Popen(["perf", "record", "-q", "-F", "1999", "-g", "-p", str(pid), "-o", out],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        return p

    def perf_stop(self, p):
        if p:
            p.send_signal(signal.SIGINT)
            p.wait(30)

    def perf_stat(self, pid, what):
        """--perf-stat EVENTS (e.g. uprobes made with `perf probe -x autoballoond FUNC`): counts
        during one phase, printed to DIR/perf-stat-WHAT.txt (--perf DIR)."""
        if not self.args.perf_stat:
            return None
        os.makedirs(self.args.perf or ".", exist_ok=True)
        out = os.path.join(self.args.perf or ".", "perf-stat-%s.txt" % what)
        p = subprocess.Popen(["perf", "stat", "-e", self.args.perf_stat, "-p", str(pid), "-o", out],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        return p

    def probes_start(self, pid, what):
        """--probes: uprobes on the daemon, its trigger fd dispatched (on_io in psi.c) and each
        `balloon` sent (machine_move's return), stamped with CLOCK_MONOTONIC: the daemon's side
        of an event, without the fake's own waits for a CPU."""
        if not self.args.probes:
            return None
        if not shutil.which("perf"):
            raise Fail("--probes needs perf (Debian: linux-perf)")
        if not self.probes_set:
            self.probes_set = True
            subprocess.run(["perf", "probe", "-q", "-d", "abbench:*"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            ok = all(subprocess.run(["perf", "probe", "-q", "-x", self.daemon_exe, "-a", spec],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
                     for spec in ("abbench:io=on_io@psi.c", "abbench:sent=machine_move%return"))
            if not ok:
                log("perf probe could not set uprobes on the daemon: no daemon-side figures")
                return None
            atexit.register(subprocess.run, ["perf", "probe", "-q", "-d", "abbench:*"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.probes_ok = True
        if not self.probes_ok:
            return None
        out = "/dev/shm/autoballoon-bench-%d-probes-%s.data" % (os.getpid(), what)   # off the stalled disk
        p = subprocess.Popen(["perf", "record", "-q", "-k", "CLOCK_MONOTONIC", "-e", "abbench:*", "-p", str(pid),
                              "-o", out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        return (p, out)

    def probes_stop(self, probes):
        """[(CLOCK_MONOTONIC, "io" or "sent")] of a probes_start()."""
        if not probes:
            return []
        p, out = probes
        p.send_signal(signal.SIGINT)
        p.wait(30)
        r = subprocess.run(["perf", "script", "-i", out, "-F", "time,event"], capture_output=True, text=True)
        os.unlink(out)
        stamps = []
        for line in r.stdout.splitlines():
            f = line.split()
            if len(f) >= 2 and f[1].startswith("abbench:"):
                stamps.append((float(f[0].rstrip(":")), "io" if f[1].startswith("abbench:io") else "sent"))
        return stamps

    def stop_daemon(self, n):
        """SIGTERM: DeflateOnExit= returns every guest to its maximum, then the daemon exits."""
        t = time.monotonic()
        perf = self.perf(self.daemon.host_pid, "stop-%d" % n)
        rc = self.daemon.stop(signal.SIGTERM, 120)
        self.perf_stop(perf)
        self.env.procs.remove(self.daemon)
        self.tslog.wait(10)
        self.notify_sock.close()
        dt = time.monotonic() - t
        log("N=%d: daemon stopped (exit code %s) %.2f s after SIGTERM" % (n, rc, dt))
        if rc != 0:
            raise Fail("autoballoond exit code %s on SIGTERM" % rc)
        return {"stop_s": round(dt, 3)}

    def fake_status(self):
        out = self.env.fake_control(os.path.join(self.vm_dir, "control.sock"), "status", timeout=30)
        return [json.loads(l) for l in out.splitlines() if l.startswith("{")]

    def wait_all_at_max(self, n, timeout=20):
        # VMs terminated by removal() are gone for the daemon; the fake still serves them
        names = {self.vm_name(i) for i in range(n)} - self.removed

        def ok():
            return all(s["actual"] == s["ram"] and s["target"] == s["ram"]
                       for s in self.fake_status() if s["vm"] in names)
        self.env.wait_for(ok, timeout, "every VM back at its maximum", interval=0.2)

    # ---- measurements ---------------------------------------------------------------------------
    def idle(self, n, seconds):
        """Wake-ups of the idle daemon: VMs at their maximum, no pressure."""
        pid = self.daemon.host_pid
        time.sleep(2)  # let the start-up replies settle
        s0, c0 = proc_status(pid), proc_cpu_seconds(pid)
        t0 = time.monotonic()
        time.sleep(seconds)
        s1, c1 = proc_status(pid), proc_cpu_seconds(pid)
        dt = time.monotonic() - t0
        r = {"seconds": round(dt, 1),
             "voluntary_ctxt_switches": int(s1["voluntary_ctxt_switches"]) - int(s0["voluntary_ctxt_switches"]),
             "nonvoluntary_ctxt_switches": int(s1["nonvoluntary_ctxt_switches"]) -
             int(s0["nonvoluntary_ctxt_switches"]),
             "cpu_s": round(c1 - c0, 3), "threads": int(s1["Threads"])}
        log("N=%d idle %.1f s: %d voluntary + %d involuntary context switches, %.3f s CPU, %d thread(s)" %
            (n, dt, r["voluntary_ctxt_switches"], r["nonvoluntary_ctxt_switches"], r["cpu_s"], r["threads"]))
        return r

    def memory(self, n):
        pid = self.daemon.host_pid
        s = proc_status(pid)
        r = {"VmRSS_kib": kib(s["VmRSS"]), "VmHWM_kib": kib(s["VmHWM"]),
             "RssAnon_kib": kib(s["RssAnon"]), "fds": len(os.listdir("/proc/%d/fd" % pid))}
        log("N=%d: VmRSS %d KiB, VmHWM %d KiB, RssAnon %d KiB, %d fds" %
            (n, r["VmRSS_kib"], r["VmHWM_kib"], r["RssAnon_kib"], r["fds"]))
        return r

    def stamp(self, seconds):
        p = subprocess.Popen(["/usr/bin/python3", os.path.abspath(__file__), "--stamp",
                              self.host_dir + "/memory.pressure", LOW_TRIGGER, str(seconds)],
                             stdout=subprocess.PIPE, text=True)
        line = p.stdout.readline()
        if not line.startswith("armed"):
            raise Fail("psi-stamp did not arm its trigger: %r" % line)
        return p

    def reaction(self, n, stall_seconds):
        """Real stall in the host pressure cgroup; kernel event (psi-stamp) -> first `balloon`
        the fake received, per event; and the last VM's first `balloon` after each event."""
        pid = self.daemon.host_pid
        offset = os.path.getsize(self.record) if os.path.exists(self.record) else 0
        stamp = self.stamp(stall_seconds + 3)
        time.sleep(0.5)
        control = self.stamp(stall_seconds + 2.5)   # armed later: the skew check
        c0, f0 = proc_cpu_seconds(pid), proc_cpu_seconds(self.fake.host_pid)
        perf = self.perf(pid, "stall-%d" % n)
        probes = self.probes_start(pid, "stall-%d" % n)
        pstat = self.perf_stat(pid, "stall-%d" % n)
        stall = self.env.stall(self.host_cg, seconds=stall_seconds)
        result = stall.wait()
        self.perf_stop(perf)
        self.perf_stop(pstat)
        probed = self.probes_stop(probes)
        stamped = [l.split() for l in stamp.stdout if l.startswith("event")]
        events = [float(x[1]) for x in stamped]
        control_events = [float(l.split()[1]) for l in control.stdout if l.startswith("event")]
        stamp.wait()
        control.wait()
        c1, f1 = proc_cpu_seconds(pid), proc_cpu_seconds(self.fake.host_pid)
        time.sleep(0.5)

        balloons = []   # (time, vm)
        with open(self.record) as f:
            f.seek(offset)
            for line in f:
                if '"execute":"balloon"' in line:
                    rec = json.loads(line)
                    balloons.append((rec["time"], rec["vm"]))
        balloons.sort()

        # The daemon's log lines, stamped on arrival: the moves of a batch are logged after the
        # batch's commands are sent (one write), so their stamp is when the batch was done; an
        # event that found guests without fresh stats says so ("cold": they stepped blind).
        sent, asked = [], []
        with open(self.daemon_log) as f:
            for line in f:
                ts, _, msg = line.partition(" ")
                if "balloon target" in msg and msg.startswith("Machine "):
                    sent.append((float(ts), msg.split()[1].rstrip(":")))
                elif "without fresh statistics" in msg:
                    asked.append(float(ts))
        sent.sort()
        d_last = []
        for k, t in enumerate(events):
            end = min(events[k + 1] if k + 1 < len(events) else t + 2.0, t + 2.0)
            got = [st for st, vm in sent if t <= st < end]
            if got:
                d_last.append(max(got) - t)

        # The probes (CLOCK_MONOTONIC, as psi-stamp's second column): the trigger fd dispatched
        # and the first `balloon` sent, per kernel event.
        mono = [float(x[2]) for x in stamped]
        p_io, p_sent = [], []
        for k, t in enumerate(mono):
            end = min(mono[k + 1] if k + 1 < len(mono) else t + 2.0, t + 2.0)
            # the first dispatch at or after the kernel's stamp (the two clocks are read by two
            # processes: allow the stamp a few microseconds late), then the first send after it
            io = [pt for pt, what in probed if what == "io" and t - 0.0001 <= pt < end]
            if not io:
                continue
            p_io.append(max(0.0, min(io) - t))
            out = [pt for pt, what in probed if what == "sent" and min(io) <= pt < end]
            if out:
                p_sent.append(min(out) - t)

        first, last, n_vms, missed = [], [], [], 0
        warm_first, warm_last, cold_first, cold_rest_first, cold_rest_last = [], [], [], [], []
        for k, t in enumerate(events):
            # the balloons an event causes come before the next event (>= 2 s later)
            end = min(events[k + 1] if k + 1 < len(events) else t + 2.0, t + 2.0)
            got, second = {}, {}
            for bt, vm in balloons:
                if t <= bt < end:
                    if vm not in got:
                        got[vm] = bt
                    elif vm not in second:
                        second[vm] = bt
            if not got:
                missed += 1
                continue
            first.append(min(got.values()) - t)
            last.append(max(got.values()) - t)
            n_vms.append(len(got))
            if any(t <= a < end for a in asked):
                # the blind first step at once, the rest of the event as each VM's stats come
                cold_first.append(first[-1])
                if second:
                    cold_rest_first.append(min(second.values()) - t)
                    cold_rest_last.append(max(second.values()) - t)
            else:
                warm_first.append(first[-1])
                warm_last.append(last[-1])
        skew = []
        for t in control_events:
            near = min(events, key=lambda e: abs(e - t)) if events else None
            if near is not None and abs(near - t) < 1.0:
                skew.append(abs(near - t))
        r = {"events": len(events), "events_without_balloon": missed, "balloons": len(balloons),
             "raw": {"events": events, "events_monotonic": [float(x[2]) for x in stamped],
                     "balloons_first_vm": [
                 bt for bt, vm in balloons if vm == self.vm_name(0)]},
             "first": quantiles(first), "last": quantiles(last),
             "warm_first": quantiles(warm_first), "warm_last": quantiles(warm_last),
             "cold_first": quantiles(cold_first), "cold_rest_first": quantiles(cold_rest_first),
             "cold_rest_last": quantiles(cold_rest_last), "daemon_batch": quantiles(d_last),
             "daemon_io": quantiles(p_io), "daemon_first": quantiles(p_sent),
             "vms_per_event": quantiles(n_vms), "trigger_skew": quantiles(skew),
             "daemon_cpu_s": round(c1 - c0, 3), "fake_cpu_s": round(f1 - f0, 3), "stall": result}
        log("N=%d: %d kernel events in %.0f s of stall (%s %% some), %d balloon commands, %d events "
            "without one" % (n, len(events), result["seconds"], result["some_percent"], len(balloons), missed))
        log("N=%d: event -> first balloon: %s" % (n, fmt_ms(r["first"])))
        log("N=%d: event -> last VM's first balloon: %s; VMs per event: median %s" %
            (n, fmt_ms(r["last"]), r["vms_per_event"].get("median")))
        log("N=%d: events decided at once: first balloon %s; last VM %s" %
            (n, fmt_ms(r["warm_first"]), fmt_ms(r["warm_last"])))
        log("N=%d: events that found no fresh guest stats: first balloon (blind step) %s; first VM's rest %s; "
            "last VM's rest %s" % (n, fmt_ms(r["cold_first"]), fmt_ms(r["cold_rest_first"]), fmt_ms(r["cold_rest_last"])))
        log("N=%d: daemon side, event -> the batch's move lines written: %s" % (n, fmt_ms(r["daemon_batch"])))
        if probed:
            log("N=%d: daemon side (uprobes), event -> trigger fd dispatched: %s; -> first balloon sent: %s" %
                (n, fmt_ms(r["daemon_io"]), fmt_ms(r["daemon_first"])))
        log("N=%d: trigger skew (two identical triggers): %s; CPU during the stall: daemon %.3f s, "
            "fake-qmp %.3f s" % (n, fmt_ms(r["trigger_skew"]), r["daemon_cpu_s"], r["fake_cpu_s"]))
        return r

    def probe(self):
        p = subprocess.Popen(["/usr/bin/python3", "-c", PROBE, self.env.address], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
        if p.stdout.readline().strip() != "ready":
            raise Fail("the loop-lag probe did not start")
        return p

    @staticmethod
    def probe_result(p):
        p.stdin.close()
        r = json.loads(p.stdout.readline())
        p.wait(10)
        return r

    def rearm(self, n):
        """A trigger knob changed on the Manager (busctl set-property ... LowPressure): every VM
        without its own value re-arms its scope triggers, the host too. The Set's round trip,
        and the slowest answer a prober got meanwhile (the loop blocked)."""
        import dbus
        r = {}
        for label, value in (("set", "some 120ms 2s"), ("restore", "some 100ms 2s")):
            probe = self.probe()
            time.sleep(0.2)
            t = time.monotonic()
            self.env.call(abtest.AB, abtest.AB_PATH, abtest.PROPS, "Set", abtest.AB_MANAGER, "LowPressure",
                          dbus.String(value, variant_level=1), timeout=300)
            dt = time.monotonic() - t
            time.sleep(1.0)
            pr = self.probe_result(probe)
            r[label] = {"set_s": round(dt, 4), "probe": pr}
            log("N=%d: LowPressure=%s: Set answered in %.1f ms; slowest Get meanwhile %.1f ms "
                "(%d of %d over 20 ms)" % (n, value, dt * 1e3, pr["max_s"] * 1e3, pr["over_20ms"], pr["gets"]))
        return r

    def removal(self, n, k=10):
        """k VMs terminated with machined, one every 0.3 s: the slowest Get meanwhile."""
        probe = self.probe()
        names = [self.vm_name(n - 1 - i) for i in range(k)]
        self.removed.update(names)
        t = time.monotonic()
        for name in names:
            self.env.terminate_machine(name)
            time.sleep(0.3)
        self.env.wait_for(lambda: not any(x in self.env.ab_machines() for x in names), 30,
                          "%d machines gone from the daemon" % k)
        dt = time.monotonic() - t
        time.sleep(0.5)
        pr = self.probe_result(probe)
        log("N=%d: %d VMs removed in %.2f s; slowest Get meanwhile %.1f ms (%d of %d over 20 ms)" %
            (n, k, dt, pr["max_s"] * 1e3, pr["over_20ms"], pr["gets"]))
        return {"k": k, "probe": pr}

    # ---- the whole run ---------------------------------------------------------------------------
    def run(self):
        a = self.args
        self.setup(max(a.vms))
        for n in a.vms:
            self.register(n)
            self.host_pressure(n)
            r = {"n": n}
            r["startup"] = self.start_daemon(n)
            self.perf_stop(self.startup_stat)
            r["memory_after_start"] = self.memory(n)
            if n in a.idle_at:
                r["idle"] = self.idle(n, a.idle_seconds)
            r["reaction"] = self.reaction(n, a.stall_seconds)
            r["memory_after_stall"] = self.memory(n)
            r["rearm"] = self.rearm(n)
            if n == max(a.vms):   # the last run: removing VMs would change the next ones
                r["removal"] = self.removal(n)
            r["stop"] = self.stop_daemon(n)
            self.keep(self.daemon_log)
            self.wait_all_at_max(n)
            self.results[n] = r
        self.keep(self.record)
        return self.results

    def keep(self, path):
        """--keep DIR: copy a log out of the state dir before the environment removes it."""
        if self.args.keep and os.path.exists(path):
            os.makedirs(self.args.keep, exist_ok=True)
            subprocess.run(["cp", path, self.args.keep], check=False)


def summary(results, args):
    ms = lambda q, k: "%.1f" % (q[k] * 1e3) if q.get("n") else "-"
    lines = ["", "autoballoond benchmarks (%s, %d CPUs, kernel %s)" %
             (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.cpu_count(), os.uname().release), ""]
    lines.append("start-up and memory")
    lines.append("%-6s %8s %10s %9s %9s %9s %6s %8s" % ("VMs", "READY s", "managed s", "CPU s",
                                                      "RSS KiB", "HWM KiB", "fds", "stop s"))
    for n, r in sorted(results.items()):
        s, m = r["startup"], r["memory_after_stall"]
        lines.append("%-6d %8.3f %10.3f %9.3f %9d %9d %6d %8.2f" % (
            n, s["ready_s"], s["all_managed_s"], s["cpu_s"], m["VmRSS_kib"], m["VmHWM_kib"], m["fds"],
            r["stop"]["stop_s"]))
    lines.append("")
    lines.append("reaction, PSI event -> balloon received by the fake VM (ms; median / p95 / max over the events;")
    lines.append("\"fresh\": events that found the guests' stats fresh; \"blind\": events that found none (the")
    lines.append("first after an idle spell): a blind low step at once, the rest as each VM's stats come (\"rest\":")
    lines.append("the first and the last VM's); \"batch\": the daemon's move lines written)")
    lines.append("%-6s %6s %20s %20s %14s %14s %14s %14s %6s %6s %5s" % (
        "VMs", "events", "first (fresh)", "last VM (fresh)", "first (blind)", "rest, 1st/last", "last VM (all)",
        "batch", "CPU s", "fake s", "skew"))
    for n, r in sorted(results.items()):
        x = r["reaction"]
        three = lambda q: "%s / %s / %s" % (ms(q, "median"), ms(q, "p95"), ms(q, "max"))
        pair = lambda q: "%s / %s" % (ms(q, "median"), ms(q, "max"))
        lines.append("%-6d %6d %20s %20s %14s %14s %14s %14s %6.2f %6.2f %5s" % (
            n, x["events"], three(x["warm_first"]), three(x["warm_last"]), pair(x["cold_first"]),
            "%s / %s" % (ms(x["cold_rest_first"], "median"), ms(x["cold_rest_last"], "median")), pair(x["last"]),
            pair(x["daemon_batch"]), x["daemon_cpu_s"], x["fake_cpu_s"], ms(x["trigger_skew"], "max")))
        if x["events_without_balloon"]:
            lines.append("       (%d event(s) with no balloon within 2 s)" % x["events_without_balloon"])
    lines.append("")
    for n, r in sorted(results.items()):
        if "idle" in r:
            i = r["idle"]
            lines.append("idle, %d VM(s), %.0f s: %d voluntary + %d involuntary context switches, %.3f s CPU" %
                         (n, i["seconds"], i["voluntary_ctxt_switches"], i["nonvoluntary_ctxt_switches"], i["cpu_s"]))
    lines.append("")
    lines.append("event loop while triggers are re-armed or closed (slowest answer to a Get every 2 ms)")
    for n, r in sorted(results.items()):
        for label in ("set", "restore"):
            x = r["rearm"][label]
            lines.append("%d VM(s), Manager LowPressure %s: Set %.1f ms, slowest Get %.1f ms" %
                         (n, label, x["set_s"] * 1e3, x["probe"]["max_s"] * 1e3))
        if "removal" in r:
            x = r["removal"]
            lines.append("%d VM(s), %d removed one by one: slowest Get %.1f ms, %d Gets over 20 ms" %
                         (n, x["k"], x["probe"]["max_s"] * 1e3, x["probe"]["over_20ms"]))
    ns = sorted(results)
    if len(ns) >= 2:
        lo, hi = results[ns[0]]["memory_after_stall"], results[ns[-1]]["memory_after_stall"]
        lines.append("per VM: %.1f KiB RSS (%d -> %d VMs), %.2f fds" %
                     ((hi["VmRSS_kib"] - lo["VmRSS_kib"]) / (ns[-1] - ns[0]), ns[0], ns[-1],
                      (hi["fds"] - lo["fds"]) / (ns[-1] - ns[0])))
    return "\n".join(lines)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--tslog":
        return ts_log(sys.argv[2])
    if len(sys.argv) > 1 and sys.argv[1] == "--stamp":
        return psi_stamp(sys.argv[2], sys.argv[3], float(sys.argv[4]))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vms", default="1,100,1000")
    p.add_argument("--idle-at", default="1,1000")
    p.add_argument("--idle-seconds", type=float, default=60)
    p.add_argument("--stall-seconds", type=float, default=20)
    p.add_argument("--json", help="write the figures here as JSON")
    p.add_argument("--nofile", type=int, help="the daemon's soft RLIMIT_NOFILE (default: this shell's)")
    p.add_argument("--keep", metavar="DIR", help="copy the daemon's logs and the fake's record here")
    p.add_argument("--perf-stat", metavar="EVENTS", help="perf stat -e EVENTS of the daemon per phase")
    p.add_argument("--perf", metavar="DIR", help="perf record the daemon during each stall and stop, into DIR")
    p.add_argument("--probes", action="store_true",
                   help="uprobes on the daemon (perf): the daemon-side figures; perf's own CPU use "
                        "delays the fake, so the fake-side figures of such a run are not the ones to quote")
    a = p.parse_args()
    a.vms = sorted(int(x) for x in a.vms.split(","))
    a.idle_at = {int(x) for x in a.idle_at.split(",") if x}
    if os.geteuid() != 0:
        print("SKIP: needs root")
        return abtest.SKIP
    signal.signal(signal.SIGTERM, abtest._on_signal)
    signal.signal(signal.SIGINT, abtest._on_signal)
    import atexit
    atexit.register(abtest._atexit)
    t = time.monotonic()
    os.environ["AB_ENV_POLICY"] = " ".join([os.path.join(abtest.SRCDIR, "dbus/org.autoballoon1.conf"),
                                            os.path.join(HERE, "bus-limits.conf")])
    with abtest.Env("abt-bench") as env:
        abtest._current = env
        # no catch-all signal match of ours: dbus-daemon would copy every PropertiesChanged of
        # 1,000 VMs to us, on the same 2 CPUs as the daemon
        env.bus.remove_signal_receiver(env._on_signal, path_keyword="path",
                                       interface_keyword="interface", member_keyword="member")
        results = Bench(env, a).run()
    abtest._current = None
    text = summary(results, a)
    print(text)
    print("\n(total %.0f s)" % (time.monotonic() - t))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"results": results, "summary": text}, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
