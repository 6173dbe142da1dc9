"""Real guests as libvirt domains, for the overcommit benchmark's libvirt variant: a real
libvirtd (and virtlogd) run as units of the test environment's systemd, and the test guest
booted as a transient TCG domain by direct kernel boot, which libvirt registers with machined
itself (the daemon then drives it through its libvirt backend). Each domain is the QEMU of
guest/run-guest.sh in libvirt's words: the same kernel, initramfs and kernel command line,
1 vCPU, a 64 MiB TCG translation cache, the console on ttyS0 to RUNDIR/console.log, the
command channel on ttyS1 at RUNDIR/cmd.sock (so realguest.Guest.run() and the guest commands
are the same), a 2 GiB scratch disk reading zeroes, and a virtio balloon with a stats period."""
import os
import shutil
import time
import uuid

import realguest
from abtest import Fail, log

# as Debian's units; virtlogd holds the domains' logs (and the serial files) for libvirtd
UNITS = {
    "ab-virtlogd.service": """[Unit]
DefaultDependencies=no
[Service]
ExecStartPre=/bin/mkdir -p /run/libvirt
ExecStart=/usr/sbin/virtlogd
""",
    # A restart leaves the QEMUs alone (they live in their machine scopes anyway). libvirtd
    # runs without the host's v1 memory hierarchy, which the env binds at /run/ab-env-memcg
    # for the daemon: seeing it there, libvirt would make a memory cgroup of its own for each
    # domain at that hierarchy's root (the machine scope's path, outside every limit and
    # never removed) and move the QEMU into it. Without it, libvirt sees pure cgroup2, as
    # on a host without v1, and a QEMU keeps the v1 memcg it was forked in.
    "ab-libvirtd.service": """[Unit]
DefaultDependencies=no
Requires=ab-virtlogd.service
After=ab-virtlogd.service dbus.service systemd-machined.service
[Service]
Type=notify
KillMode=process
PrivateMounts=yes
ExecStartPre=/bin/mkdir -p /run/libvirt
Environment=LIBVIRT_LOG_OUTPUTS=3:file:/run/libvirt/ab-libvirtd.log
ExecStart=/bin/sh -c '! mountpoint -q /run/ab-env-memcg || umount -n /run/ab-env-memcg; exec /usr/sbin/libvirtd'
TimeoutStartSec=60
""",
}
SCRATCH_BYTES = 2 << 30   # run-guest.sh --disk-size 2G


def domain_xml(name, dom_uuid, mem_mib, imgdir, rundir, balloon="stock", deflate_on_oom="off",
               free_page_reporting="off", memballoon=None, as_run_guest=True):
    """The domain of one guest. The scratch disk is a sparse file opened with O_DIRECT
    (cache='none'): reads of its holes are zeroes and leave no page cache on the host, as
    run-guest.sh's null-co block device, without a <qemu:commandline> (which would taint the
    domain). No USB controller, no video: run-guest.sh has neither (-nodefaults).

    as_run_guest=False leaves out what only the benchmark needs (ACPI and the TCG cache size,
    the scratch disk, the USB controller left out): the plain domain the libvirt e2e test
    defines. memballoon: the whole <memballoon> element, instead of a virtio one with
    deflate_on_oom and free_page_reporting."""
    if memballoon is None:
        memballoon = """<memballoon model='virtio' autodeflate='%s' freePageReporting='%s'>
      <stats period='2'/>
    </memballoon>""" % (deflate_on_oom, free_page_reporting)
    features = """
  <features><acpi/><tcg><tb-cache unit='MiB'>64</tb-cache></tcg></features>""" if as_run_guest else ""
    disk = """
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='none'/>
      <source file='%s/scratch.img'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <controller type='usb' model='none'/>""" % rundir if as_run_guest else ""
    return """<domain type='qemu'>
  <name>%(name)s</name>
  <uuid>%(uuid)s</uuid>
  <memory unit='MiB'>%(mem)d</memory>
  <currentMemory unit='MiB'>%(mem)d</currentMemory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>%(img)s/vmlinuz</kernel>
    <initrd>%(img)s/initramfs.cpio.gz</initrd>
    <cmdline>console=ttyS0 panic=-1 quiet loglevel=4 autoballoon.balloon=%(balloon)s</cmdline>
  </os>%(features)s
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>%(disk)s
    <serial type='file'><source path='%(run)s/console.log'/><target port='0'/></serial>
    <serial type='unix'><source mode='bind' path='%(run)s/cmd.sock'/><target port='1'/></serial>
    <video><model type='none'/></video>
    %(memballoon)s
  </devices>
</domain>
""" % dict(name=name, uuid=dom_uuid, mem=mem_mib, img=imgdir, run=rundir, balloon=balloon,
           features=features, disk=disk, memballoon=memballoon)


