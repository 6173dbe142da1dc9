"""Integration test library: a private system bus with the real systemd-machined
(machined-env.sh), VMs registered the way libvirt does, the daemon under test run inside the
namespace, D-Bus helpers for its API, PSI triggers and real memory stalls.

Run tests with /usr/bin/python3 (python3-dbus, python3-gi). A test is a function:

    import abtest
    def test(env):
        vm = env.start_vm("vm1")                  # fake QMP leader + CreateMachine
        env.start_daemon()                        # autoballoond --config=... in the namespace
        env.wait_property(env.machine_path("vm1"), "State", "managed")
    abtest.main(test, "daemon-discovery")

Environment: AB_BUILDDIR (meson build dir), AB_SRCDIR (source dir), AB_KEEP=1 keeps the
state dir (logs) of a failed run.
"""
import atexit
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
import uuid

import dbus
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stall as _stall  # noqa: E402

LIB = os.path.dirname(os.path.abspath(__file__))
ENV_SH = os.path.join(LIB, "machined-env.sh")
SRCDIR = os.environ.get("AB_SRCDIR", os.path.normpath(os.path.join(LIB, "../..")))
BUILDDIR = os.path.abspath(os.environ.get("AB_BUILDDIR", os.path.join(SRCDIR, "build")))
SKIP = 77  # meson's exit code for a skipped test

M1 = "org.freedesktop.machine1"
M1_PATH = "/org/freedesktop/machine1"
S1 = "org.freedesktop.systemd1"
AB = "org.autoballoon1"
AB_PATH = "/org/autoballoon1"
AB_MANAGER = "org.autoballoon1.Manager"
AB_MACHINE = "org.autoballoon1.Machine"
PROPS = "org.freedesktop.DBus.Properties"
POLKITD = "/usr/lib/polkit-1/polkitd"

T0 = time.monotonic()


def log(*args):
    print("[%7.3f]" % (time.monotonic() - T0), *args, flush=True)


class Fail(Exception):
    pass


