#!/usr/bin/python3
"""A libvirt domain managed out of the box: a real libvirtd (and virtlogd) run as units of the
test environment's systemd, a TCG domain booting the test guest by direct kernel boot, which
libvirt registers with machined itself. The daemon drives its balloon through libvirt's API
(backend libvirt), with no change to the domain's XML:

- `virsh start` -> managed, backend libvirt, within 2 s; guest statistics arrive through
  virDomainMemoryStats;
- libvirtd restarted -> the machine stays, says why in StateReason, managed again;
- a real stall under machine.slice -> the balloon inflates (virsh dommemstat's actual falls),
  the move logged with its reason;
- the persistent XML is unchanged, no <qemu:commandline>, no taint in the domain's log;
- `virsh destroy` -> the machine is gone."""
import os
import shutil
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../lib"))
import abtest  # noqa: E402
import realguest  # noqa: E402
import lvguest  # noqa: E402  the domain's XML
from lvguest import UNITS  # noqa: E402  libvirtd and virtlogd as units of the env
from abtest import Fail, Skip, check, log  # noqa: E402

MIB = realguest.MIB
DOMAIN = "abt-lv-e2e"
DOMAIN_NONE = "abt-lv-e2e-none"   # <memballoon model='none'/>
MEMORY_MIB = 512
STALL_SECONDS = 20
DOMAIN_LOG = "/var/log/libvirt/qemu/%s.log" % DOMAIN


def domain_xml(dom_uuid, outdir, rundir, name=DOMAIN,
               memballoon="<memballoon model='virtio'><stats period='2'/></memballoon>"):
    return lvguest.domain_xml(name, dom_uuid, MEMORY_MIB, outdir, rundir, balloon="patched",
                              memballoon=memballoon, as_run_guest=False)


def test(env):
    for exe in ("/usr/sbin/libvirtd", "/usr/sbin/virtlogd", "/usr/bin/virsh"):
        if not os.access(exe, os.X_OK):
            raise Skip("%s missing: install libvirt-daemon-system (scripts/install-deps.sh)" % exe)

    def ns(*cmd, check_rc=True, timeout=60):
        r = env._sh("exec", *cmd)
        if check_rc and r.returncode != 0:
            raise Fail("%s failed (%d): %s%s" % (" ".join(cmd), r.returncode, r.stdout, r.stderr))
        return r.stdout

    def virsh(*args, check_rc=True):
        return ns("virsh", "-c", "qemu:///system", *args, check_rc=check_rc)

    def actual_kib():
        for line in virsh("dommemstat", DOMAIN).splitlines():
            k, _, v = line.partition(" ")
            if k == "actual":
                return int(v)
        raise Fail("virsh dommemstat has no actual")

    # libvirt 9.0 finds a domain's cgroup by cutting its path at the last "/libvirt" (its own
    # nested cgroup): an environment named libvirt* would cut it at the root, and libvirt
    # would leave machined's scope for a /machine cgroup of its own (machined then drops the
    # machine at once)
    if env.name.startswith("libvirt"):
        raise Fail("the environment's name %s starts with 'libvirt': set AB_ENV_PREFIX to something else" % env.name)

    outdir = realguest.images()
    # libvirt runs QEMU as libvirt-qemu: it must read the images and create its sockets here
    imgdir = env.file("lv-images")
    os.makedirs(imgdir)
    for f in ("vmlinuz", "initramfs.cpio.gz"):
        shutil.copy(os.path.join(outdir, f), imgdir)
    rundir, rundir_none = env.file("lv-run"), env.file("lv-run-none")
    for d in (rundir, rundir_none):
        os.makedirs(d)
        os.chmod(d, 0o777)
    for d in (env.state, imgdir):
        os.chmod(d, 0o755)
    for f in os.listdir(imgdir):
        os.chmod(os.path.join(imgdir, f), 0o644)

    for name, text in UNITS.items():
        with open(env.file("units/" + name), "w") as f:
            f.write(text)
    ns("systemctl", "daemon-reload")
    t = time.monotonic()
    ns("systemctl", "start", "ab-libvirtd.service", timeout=90)
    log("libvirtd up in %.1f s: %s" % (time.monotonic() - t, virsh("version").strip().replace("\n", "; ")))

    # a leftover of a killed run (libvirt keeps definitions on the host's disk)
    for d in (DOMAIN, DOMAIN_NONE):
        virsh("destroy", d, check_rc=False)
        virsh("undefine", d, check_rc=False)
    for d, run_d, balloon in ((DOMAIN, rundir, None), (DOMAIN_NONE, rundir_none, "<memballoon model='none'/>")):
        xml_path = env.file(d + ".xml")
        with open(xml_path, "w") as f:
            f.write(domain_xml(str(uuid.uuid4()), imgdir, run_d, d, *([balloon] if balloon else [])))
        virsh("define", xml_path)
    try:
        run(env, virsh, actual_kib, rundir)
    finally:
        for d in (DOMAIN, DOMAIN_NONE):
            virsh("destroy", d, check_rc=False)
            virsh("undefine", d, check_rc=False)