def _v1_memory_mount():
    for line in open("/proc/self/mountinfo"):
        f = line.split()
        sep = f.index("-")
        if f[sep + 1] == "cgroup" and "memory" in f[sep + 3].split(","):
            return f[4]
    raise Fail("no v1 memory cgroup mount")


def _v1_memcg_of(pid):
    for line in open("/proc/%d/cgroup" % pid):
        _, controllers, path = line.rstrip("\n").split(":", 2)
        if "memory" in controllers.split(","):
            return _v1_memory_mount() + path
    raise Fail("process %d has no v1 memory cgroup" % pid)


def _write(path, value):
    with open(path, "w") as f:
        f.write(str(value))


class DomainProc:
    """A domain's QEMU seen from the host: alive while its PID still runs that domain's QEMU
    (libvirt forked it; the namespace's PID 1 reaps it)."""

    def __init__(self, host_pid, domain):
        self.host_pid, self.domain = host_pid, domain

    def alive(self):
        try:
            with open("/proc/%d/stat" % self.host_pid) as f:
                if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return False
            return ("guest=%s," % self.domain).encode() in open("/proc/%d/cmdline" % self.host_pid, "rb").read()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return False


class Libvirt:
    """libvirtd in the environment and the domains started through it; close() destroys them
    (transient domains: nothing stays defined on the host)."""

    def __init__(self, env, outdir):
        for exe in ("/usr/sbin/libvirtd", "/usr/sbin/virtlogd", "/usr/bin/virsh"):
            if not os.access(exe, os.X_OK):
                raise Fail("%s missing: install libvirt-daemon-system (scripts/install-deps.sh)" % exe)
        # libvirt 9.0 finds a domain's cgroup by cutting its path at the last "/libvirt": in an
        # environment named libvirt* it would leave machined's scope for a cgroup of its own
        if env.name.startswith("libvirt"):
            raise Fail("the environment's name %s starts with 'libvirt': set AB_ENV_PREFIX to something else"
                       % env.name)
        self.env, self.domains = env, []
        # libvirt runs QEMU as libvirt-qemu: it must read the images and make its sockets
        self.imgdir = env.file("lv-images")
        os.makedirs(self.imgdir)
        for f in ("vmlinuz", "initramfs.cpio.gz"):
            shutil.copy(os.path.join(outdir, f), self.imgdir)
            os.chmod(os.path.join(self.imgdir, f), 0o644)
        for d in (env.state, self.imgdir):
            os.chmod(d, 0o755)
        os.makedirs(env.file("units"), exist_ok=True)
        for name, text in UNITS.items():
            with open(env.file("units/" + name), "w") as f:
                f.write(text)
        self.ns("systemctl", "daemon-reload")
        t = time.monotonic()
        self.ns("systemctl", "start", "ab-libvirtd.service")
        log("libvirtd up in %.1f s: %s" % (time.monotonic() - t, self.virsh("version").strip().replace("\n", "; ")))

    def ns(self, *cmd, check_rc=True):
        r = self.env._sh("exec", *cmd)
        if check_rc and r.returncode != 0:
            raise Fail("%s failed (%d): %s%s" % (" ".join(cmd), r.returncode, r.stdout, r.stderr))
        return r.stdout

    def virsh(self, *args, check_rc=True):
        return self.ns("virsh", "-c", "qemu:///system", *args, check_rc=check_rc)

    def libvirtd_pids(self):
        """libvirtd's host PIDs (the processes of its service's cgroup)."""
        cg = self.env.cgroup_dir(self.env.control_group("ab-libvirtd.service"))
        return [int(p) for p in open(os.path.join(cg, "cgroup.procs")).read().split()]

    def start_guest(self, name, mem_mib, memcg, timeout=120, **opts):
        """Starts domain ENV-NAME with its QEMU in the v1 memcg `memcg`, waits for the guest's
        init; returns a realguest.Guest whose `machine` is machined's name for it.

        Where the QEMU's memory is charged: libvirt (through machined) places the domain in a
        machine scope of the environment's cgroup2 tree; the host memcg is a v1 memory cgroup,
        a hierarchy libvirtd here does not see (UNITS), so libvirt leaves a QEMU's v1
        membership as it was at fork. A v1 memcg is inherited at fork, and a page stays
        charged to the memcg it was first charged to (this kernel no longer moves charges
        with a process, move_charge_at_immigrate), so moving the QEMU's PID once it runs would
        leave its start-up memory outside. Instead libvirtd itself joins the host memcg while
        it forks this domain's QEMU (virsh create returns once QEMU runs) and goes back right
        after: the QEMU is charged there from its first page, as run-guest.sh's in the other
        variants; libvirtd's own few pages of that moment stay charged there, the price of
        libvirtd living outside the "host" as autoballoond does."""
        env = self.env
        domain = "%s-%s" % (env.name, name)
        rundir = env.file("guest-" + name)
        os.makedirs(rundir, exist_ok=True)
        os.chmod(rundir, 0o777)
        with open(os.path.join(rundir, "scratch.img"), "wb") as f:
            f.truncate(SCRATCH_BYTES)
        xml = env.file("%s.xml" % domain)
        with open(xml, "w") as f:
            f.write(domain_xml(domain, str(uuid.uuid4()), mem_mib, self.imgdir, rundir, **opts))
        self.virsh("destroy", domain, check_rc=False)   # a leftover of a killed run
        pids = self.libvirtd_pids()
        home = {p: _v1_memcg_of(p) for p in pids}
        t = time.monotonic()
        try:
            for p in pids:
                _write(os.path.join(memcg.dir, "cgroup.procs"), p)
            self.domains.append(domain)
            self.virsh("create", xml)
        finally:
            for p, d in home.items():
                try:
                    _write(os.path.join(d, "cgroup.procs"), p)
                except (ProcessLookupError, OSError) as e:
                    log("libvirtd %d back to %s: %s" % (p, d, e))
        tag = ("guest=%s," % domain).encode()
        qemu = [int(p) for p in open(os.path.join(memcg.dir, "cgroup.procs")).read().split()
                if tag in open("/proc/%s/cmdline" % p, "rb").read()]
        if len(qemu) != 1:
            raise Fail("domain %s: %d QEMUs in the host memcg %s" % (domain, len(qemu), memcg.dir))
        proc = DomainProc(qemu[0], domain)

        def machine():
            for m in env.list_machines():
                if m[0].endswith("-" + domain):
                    return m[0]
            return None
        machine_name = env.wait_for(machine, 10, "machined to list %s" % domain)
        console = os.path.join(rundir, "console.log")

        def ready():
            if not proc.alive():
                raise Fail("domain %s died while booting; console:\n%s" % (
                    domain, open(console, errors="replace").read()[-3000:] if os.path.exists(console) else ""))
            return os.path.exists(console) and realguest.guestlib.READY_MARKER in open(console, "rb").read()
        env.wait_for(ready, timeout, "guest %s to boot" % domain, interval=0.1)
        log("domain %s (machine %s) booted in %.1f s (QEMU host pid %d, RSS %d MiB, v1 memcg %s)" % (
            domain, machine_name, time.monotonic() - t, proc.host_pid,
            realguest.rss_bytes(proc.host_pid) // realguest.MIB, _v1_memcg_of(proc.host_pid)))
        g = realguest.Guest(env, name, proc, rundir)
        g.machine = machine_name
        g.domain = domain
        return g

    def balloon_actual(self):
        """{domain: balloon size in bytes} of every running domain, in one virsh call."""
        out, dom = {}, None
        for line in self.virsh("domstats", "--balloon", "--list-active", check_rc=False).splitlines():
            line = line.strip()
            if line.startswith("Domain:"):
                dom = line.split("'")[1]
            elif line.startswith("balloon.current=") and dom:
                out[dom] = int(line.split("=")[1]) * 1024
        return out

    def close(self):
        for d in self.domains:
            self.virsh("destroy", d, check_rc=False)
        self.domains = []
