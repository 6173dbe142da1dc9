"""Host-side helpers for the autoballoon test guests (stdlib only): the ttyS1 command
channel, a minimal QMP client, and the guest's readiness marker. Used by guest-cmd,
qmp-cmd and tests/guest/."""
import json
import os
import socket
import time
import uuid

MIB = 1 << 20
READY_MARKER = b'AUTOBALLOON-READY'


class GuestError(Exception):
    pass


def run(rundir, command, timeout=120.0):
    """Runs COMMAND in the guest via RUNDIR/cmd.sock. Returns (rc, output). rc is the
    command's exit status; raises GuestError on timeout or if the channel closes."""
    if '\n' in command:
        raise GuestError('guest commands are one line')
    tag = uuid.uuid4().hex[:12]
    start, done = b'@@AB-START ' + tag.encode() + b'\n', b'@@AB-DONE ' + tag.encode() + b' rc='
    deadline = time.monotonic() + timeout
    s = socket.socket(socket.AF_UNIX)
    try:
        s.settimeout(min(timeout, 10))
        s.connect(os.path.join(rundir, 'cmd.sock'))
        s.sendall(tag.encode() + b' ' + command.encode() + b'\n')
        buf = b''
        while True:
            i = buf.find(done)
            if i >= 0 and b'\n' in buf[i + len(done):]:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise GuestError(f'timeout after {timeout:.0f}s: {command}')
            s.settimeout(left)
            try:
                d = s.recv(65536)
            except socket.timeout:
                continue
            if not d:
                raise GuestError(f'command channel closed (QEMU gone?): {command}')
            buf += d
    finally:
        s.close()
    # Output of an earlier, timed-out command may precede ours: keep only our own.
    j = buf.find(start)
    out = buf[j + len(start):i] if j >= 0 else buf[:i]
    rc = int(buf[i + len(done):].split(b'\n', 1)[0])
    return rc, out.decode(errors='replace').replace('\r\n', '\n')


def wait_ready(rundir, timeout=120.0):
    """Waits for the guest's AUTOBALLOON-READY marker on the console; False if QEMU
    exited or the timeout passed."""
    deadline = time.monotonic() + timeout
    log, pidfile = os.path.join(rundir, 'console.log'), os.path.join(rundir, 'qemu.pid')
    while time.monotonic() < deadline:
        try:
            with open(log, 'rb') as f:
                if READY_MARKER in f.read():
                    return True
        except FileNotFoundError:
            pass
        try:
            pid = int(open(pidfile).read())
            if not qemu_alive(pid):
                return False
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.1)
    return False


def qemu_alive(pid):
    """True while PID is a running (not zombie) QEMU."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    return 'qemu' in stat.split(')')[0] and stat.rsplit(')', 1)[1].split()[0] != 'Z'


class QMP:
    """One QMP connection; events received while waiting for replies are kept in
    self.events."""

    def __init__(self, path, timeout=30.0):
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b''
        self.events = []
        self.greeting = self._read()
        self.cmd('qmp_capabilities')

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def _read(self):
        while b'\n' not in self.buf:
            d = self.sock.recv(65536)
            if not d:
                raise GuestError('QMP connection closed')
            self.buf += d
        line, self.buf = self.buf.split(b'\n', 1)
        return json.loads(line)

    def cmd(self, execute, **arguments):
        msg = {'execute': execute}
        if arguments:
            msg['arguments'] = arguments
        self.sock.sendall(json.dumps(msg).encode() + b'\n')
        while True:
            r = self._read()
            if 'event' in r:
                self.events.append(r)
            elif 'error' in r:
                raise GuestError(f'{execute}: {r["error"].get("desc", r["error"])}')
            elif 'return' in r:
                return r['return']

    def actual_mib(self):
        return self.cmd('query-balloon')['actual'] / MIB

    def stats_polling(self, seconds, device='/machine/peripheral/balloon0'):
        """Asks the guest driver for its memory statistics every `seconds` (0: stop)."""
        self.cmd('qom-set', path=device, property='guest-stats-polling-interval', value=seconds)

    def guest_stats(self, device='/machine/peripheral/balloon0'):
        """The balloon's last guest statistics: {'stat-free-memory': bytes, ...}; a value
        the guest has not reported (yet) is -1. 'last-update' is 0 before the first."""
        r = self.cmd('qom-get', path=device, property='guest-stats')
        return dict(r.get('stats', {}), **{'last-update': r.get('last-update', 0)})

    def balloon_to(self, target_mib, timeout=120.0, tolerance_mib=2):
        """Sets the balloon target and waits until 'actual' is within tolerance.
        Returns the seconds it took; raises GuestError on timeout."""
        t0 = time.monotonic()
        self.cmd('balloon', value=int(target_mib * MIB))
        while time.monotonic() - t0 < timeout:
            if abs(self.actual_mib() - target_mib) <= tolerance_mib:
                return time.monotonic() - t0
            time.sleep(0.1)
        raise GuestError(f'balloon did not reach {target_mib} MiB '
                         f'(actual {self.actual_mib():.0f} MiB)')