def libvirt_machine(env, domain=DOMAIN):
    for name, (state, path) in env.ab_machines().items():
        if name.endswith("-" + domain):
            return name, path
    return None


def run(env, virsh, actual_kib, rundir):
    config = env.write_config(host_pressure="machine.slice")
    env.start_daemon(config=config)
    inactive_xml = virsh("dumpxml", "--inactive", DOMAIN)
    log_offset = os.path.getsize(DOMAIN_LOG) if os.path.exists(DOMAIN_LOG) else 0

    # 1. virsh start -> managed through libvirt
    t0 = time.monotonic()
    virsh("start", DOMAIN)
    t_started = time.monotonic()
    log("virsh start returned after %.2f s" % (t_started - t0))
    name, path = env.wait_for(lambda: libvirt_machine(env), 5, "the domain in ListMachines")
    env.wait_property(path, "State", "managed", timeout=10)
    t_managed = time.monotonic()
    backend = env.ab_get(path, "Backend")
    # virsh start returns once libvirt has started QEMU and resumed it; the daemon attaches
    # on libvirt's STARTED event, which comes at that moment
    log("%s managed %.2f s after virsh start returned (%.2f s after it began), backend %s" % (
        name, t_managed - t_started, t_managed - t0, backend))
    check(backend == "libvirt", "Backend is %r, expected libvirt" % backend)
    check(t_managed - t_started <= 2.0, "managed only %.2f s after virsh start (goal: 2 s)" % (t_managed - t_started))
    check(env.ab_get(path, "MemorySize") == MEMORY_MIB * MIB, "MemorySize %d" % env.ab_get(path, "MemorySize"))
    ctl = os.path.join(abtest.BUILDDIR, "controller/autoballoonctl")
    status = subprocess.run([ctl, "--no-pager", "status"], capture_output=True, text=True).stdout
    log("autoballoonctl status:\n" + status)
    line = [l for l in status.splitlines() if l.startswith(name)]
    check(line and "managed" in line[0] and line[0].split()[-1] == "libvirt",
          "autoballoonctl status does not show %s managed with backend libvirt" % name)

    # the guest's driver reports statistics through virDomainMemoryStats
    console = os.path.join(rundir, "console.log")
    env.wait_for(lambda: os.path.exists(console) and
                 realguest.guestlib.READY_MARKER in open(console, "rb").read(), 120, "the guest to boot")
    log("guest booted")

    # 2. libvirtd restarts: the machine stays, says why, and is managed again
    since = time.monotonic()
    t = time.monotonic()
    env._sh("exec", "systemctl", "restart", "ab-libvirtd.service")
    env.pump(0.5)
    env.wait_property(path, "State", "managed", timeout=40)
    reasons = [c.get("StateReason") for c in
               (s[4][1] for s in env.signals if s[0] >= since and s[1] == path and s[3] == "PropertiesChanged")
               if c.get("StateReason")]
    log("managed again %.1f s after systemctl restart; StateReason meanwhile: %s" % (time.monotonic() - t, reasons))
    check(any("libvirt" in r and "reconnecting" in r for r in reasons),
          "no StateReason said the libvirt connection was being re-established: %r" % reasons)
    check(libvirt_machine(env) == (name, path), "the machine was dropped across the libvirtd restart")

    # 3. a real stall under machine.slice (a host workload in a scope of its own) inflates it
    actual0 = actual_kib()
    hog = env.start_vm("hog", leader_cmd=["sleep", "600"])
    hog_cg = env.wait_for(lambda: env.ab_get(env.machine_path("hog"), "ControlGroup"), 2, "hog's scope")
    t = time.monotonic()
    stall = env.stall(hog_cg, seconds=STALL_SECONDS)
    env.wait_for(lambda: actual_kib() <= actual0 - 16 * 1024, STALL_SECONDS + 10,
                 "virsh dommemstat actual to fall by 16 MiB under host pressure", interval=0.5)
    log("actual %d -> %d KiB %.1f s into the stall" % (actual0, actual_kib(), time.monotonic() - t))
    # libvirt's BALLOON_CHANGE reaches the machine's ActualMemory
    env.wait_for(lambda: abs(env.ab_get(path, "ActualMemory") - actual_kib() * 1024) <= 4 * MIB, 5,
                 "ActualMemory to follow virsh dommemstat's actual", interval=0.2)
    # the policy squeezes no guest blindly: it read the guest's statistics through libvirt first
    avail = env.ab_get(path, "GuestAvailableMemory")
    log("GuestAvailableMemory %d MiB" % (avail // MIB))
    check(avail < MEMORY_MIB * MIB, "no guest statistics through libvirt (GuestAvailableMemory %d)" % avail)
    r = stall.wait()
    log("stall:", r)
    text = env.daemon_log_text()
    moves = [l for l in text.splitlines() if "balloon target" in l and name in l]
    log("moves:\n" + "\n".join(moves[-5:]))
    check(any("reason=host-pressure" in l for l in moves), "no move of %s logged with reason host-pressure" % name)
    check(env.ab_get(path, "LastMove")[1] == "host-pressure", "LastMove %r" % (env.ab_get(path, "LastMove"),))
    hog.proc.stop()

    # 4. the domain is as the administrator wrote it
    check(virsh("dumpxml", "--inactive", DOMAIN) == inactive_xml, "the persistent domain XML changed")
    live = virsh("dumpxml", DOMAIN)
    check("qemu:commandline" not in live, "a <qemu:commandline> in the live XML")
    dominfo = virsh("dominfo", DOMAIN)
    domlog = open(DOMAIN_LOG, errors="replace").read()[log_offset:] if os.path.exists(DOMAIN_LOG) else ""
    check("taint" not in dominfo.lower() and "taint" not in domlog.lower(),
          "the domain is tainted: %s" % [l for l in domlog.splitlines() if "taint" in l.lower()])
    log("XML unchanged, not tainted (domain log: %d bytes read)" % len(domlog))

    # 5. virsh destroy: the machine goes
    t = time.monotonic()
    virsh("destroy", DOMAIN)
    env.wait_for(lambda: libvirt_machine(env) is None, 10, "the machine to go after virsh destroy")
    log("machine removed %.2f s after virsh destroy" % (time.monotonic() - t))

    # 6. no balloon to drive: unmanaged, and it says why (one TCG guest at a time)
    virsh("start", DOMAIN_NONE)
    name, path = env.wait_for(lambda: libvirt_machine(env, DOMAIN_NONE), 10, "the balloon-less domain")
    env.wait_property(path, "State", "unmanaged", timeout=5)
    reason = env.ab_get(path, "StateReason")
    log("%s: unmanaged, backend %r: %s" % (name, env.ab_get(path, "Backend"), reason))
    check("model='none'" in reason, "the reason does not say the domain has no balloon: %r" % reason)
    virsh("destroy", DOMAIN_NONE)
    check(env.stop_daemon() == 0, "the daemon did not exit cleanly")


abtest.main(test, "e2e-libvirt")