class Skip(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def path_encode(name):
    """sd_bus_path_encode() of one label: [A-Za-z0-9] kept, everything else _xx."""
    if not name:
        return "_"
    return "".join(c if c.isascii() and c.isalnum() else "_%02x" % b
                   for c, b in ((chr(b), b) for b in name.encode()))


def unit_escape(name):
    """systemd's unit_name_escape(): how machined turns a machine name into its scope's name."""
    out = []
    for i, b in enumerate(name.encode()):
        c = chr(b)
        if c == "/":
            out.append("-")
        elif (c.isascii() and c.isalnum()) or c in ":_" or (c == "." and i > 0):
            out.append(c)
        else:
            out.append("\\x%02x" % b)
    return "".join(out)


def scope_name(machine):
    return "machine-%s.scope" % unit_escape(machine)


def unwrap(v):
    """dbus-python values to plain Python ones."""
    if isinstance(v, (dbus.Array, list)):
        return [unwrap(x) for x in v]
    if isinstance(v, (dbus.Struct, tuple)):
        return tuple(unwrap(x) for x in v)
    if isinstance(v, dbus.Dictionary):
        return {unwrap(k): unwrap(x) for k, x in v.items()}
    if isinstance(v, dbus.Boolean):
        return bool(v)
    if isinstance(v, (dbus.String, dbus.ObjectPath, dbus.Signature)):
        return str(v)
    if isinstance(v, (dbus.Byte, dbus.Int16, dbus.Int32, dbus.Int64,
                      dbus.UInt16, dbus.UInt32, dbus.UInt64)):
        return int(v)
    if isinstance(v, dbus.Double):
        return float(v)
    return v


def typed(sig, value):
    """A variant value of D-Bus type sig for call_as()."""
    return ["@" + sig, value]


class Proc:
    """A process started inside the namespace: popen is the host-side nsenter, host_pid/ns_pid
    the command itself."""

    def __init__(self, popen, host_pid, ns_pid, name):
        self.popen, self.host_pid, self.ns_pid, self.name = popen, host_pid, ns_pid, name

    def alive(self):
        return self.popen.poll() is None

    def kill(self, sig):
        if self.alive():
            try:
                os.kill(self.host_pid, sig)
            except ProcessLookupError:
                pass

    def pause(self):
        """SIGSTOP the command. nsenter passes a child's stop on to itself (and, once
        continued, a SIGCONT back to the child): wait for that, so that resume() finds both
        stopped and nothing is left stopped behind the test's back."""
        self.kill(signal.SIGSTOP)
        for _ in range(200):
            try:
                if open("/proc/%d/stat" % self.popen.pid).read().rsplit(")", 1)[1].split()[0] == "T":
                    return
            except (OSError, IndexError):
                return
            time.sleep(0.01)
        raise Fail("nsenter of %s did not stop with it" % self.name)

    def resume(self):
        self.kill(signal.SIGCONT)
        if self.alive():
            os.kill(self.popen.pid, signal.SIGCONT)

    def stop(self, sig=signal.SIGTERM, timeout=5.0):
        """Signal the command and wait; SIGKILL after timeout. Returns nsenter's exit code
        (the command's code, or -signal if it was killed by one)."""
        self.kill(sig)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            log("%s did not exit within %.1f s of %s: SIGKILL" % (self.name, timeout, sig))
            self.kill(signal.SIGKILL)
            self.popen.kill()
            return self.popen.wait()


class PsiTrigger:
    """A PSI trigger (POLLPRI) on a memory.pressure file."""

    def __init__(self, path, trigger="some 150000 2000000"):
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        try:
            os.write(self.fd, trigger.encode() + b"\0")
        except OSError:
            os.close(self.fd)
            raise
        self.poll = select.poll()
        self.poll.register(self.fd, select.POLLPRI)

    def wait(self, timeout):
        """True at the first POLLPRI within timeout seconds, False if none came."""
        for _fd, ev in self.poll.poll(int(timeout * 1000)):
            if ev & select.POLLERR:
                raise Fail("POLLERR on %s (cgroup gone?)" % self.path)
            if ev & select.POLLPRI:
                return True
        return False

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class VM:
    """A fake VM: a fake QMP leader registered with machined."""

    def __init__(self, name, proc, qmp_socket, record_log, machine_path):
        self.name, self.proc, self.qmp_socket, self.record_log = name, proc, qmp_socket, record_log
        self.machined_path = machine_path
        self.unit = scope_name(name)

    def records(self):
        """The fake's record of QMP commands received, as text ('' if none yet)."""
        try:
            return open(self.record_log).read()
        except FileNotFoundError:
            return ""

    def balloon_targets(self):
        """The values of the `balloon` commands the fake received, in order (a line of the
        record that is not a whole JSON object, e.g. one being written, is skipped)."""
        out = []
        for line in self.records().splitlines():
            m = re.search(r"\{.*\}", line)
            try:
                msg = json.loads(m.group(0)) if m else None
            except ValueError:
                msg = None
            if isinstance(msg, dict) and msg.get("execute") == "balloon":
                out.append(int(msg["arguments"]["value"]))
        return out


# Env.spawn_leaders(): forks k `sleep infinity` leaders, prints their PIDs, and waits.
LEADERS_SCRIPT = r"""
import os, signal, sys
pids = []
for _ in range(int(sys.argv[1])):
    pid = os.fork()
    if pid == 0:
        os.execv("/bin/sleep", ["sleep", "infinity"])
    pids.append(pid)
sys.stdout.write("".join("%d\n" % p for p in pids))
sys.stdout.flush()
while True:
    signal.pause()
"""


class Env:
    """A machined-env.sh instance, its private bus, and everything a test starts in it."""

    def __init__(self, name):
        self.name = name
        self.procs = []
        self.daemon = None
        self.stalls = []
        self.triggers = []
        self.signals = []  # (monotonic time dispatched, path, interface, member, args); see pump()
        self.vars = {}
        self.bus = None
        self.failed = False

    # ---- environment ----------------------------------------------------------------------
    def _sh(self, *args, **extra_env):
        env = dict(os.environ, AB_ENV_NAME=self.name, **extra_env)
        return subprocess.run([ENV_SH, *args], env=env, text=True, capture_output=True)

    def start(self):
        t = time.monotonic()
        r = self._sh("start")
        if r.returncode != 0:
            raise Fail("machined-env start failed:\n" + r.stderr + r.stdout)
        self.vars = dict(l.split("=", 1) for l in r.stdout.splitlines() if "=" in l)
        self.state = self.vars["AB_ENV_STATE"]
        self.pid1 = int(self.vars["AB_ENV_PID1"])
        self.cgroup2 = self.vars["AB_ENV_CGROUP2"]
        self.address = self.vars["DBUS_SYSTEM_BUS_ADDRESS"]
        os.environ.update(DBUS_SYSTEM_BUS_ADDRESS=self.address, AB_ENV_MEMCG=self.vars["AB_ENV_MEMCG"])
        # A reaper in its own session holds the read end of a pipe only we can write to: if
        # this process dies without stop() (SIGKILL, e.g. meson's timeout), it reads EOF and
        # stops the environment.
        rfd, self._reaper_fd = os.pipe()
        subprocess.Popen(["sh", "-c", 'read x; [ "$x" = done ] || exec "$0" stop', ENV_SH],
                         stdin=rfd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env=dict(os.environ, AB_ENV_NAME=self.name), start_new_session=True)
        os.close(rfd)
        self.bus = dbus.bus.BusConnection(self.address, mainloop=DBusGMainLoop())
        self.bus.add_signal_receiver(self._on_signal, path_keyword="path",
                                     interface_keyword="interface", member_keyword="member")
        log("env %s up in %.3f s (%s)" % (self.name, time.monotonic() - t, self.address))
        return self

    def _on_signal(self, *args, path=None, interface=None, member=None):
        self.signals.append((time.monotonic(), str(path), str(interface), str(member), unwrap(list(args))))

    def stop(self):
        """Stop everything this Env started; safe to call more than once."""
        if self.daemon:
            self.stop_daemon()
        for s in self.stalls:
            s.stop()
        for t in self.triggers:
            t.close()
        for p in self.procs:
            if p.alive():
                p.kill(signal.SIGKILL)
                p.popen.kill()
                p.popen.wait()
        self.procs, self.stalls, self.triggers = [], [], []
        if self.bus:
            self.bus.close()
            self.bus = None
        if self.vars:
            if self.failed:
                self._dump_logs()
            t = time.monotonic()
            keep = "1" if self.failed and os.environ.get("AB_KEEP") == "1" else "0"
            r = self._sh("stop", AB_ENV_KEEP=keep)
            log("env %s stopped in %.3f s%s" % (self.name, time.monotonic() - t,
                                                 "" if r.returncode == 0 else ": " + r.stderr.strip()))
            self.vars = {}
            os.write(self._reaper_fd, b"done\n")
            os.close(self._reaper_fd)

    def _dump_logs(self):
        for f in sorted(os.listdir(self.state)) if os.path.isdir(self.state) else []:
            if f.endswith(".log"):
                text = open(os.path.join(self.state, f), errors="replace").read()
                print("----- %s (last 40 lines) -----\n%s" % (f, "\n".join(text.splitlines()[-40:])))

    def __enter__(self):
        return self.start()

    def __exit__(self, etype, *_):
        self.failed = etype is not None and not issubclass(etype, Skip)
        self.stop()

    def file(self, name):
        """A path in the instance's state dir (removed with it)."""
        return os.path.join(self.state, name)

    # ---- processes in the namespace -------------------------------------------------------
    def spawn(self, cmd, name=None, stdout=None, stderr=None, env=None, memcg=None):
        """Start cmd inside the namespace; returns a Proc with host and namespace PIDs.
        memcg: a v1 memory cgroup directory to join first (the namespace has no v1 mount)."""
        name = name or os.path.basename(cmd[0])
        out = open(stdout, "ab") if isinstance(stdout, str) else stdout
        err = open(stderr, "ab") if isinstance(stderr, str) else stderr
        popen = subprocess.Popen(["nsenter", "-t", str(self.pid1), "-p", "-m", "-u", "--", *cmd],
                                 stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                 env=env or os.environ, start_new_session=True,
                                 preexec_fn=(lambda: _stall._write(memcg + "/cgroup.procs", os.getpid()))
                                 if memcg else None)
        for f, given in ((out, stdout), (err, stderr)):
            if f is not given:
                f.close()
        child = None
        for _ in range(200):  # nsenter forks the command into the pid namespace
            try:
                child = open("/proc/%d/task/%d/children" % (popen.pid, popen.pid)).read().split()
            except FileNotFoundError:
                child = None
            if child or popen.poll() is not None:
                break
            time.sleep(0.01)
        if not child:
            raise Fail("%s did not start in the namespace (rc %s)" % (cmd, popen.poll()))
        host_pid = int(child[0])
        ns_pid = int([l.split()[-1] for l in open("/proc/%d/status" % host_pid) if l.startswith("NSpid:")][0])
        p = Proc(popen, host_pid, ns_pid, name)
        self.procs.append(p)
        return p

    # ---- D-Bus ----------------------------------------------------------------------------
    def call(self, dest, path, iface, method, *args, signature=None, timeout=10):
        obj = self.bus.get_object(dest, path, introspect=False)
        return unwrap(obj.get_dbus_method(method, iface)(*args, signature=signature, timeout=timeout))

    def get(self, dest, path, iface, prop):
        return self.call(dest, path, PROPS, "Get", iface, prop)

    def get_all(self, dest, path, iface):
        return self.call(dest, path, PROPS, "GetAll", iface)

    def pump(self, seconds=0.0):
        """Dispatch pending D-Bus messages (signals) for up to seconds."""
        ctx = GLib.MainContext.default()
        end = time.monotonic() + seconds
        while True:
            while ctx.pending():
                ctx.iteration(False)
            if time.monotonic() >= end:
                return
            time.sleep(0.01)

    def wait_for(self, pred, timeout, what="condition", interval=0.02):
        """Poll pred() (pumping D-Bus) until it returns a true value; Fail after timeout."""
        end = time.monotonic() + timeout
        last_exc = None
        while True:
            self.pump()
            try:
                v = pred()
                if v:
                    return v
            except dbus.DBusException as e:
                last_exc = e
            if time.monotonic() >= end:
                raise Fail("timed out after %.1f s waiting for %s%s" %
                           (timeout, what, " (last error: %s)" % last_exc if last_exc else ""))
            time.sleep(interval)

    def wait_signal(self, member, pred=lambda s: True, timeout=5.0, since=0.0):
        """The first signal (time, path, interface, member, args) named member received at or
        after `since` (a time.monotonic() value) that matches pred."""
        def find():
            for s in self.signals:
                if s[0] >= since and s[3] == member and pred(s):
                    return s
            return None
        return self.wait_for(find, timeout, "signal %s" % member)

    def properties_changed(self, path, prop=None, since=0.0):
        """[(time, {prop: value})] of PropertiesChanged on path (optionally naming prop)."""
        self.pump()  # signals queued while the test was blocked elsewhere
        out = []
        for t, p, iface, member, args in self.signals:
            if p == path and member == "PropertiesChanged" and t >= since:
                changed = args[1]
                if prop is None or prop in changed or prop in args[2]:
                    out.append((t, changed))
        return out

    def call_as(self, uid, dest, path, iface, method, signature="", args=()):
        """A method call from a process running as uid (setpriv) on the private bus.
        Values in variant positions are written typed("u", 5). Returns ("ok", result) or
        (error name, message)."""
        code = ("import dbus, json, sys\n"
                "T = dict(u=dbus.UInt32, t=dbus.UInt64, i=dbus.Int32, b=dbus.Boolean, s=dbus.String)\n"
                "def conv(v):\n"
                "    if isinstance(v, list) and len(v) == 2 and str(v[0]).startswith('@'):\n"
                "        return T[v[0][1:]](v[1], variant_level=1)\n"
                "    return [conv(x) for x in v] if isinstance(v, list) else v\n"
                "a = json.loads(sys.argv[1])\n"
                "b = dbus.bus.BusConnection(a['address'])\n"
                "try:\n"
                "    r = b.call_blocking(a['dest'], a['path'], a['iface'], a['method'], a['sig'],\n"
                "                        conv(a['args']))\n"
                "    print(json.dumps(['ok', repr(r)]))\n"
                "except dbus.DBusException as e:\n"
                "    print(json.dumps([e.get_dbus_name(), e.get_dbus_message()]))\n")
        arg = json.dumps(dict(address=self.address, dest=dest, path=path, iface=iface,
                              method=method, sig=signature, args=list(args)))
        r = subprocess.run(["setpriv", "--reuid=%d" % uid, "--regid=%d" % uid, "--clear-groups",
                            "/usr/bin/python3", "-c", code, arg], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise Fail("call_as(%d, %s) failed: %s" % (uid, method, r.stderr.strip()))
        return tuple(json.loads(r.stdout))

    def can_own(self, name):
        """Whether a root connection may own name on the private bus (then releases it)."""
        conn = dbus.bus.BusConnection(self.address)
        try:
            return conn.request_name(name, dbus.bus.NAME_FLAG_DO_NOT_QUEUE) == dbus.bus.REQUEST_NAME_REPLY_PRIMARY_OWNER
        except dbus.DBusException as e:
            log("request_name(%s): %s" % (name, e))
            return False
        finally:
            conn.close()

    # ---- polkitd -----------------------------------------------------------------------------
    def start_polkitd(self, rules):
        """A real polkitd in the namespace with our action and the given rules (JavaScript)
        bind-mounted over its directories (the host's are not touched). Returns its Proc."""
        if not os.access(POLKITD, os.X_OK):
            raise Skip("no polkitd at %s" % POLKITD)
        rdir, actions = self.file("polkit-rules.d"), self.file("polkit-actions")
        os.makedirs(rdir)
        os.makedirs(actions)
        with open(os.path.join(rdir, "50-autoballoon-test.rules"), "w") as f:
            f.write(rules)
        shutil.copy(os.path.join(SRCDIR, "dbus/org.autoballoon1.policy"), actions)
        subprocess.run(["chown", "-R", "polkitd", rdir], check=True)
        os.chmod(rdir, 0o700)
        # polkitd drops to its own user itself; the mounts stay in the namespace's mount namespace
        script = ("mount --bind %s /etc/polkit-1/rules.d && mount --bind %s /usr/share/polkit-1/rules.d && "
                  "mount --bind %s /usr/share/polkit-1/actions && exec %s --no-debug" % (rdir, rdir, actions, POLKITD))
        p = self.spawn(["/bin/sh", "-c", script], name="polkitd", stdout=self.file("polkitd.log"),
                       stderr=self.file("polkitd.log"))
        self.wait_for(lambda: self.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                                        "NameHasOwner", "org.freedesktop.PolicyKit1"), 10, "polkitd on the bus")
        log("polkitd is up")
        return p

    def busctl_as(self, uid, *args, background=False):
        """busctl as uid, inside the namespace; background: the Popen, not waited for."""
        cmd = ["nsenter", "-t", str(self.pid1), "-p", "-m", "-u", "--",
               "setpriv", "--reuid=%d" % uid, "--regid=%d" % uid, "--clear-groups", "busctl", "--no-pager", *args]
        if background:
            return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        log("uid %d: busctl %s -> %d %s%s" % (uid, " ".join(args[:6]), r.returncode, r.stdout.strip(), r.stderr.strip()))
        return r

    # ---- machined -------------------------------------------------------------------------
    def create_machine(self, name, leader_ns_pid, service="autoballoon-test", cls="vm"):
        """CreateMachineWithNetwork as libvirt does: machined starts machine-NAME.scope under
        machine.slice with the leader in it. Returns machined's object path."""
        path = self.call(M1, M1_PATH, M1 + ".Manager", "CreateMachineWithNetwork",
                         name, dbus.Array(uuid.uuid4().bytes, signature="y"), service, cls,
                         dbus.UInt32(leader_ns_pid), "", dbus.Array([], signature="i"),
                         dbus.Array([], signature="(sv)"), signature="sayssusaia(sv)")
        log("machined: created %s (leader ns pid %d) -> %s" % (name, leader_ns_pid, path))
        return path

    def spawn_leaders(self, k):
        """k cheap machine leaders (`sleep infinity`, forked by one helper process in the
        namespace): returns (the helper, their namespace PIDs). Stopping the helper's process
        group with the environment ends them."""
        helper = self.spawn(["/usr/bin/python3", "-c", LEADERS_SCRIPT, str(k)], name="leaders",
                            stdout=subprocess.PIPE, stderr=self.file("leaders.log"))
        return helper, [int(helper.popen.stdout.readline()) for _ in range(k)]

    def create_machines(self, machines, service="autoballoon-test", in_flight=16):
        """CreateMachineWithNetwork (class vm, as libvirt calls it) for each (name, leader ns
        pid), in_flight calls at a time: hundreds of machines in seconds."""
        import uuid
        mgr = self.bus.get_object(M1, M1_PATH, introspect=False)
        create = mgr.get_dbus_method("CreateMachineWithNetwork", M1 + ".Manager")
        todo = list(machines)
        state = {"pending": 0, "errors": []}

        def done(*_):
            state["pending"] -= 1

        def fail(e):
            state["pending"] -= 1
            state["errors"].append(str(e))
        while todo or state["pending"]:
            while todo and state["pending"] < in_flight:
                name, pid = todo.pop(0)
                state["pending"] += 1
                create(name, dbus.Array(uuid.uuid4().bytes, signature="y"), service, "vm",
                       dbus.UInt32(pid), "", dbus.Array([], signature="i"), dbus.Array([], signature="(sv)"),
                       signature="sayssusaia(sv)", reply_handler=done, error_handler=fail, timeout=60)
            self.pump(0.001)
        if state["errors"]:
            raise Fail("CreateMachine failed %d times: %s" % (len(state["errors"]), state["errors"][:3]))

    def terminate_machine(self, name):
        self.call(M1, M1_PATH, M1 + ".Manager", "TerminateMachine", name)
        log("machined: terminated %s" % name)

    def list_machines(self):
        return self.call(M1, M1_PATH, M1 + ".Manager", "ListMachines")

    def control_group(self, unit):
        """systemd1's ControlGroup of a unit (absolute in the host's cgroup2 tree)."""
        upath = self.call(S1, "/org/freedesktop/systemd1", S1 + ".Manager", "GetUnit", unit)
        iface = S1 + (".Scope" if unit.endswith(".scope") else ".Slice" if unit.endswith(".slice") else ".Service")
        return self.get(S1, upath, iface, "ControlGroup")

    def cgroup_dir(self, control_group):
        """Host directory of a ControlGroup path."""
        return self.cgroup2 + control_group

    # ---- fake VMs ---------------------------------------------------------------------------
    def fake_qmp_cmd(self, name, qmp_socket, record_log, memory="512M", extra=()):
        fake = os.path.join(BUILDDIR, "tests/fake-qmp/fake-qmp")
        if not os.access(fake, os.X_OK):
            raise Skip("no fake QMP device at %s" % fake)
        return [fake, "-qmp", "unix:%s,server=on,wait=off" % qmp_socket, "-m", memory,
                "-name", name, "--record", record_log, *extra]

    def start_vm(self, name, memory="512M", extra=(), leader_cmd=None):
        """A fake VM registered with machined: the fake QMP device is the leader (so its
        /proc/PID/cmdline carries -qmp unix:PATH), unless leader_cmd is given."""
        sock, rec = self.file("%s.qmp" % name), self.file("%s.qmp-record.log" % name)
        cmd = leader_cmd or self.fake_qmp_cmd(name, sock, rec, memory, extra)
        proc = self.spawn(cmd, name="vm-" + name, stderr=self.file("%s.leader.log" % name))
        if leader_cmd is None:
            self.wait_for(lambda: os.path.exists(sock), 5, "QMP socket %s" % sock)
        path = self.create_machine(name, proc.ns_pid)
        return VM(name, proc, sock, rec, path)

    # ---- the daemon under test --------------------------------------------------------------
    def write_config(self, host_pressure=None, extra="", host_memory=""):
        """The daemon's config in the state dir. Host pressure defaults to this instance's
        machine.slice, so parallel runs and other tests' stalls don't count. No host memory
        budget unless host_memory names a source (a memcg as the namespace sees it): the
        machine's own /proc/meminfo is not the "host" a test squeezes."""
        os.makedirs(self.file("machines.d"), exist_ok=True)
        hp = host_pressure or "/sys/fs/cgroup/%s/machine.slice/memory.pressure" % self.name
        text = ("[Manager]\nHostPressureSource=%s\nHostMemorySource=%s\nMachinesDirectory=%s\n"
                "RuntimeMachinesDirectory=%s\nStatsIntervalSec=2\nDeflateOnExit=yes\n\n"
                "[Pressure]\nLow=some 100ms 2s\nMedium=some 200ms 2s\nCritical=full 200ms 2s\n%s"
                % (hp, host_memory, self.file("machines.d"), self.file("machines.run.d"), extra))
        path = self.file("autoballoond.conf")
        with open(path, "w") as f:
            f.write(text)
        return path

    def machine_dropin(self, name, text):
        """A per-machine drop-in (MachinesDirectory/NAME.conf), e.g. "[Machine]\nQMPSocket=..."."""
        os.makedirs(self.file("machines.d"), exist_ok=True)
        with open(self.file("machines.d/%s.conf" % name), "w") as f:
            f.write(text)

    def start_daemon(self, config=None, wait=True, timeout=5.0, args=("--log-level=debug",), prefix=()):
        """autoballoond --config=FILE inside the namespace (stderr to autoballoond.log), with
        the default system bus address as on a real host. Waits until it owns its name.
        prefix: a command that execs the daemon (its arguments follow), e.g. unshare."""
        exe = os.path.join(BUILDDIR, "controller/autoballoond")
        if not os.access(exe, os.X_OK):
            raise Skip("no daemon at %s" % exe)
        config = config or self.write_config()
        env = {k: v for k, v in os.environ.items() if k != "DBUS_SYSTEM_BUS_ADDRESS"}
        self.daemon_log = self.file("autoballoond.log")
        self.daemon = self.spawn([*prefix, exe, "--config=" + config, *args], name="autoballoond",
                                 stdout=self.daemon_log, stderr=self.daemon_log, env=env)
        if wait:
            self.wait_for(lambda: self.daemon_check() and self.call(
                "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                "NameHasOwner", AB), timeout, "%s on the bus" % AB)
        log("daemon up (host pid %d, ns pid %d)" % (self.daemon.host_pid, self.daemon.ns_pid))
        return self.daemon

    def daemon_check(self):
        """Fail at once if the daemon died."""
        if self.daemon and not self.daemon.alive():
            raise Fail("autoballoond exited with %s; log:\n%s" %
                       (self.daemon.popen.returncode, self.daemon_log_text()[-3000:]))
        return True

    def daemon_log_text(self):
        try:
            return open(self.daemon_log, errors="replace").read()
        except (AttributeError, FileNotFoundError):
            return ""

    def stop_daemon(self, timeout=10.0):
        """SIGTERM the daemon; returns its exit code (negative: killed by that signal)."""
        d, self.daemon = self.daemon, None
        rc = d.stop(signal.SIGTERM, timeout)
        log("daemon stopped, exit code %s" % rc)
        return rc

    def fake_control(self, control_socket, command, timeout=5.0):
        """One line to a fake QMP device's --fake-control socket; returns its answer line."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.settimeout(timeout)
            c.connect(control_socket)
            c.sendall(command.encode() + b"\n")
            answer = b""
            while not answer.endswith(b"\n"):
                chunk = c.recv(4096)
                if not chunk:
                    break
                answer += chunk
        return answer.decode().strip()

    def bad_qmp(self, socket_path, mode="garbage"):
        """A misbehaving QMP peer (bad-qmp.py) on socket_path, in the namespace."""
        p = self.spawn(["/usr/bin/python3", os.path.join(LIB, "bad-qmp.py"), socket_path, mode],
                       name="bad-qmp", stderr=self.file("bad-qmp.log"))
        self.wait_for(lambda: os.path.exists(socket_path), 5, "bad QMP socket")
        return p

    # ---- the daemon's API ---------------------------------------------------------------------
    def machine_path(self, name):
        return AB_PATH + "/machine/" + path_encode(name)

    def ab_call(self, method, *args, path=AB_PATH, iface=AB_MANAGER, **kw):
        return self.call(AB, path, iface, method, *args, **kw)

    def ab_get(self, path, prop, iface=AB_MACHINE):
        return self.get(AB, path, iface, prop)

    def ab_machines(self):
        """{name: (state, path)} from ListMachines."""
        return {n: (s, p) for n, s, p in self.ab_call("ListMachines")}

    def wait_property(self, path, prop, want, timeout=5.0, iface=AB_MACHINE):
        """Wait until prop equals want (or want(value) is true, if callable); returns value."""
        test = want if callable(want) else (lambda v: v == want)
        seen = []

        def ok():
            self.daemon_check()
            v = self.ab_get(path, prop, iface)
            seen[:] = [v]
            return (v,) if test(v) else None
        try:
            return self.wait_for(ok, timeout, "%s %s" % (path, prop))[0]
        except Fail as e:
            raise Fail("%s; last value %r" % (e, seen[0] if seen else None))

    # ---- pressure ----------------------------------------------------------------------------
    def stall(self, control_group, seconds=8.0, mode="write", limit="64M"):
        """Start a real memory stall in a cgroup2 directory (runs in the namespace)."""
        s = _stall.Stall(control_group, seconds, mode, limit, nsenter=self.pid1,
                         memcg_parent=self.vars["AB_ENV_MEMCG"], scratch=self.state)
        self.stalls.append(s)
        return s.start()

    def psi_trigger(self, control_group, trigger="some 150000 2000000"):
        t = PsiTrigger(self.cgroup_dir(control_group) + "/memory.pressure", trigger)
        self.triggers.append(t)
        return t


_current = None


def _on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def _atexit():
    if _current is not None:
        _current.stop()


def main(test, name):
    """Run test(env) in a fresh Env named abt-NAME; exit 0 (pass), 1 (fail) or 77 (skip).
    The Env is stopped on every path: return, exception, SIGTERM/SIGINT, interpreter exit."""
    global _current
    if os.geteuid() != 0:
        print("SKIP: needs root")
        sys.exit(SKIP)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    atexit.register(_atexit)
    rc = 0
    try:
        # AB_ENV_PREFIX: a second checkout's tests can run beside a "make check"
        with Env(os.environ.get("AB_ENV_PREFIX", "abt-") + name) as env:
            _current = env
            test(env)
        print("PASS: %s" % name)
    except Skip as e:
        print("SKIP: %s" % e)
        rc = SKIP
    except Fail as e:
        print("FAIL: %s" % e)
        rc = 1
    except Exception:
        traceback.print_exc()
        print("FAIL: %s: unexpected exception" % name)
        rc = 1
    finally:
        _current = None
    sys.exit(rc)
